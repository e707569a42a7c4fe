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
import {MediaType, sha256Digest, type Descriptor, type ImageManifest} from '../oci/types.js'
import {sha256Hex} from '../store/digest.js'
import {REF_NAME_ANNOTATION, type LocalStore} from '../store/index.js'
import {assembleGuestFiles, guestInputs, type GuestImage, type GuestInputs} from './assemble.js'

const GUEST_ARTIFACT_TYPE = 'application/vnd.aegis.guest.v1'
const GUEST_KERNEL_MEDIA_TYPE = 'application/vnd.aegis.guest.kernel.v1'
const GUEST_INITRD_MEDIA_TYPE = 'application/vnd.aegis.guest.initrd.v1.cpio+gzip'
const GUEST_REPOSITORY = 'aegis-guest'

const TITLE = 'org.opencontainers.image.title'
const GuestAnnotation = {
  kernelPackage: 'io.aegis.guest.kernel.package',
  kernelVersion: 'io.aegis.guest.kernel.version',
  kernelRelease: 'io.aegis.guest.kernel.release',
  harness: 'io.aegis.guest.harness',
  toolchain: 'io.aegis.guest.toolchain',
  arch: 'io.aegis.guest.arch',
} as const

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
  const notGuest = (why: string) => new AegisError(`${reference} is not an aegis-kit guest: ${why}`, {
    hint: `give a guest listed by \`aegis-kit images\` (${GUEST_REPOSITORY}:...), or one pulled with \`aegis-kit images pull\``,
  })
  if (desc.mediaType !== MediaType.ImageManifest) throw notGuest(`it is a ${desc.mediaType === MediaType.ImageIndex ? 'multi-platform image index' : desc.mediaType}`)
  const bytes = await store.readManifest(desc)
  if (!bytes) throw store.missingBlob(desc)
  const manifest = JSON.parse(bytes.toString('utf8')) as ImageManifest
  if (manifest.artifactType !== GUEST_ARTIFACT_TYPE) throw notGuest(manifest.artifactType ? `its artifactType is ${manifest.artifactType}` : 'it is a container image')
  const kernel = manifest.layers.find((layer) => layer.mediaType === GUEST_KERNEL_MEDIA_TYPE)
  const initrd = manifest.layers.find((layer) => layer.mediaType === GUEST_INITRD_MEDIA_TYPE)
  if (!kernel || !initrd) throw notGuest('it has no kernel or no initramfs layer')
  for (const layer of [kernel, initrd]) if (!(await store.exists(layer))) throw store.missingBlob(layer)
  const annotations = manifest.annotations ?? {}
  return {
    kernel: store.paths.blob(sha256Hex(kernel.digest)),
    initrd: store.paths.blob(sha256Hex(initrd.digest)),
    version: `${annotations[GuestAnnotation.kernelPackage] ?? 'unknown kernel'} ${annotations[GuestAnnotation.kernelVersion] ?? ''}, harness ${(annotations[GuestAnnotation.harness] ?? 'unknown').slice(0, 12)}`,
    kernelRelease: annotations[GuestAnnotation.kernelRelease] ?? '',
    reference,
    digest: desc.digest,
  }
}

/**
 * This host's guest from the store; when the store lacks it, assembled (in a scratch directory
 * under `cacheDir`, which also remembers the answers of apt and gcc), stored and tagged.
 */
export async function resolveGuest(options: {store: LocalStore; cacheDir: string; onStatus?: (message: string) => void; beforeWork?: () => Promise<void>}): Promise<StoredGuest> {
  const {store, cacheDir} = options
  const inputs = await guestInputs({cacheDir})
  const reference = guestReference(inputs)
  const index = await store.readIndex()
  if (index.manifests.some((desc) => desc.annotations?.[REF_NAME_ANNOTATION] === reference)) return loadGuest(store, reference)

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
  const blob = (mediaType: string, data: Buffer, annotations?: Record<string, string>): Descriptor =>
    ({mediaType, digest: sha256Digest(data), size: data.length, ...(annotations ? {annotations} : {})})
  const kernelBytes = await readFile(image.kernel)
  const initrdBytes = await readFile(image.initrd)
  const emptyBytes = Buffer.from('{}')
  const kernel = blob(GUEST_KERNEL_MEDIA_TYPE, kernelBytes, {[TITLE]: path.basename(image.kernel)})
  const initrd = blob(GUEST_INITRD_MEDIA_TYPE, initrdBytes, {[TITLE]: 'initrd.img'})
  const config = blob(MediaType.Empty, emptyBytes)
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    artifactType: GUEST_ARTIFACT_TYPE,
    config,
    layers: [kernel, initrd],
    annotations: {
      [TITLE]: `aegis-kit guest: ${inputs.kernelPackage.name} ${inputs.kernelPackage.version}`,
      [GuestAnnotation.kernelPackage]: inputs.kernelPackage.name,
      [GuestAnnotation.kernelVersion]: inputs.kernelPackage.version,
      [GuestAnnotation.kernelRelease]: image.kernelRelease,
      [GuestAnnotation.harness]: inputs.harness,
      [GuestAnnotation.toolchain]: inputs.toolchain,
      [GuestAnnotation.arch]: inputs.arch,
    },
  }
  const manifestBytes = Buffer.from(JSON.stringify(manifest))
  const root = blob(MediaType.ImageManifest, manifestBytes)
  // Under a write lease: a prune running meanwhile must not take the blobs before the tag exists.
  await store.withWriteLease(async () => {
    await store.push(kernel, kernelBytes)
    await store.push(initrd, initrdBytes)
    await store.push(config, emptyBytes)
    await store.push(root, manifestBytes)
    await store.tag({...root, artifactType: GUEST_ARTIFACT_TYPE}, reference)
  })
}
