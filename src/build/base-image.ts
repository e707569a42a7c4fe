/**
 * A base given as an image reference: imported (`oci-layout:`, `oci-archive:`) or pulled (a
 * registry reference) into the store, then its layers are reused as they are (never unpacked at
 * build time, so hostile base layers cannot touch the build machine).
 */
import type {Descriptor, ImageConfig, ImageManifest} from '../oci/types.js'
import {parsePlatform, pullImage} from '../registry/index.js'
import {importSource} from '../store/open.js'
import type {LocalStore} from '../store/index.js'
import {AegisError} from '../errors.js'

export interface BaseImage {
  name: string
  manifestDescriptor: Descriptor
  manifest: ImageManifest
  config: ImageConfig
}

export async function loadBaseImage(store: LocalStore, reference: string, platform: string): Promise<BaseImage> {
  let root: Descriptor
  if (reference.startsWith('oci-layout:') || reference.startsWith('oci-archive:')) {
    const [imported] = await importSource(store, reference)
    root = await store.resolve(`${imported.name}:${imported.tag}`)
  } else {
    const result = await pullImage(reference, store, {platform: parsePlatform(platform), localReference: `base/${reference.replace(/[^a-zA-Z0-9._-]+/g, '-')}:pulled`})
    root = result.root
  }
  const manifestBytes = await store.readManifest(root)
  const manifest = manifestBytes ? (JSON.parse(manifestBytes.toString('utf8')) as ImageManifest) : undefined
  if (!manifest || !('layers' in manifest)) {
    throw new AegisError(`base ${reference} is not a single-platform image for ${platform}`, {hint: 'give a reference to an image (or an index that has this platform)'})
  }
  const config = await store.readImageConfig(manifest.config)
  if (!config) throw store.missingBlob(manifest.config)
  return {name: reference, manifestDescriptor: root, manifest, config}
}
