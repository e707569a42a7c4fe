/**
 * The guest kernel and initramfs as an OCI artifact in the local store. The store is where `run`
 * boots them from (QEMU reads the two blobs in place), `images` lists them, `images push` and
 * `images pull` carry them between machines, and `images prune` keeps them while they are
 * tagged. Assembling (assemble.ts) only happens when the store lacks this host's guest.
 *
 * The artifact: an image manifest with artifactType application/vnd.aegis.guest.v1, the empty
 * config, and two layers, the kernel (title vmlinux or vmlinuz) and the initramfs (title
 * initrd.img), so `oras pull` writes them as files. Annotations name the Debian kernel package,
 * its version, the kernel release and the harness hash. Tagged
 * aegis-guest:<package version>-<arch>-<inputs key>: the key covers every input (harness
 * sources, compiler, modules), so a tag names exactly one guest.
 */

import {readFile, mkdir, mkdtemp, rm} from 'node:fs/promises'
import path from 'node:path'

import {AegisError} from '../errors.js'
import {artifactManifest, blobOf, emptyConfig, titled} from '../oci/artifact.js'
import {openImage} from '../oci/image.js'
import {Annotation, MediaType} from '../oci/media-types.js'
import type {LocalStore} from '../store/index.js'
import {assembleGuestFiles, guestInputs, type GuestImage, type GuestInputs} from './assemble.js'

const GUEST_REPOSITORY = 'aegis-guest'

export interface StoredGuest extends GuestImage {
  /** The reference it was loaded by, e.g. aegis-guest:6.1.192-2-amd64-3f2a9c1b0d4e. */
  reference: string
  /** Digest of the artifact's manifest. */
  digest: string
}

/** The store tag of the guest assembled from `inputs`. */
export function guestReference(inputs: GuestInputs): string {
  // Debian versions may hold characters a tag may not (epoch colon, +, ~).
  const version = inputs.kernelPackage.version.replace(/[^\w.-]/g, '_')
  return `${GUEST_REPOSITORY}:${version}-${inputs.arch}-${inputs.key.slice(0, 12)}`
}

/** The guest artifact `reference` names in the store, checked, with its two blobs' paths. */
export async function loadGuest(store: LocalStore, reference: string): Promise<StoredGuest> {
  const desc = await store.resolve(reference)
  const notGuest = (why: string) =>
    new AegisError(`${reference} is not an aegis-kit guest: ${why}`, {
      hint: `give a guest listed by \`aegis-kit images\` (${GUEST_REPOSITORY}:...), or one pulled with \`aegis-kit images pull\``,
    })
  if (desc.mediaType !== MediaType.ImageManifest)
    throw notGuest(`it is a ${desc.mediaType === MediaType.ImageIndex ? 'multi-platform image index' : desc.mediaType}`)
  const {manifest} = await openImage(store, desc)
  if (manifest.artifactType !== MediaType.GuestArtifact)
    throw notGuest(manifest.artifactType ? `its artifactType is ${manifest.artifactType}` : 'it is a container image')
  const kernel = manifest.layers.find((layer) => layer.mediaType === MediaType.GuestKernel)
  const initrd = manifest.layers.find((layer) => layer.mediaType === MediaType.GuestInitrd)
  if (!kernel || !initrd) throw notGuest('it has no kernel or no initramfs layer')
  for (const layer of [kernel, initrd]) if (!(await store.exists(layer))) throw store.missingBlob(layer)
  const annotations = manifest.annotations ?? {}
  return {
    kernel: store.blobPath(kernel),
    initrd: store.blobPath(initrd),
    version: `${annotations[Annotation.GuestKernelPackage] ?? 'unknown kernel'} ${annotations[Annotation.GuestKernelVersion] ?? ''}, harness ${(annotations[Annotation.GuestHarness] ?? 'unknown').slice(0, 12)}`,
    kernelRelease: annotations[Annotation.GuestKernelRelease] ?? '',
    reference,
    digest: desc.digest,
  }
}

/**
 * This host's guest from the store; when the store lacks it, assembled (in a scratch directory
 * under `cacheDir`, which also remembers the answers of apt and gcc), stored and tagged.
 */
export async function resolveGuest(options: {
  store: LocalStore
  cacheDir: string
  onStatus?: (message: string) => void
  beforeWork?: () => Promise<void>
}): Promise<StoredGuest> {
  const {store, cacheDir} = options
  const inputs = await guestInputs({cacheDir})
  const reference = guestReference(inputs)
  if ((await store.lookup(reference)) !== undefined) return loadGuest(store, reference)

  await options.beforeWork?.() // as a build's: `run` assembles nothing for a config its check rejects
  options.onStatus?.(`assembling the guest kernel and initramfs (${inputs.version}; once per version)`)
  await mkdir(cacheDir, {recursive: true})
  const workDir = await mkdtemp(path.join(cacheDir, '.tmp-guest-'))
  try {
    const files = await assembleGuestFiles(workDir, inputs)
    await putGuest(store, {...files, version: inputs.version}, inputs, reference)
  } finally {
    await rm(workDir, {recursive: true, force: true})
  }
  return loadGuest(store, reference)
}

/** Writes the kernel and initramfs into the store as a guest artifact tagged `reference`. */
async function putGuest(store: LocalStore, image: GuestImage, inputs: GuestInputs, reference: string): Promise<void> {
  const kernel = blobOf(MediaType.GuestKernel, await readFile(image.kernel), {
    annotations: titled(path.basename(image.kernel)),
  })
  const initrd = blobOf(MediaType.GuestInitrd, await readFile(image.initrd), {annotations: titled('initrd.img')})
  const config = emptyConfig()
  const manifest = artifactManifest(MediaType.GuestArtifact, [kernel.descriptor, initrd.descriptor], {
    annotations: {
      [Annotation.Title]: `aegis-kit guest: ${inputs.kernelPackage.name} ${inputs.kernelPackage.version}`,
      [Annotation.GuestKernelPackage]: inputs.kernelPackage.name,
      [Annotation.GuestKernelVersion]: inputs.kernelPackage.version,
      [Annotation.GuestKernelRelease]: image.kernelRelease,
      [Annotation.GuestHarness]: inputs.harness,
      [Annotation.GuestToolchain]: inputs.toolchain,
      [Annotation.GuestArch]: inputs.arch,
    },
  })
  // Under a write lease: a prune running meanwhile must not take the blobs before the tag exists.
  await store.withWriteLease(async () => {
    for (const blob of [kernel, initrd, config, manifest]) await store.push(blob.descriptor, blob.bytes)
    await store.tag({...manifest.descriptor, artifactType: MediaType.GuestArtifact}, reference)
  })
}
