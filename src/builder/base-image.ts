/**
 * A base given as an image reference: imported (`oci-layout:`, `oci-archive:`) or pulled (a
 * registry reference) into the store, then its layers are reused as they are (never unpacked at
 * build time, so hostile base layers cannot touch the build machine).
 */
import {openImage} from '../oci/image.js'
import {parsePlatform} from '../oci/manifest.js'
import type {Descriptor, ImageConfig, ImageManifest} from '../oci/types.js'
import {formatReference, parseReference} from '../oci/reference.js'
import {importSource} from '../store/open.js'
import type {LocalStore} from '../store/index.js'
import {AegisError, messageOf} from '../errors.js'

export interface BaseImage {
  name: string
  manifestDescriptor: Descriptor
  manifest: ImageManifest
  config: ImageConfig
}

export function isRegistryReference(reference: string): boolean {
  return !reference.startsWith('oci-layout:') && !reference.startsWith('oci-archive:')
}

/**
 * `locked`: the platform manifest's digest from the kit's lock; the base is pulled by that
 * digest, whatever the reference's tag points at now.
 */
export async function loadBaseImage(
  store: LocalStore,
  reference: string,
  platform: string,
  locked?: {digest: string; lockFile: string; updateLockHint: string},
): Promise<BaseImage> {
  let root: Descriptor
  if (!isRegistryReference(reference)) {
    const [imported] = await importSource(store, reference)
    root = await store.resolve(`${imported.name}:${imported.tag}`)
  } else {
    const remote = locked ? formatReference({...parseReference(reference), digest: locked.digest}) : reference
    try {
      const {pullImage} = await import('../registry/push-pull.js') // the registry client, only when a base is pulled
      const result = await pullImage(remote, store, {
        platform: parsePlatform(platform),
        localReference: `base/${reference.replace(/[^a-zA-Z0-9._-]+/g, '-')}:pulled`,
      })
      root = result.root
    } catch (error) {
      if (!locked) throw error
      throw new AegisError(
        `cannot pull base ${reference} for ${platform} at ${locked.digest}, locked in ${locked.lockFile}: ${messageOf(error)}`,
        {
          hint: `if the registry dropped it, resolve the tag again and rewrite the lock: ${locked.updateLockHint}`,
        },
      )
    }
  }
  // A pull has already picked the platform; an imported index is picked from here.
  const image = await openImage(store, root, {
    platform: parsePlatform(platform),
    noPlatform: () =>
      new AegisError(`base ${reference} is not a single-platform image for ${platform}`, {
        hint: 'give a reference to an image (or an index that has this platform)',
      }),
  })
  return {name: reference, manifestDescriptor: image.descriptor, manifest: image.manifest, config: await image.config()}
}
