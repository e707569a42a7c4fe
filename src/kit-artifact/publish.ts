/**
 * `aegis-kit push`: a kit, and its image when one is built, published under one reference. The
 * kit is packed and wrapped as an artifact, on_publish runs (never for a pulled kit: someone
 * else's code) and its report joins the artifact, everything is written to the local store
 * (tagged as the destination) and copied to the registry by the same graph copy images use,
 * manifests last, so a failed push leaves no tag.
 */
import {AegisError} from '../errors.js'
import {buildAppContext, onPublish} from '../hooks/operations.js'
import type {Kit} from '../kit/kit.js'
import {kitImageReference, storeKitOf} from '../kit/pulled.js'
import {formatPlatform, parseManifest} from '../oci/manifest.js'
import {formatReference} from '../oci/reference.js'
import type {Descriptor, Platform} from '../oci/types.js'
import {
  copyGraph,
  transferFailed,
  type CopyProgress,
  type CopyResult,
  type RemoteRepository,
} from '../registry/index.js'
import type {LocalStore} from '../store/index.js'
import {emptyConfig, type Blob} from '../oci/artifact.js'
import {kitArtifactManifest, kitLayerBlob, releaseIndex, reportBlob} from './artifact.js'
import {installKit} from './install.js'
import {packKitLayer} from './layer.js'

export interface PublishOptions {
  /**
   * The local image to publish with the kit. Default: `NAME:VERSION` when the store has it, else
   * the kit alone. `false`: the kit alone.
   */
  image?: string | false
  progress?: (event: CopyProgress) => void
}

export interface PublishResult {
  /** The destination with its tag, also the kit's reference in the local store. */
  reference: string
  /** The published root: the release index, or the kit artifact when there is no image. */
  root: Descriptor
  kitArtifact: Descriptor
  /** The local image published with the kit, and its manifests (one per platform). */
  image?: {reference: string; manifests: Descriptor[]}
  /** What on_publish returned, when the kit has the hook and it ran. */
  report?: unknown
  /** The kit has on_publish but it was not run: the kit was pulled (someone else's code). */
  onPublishSkipped?: boolean
  copy: CopyResult
}

export async function publishKit(
  store: LocalStore,
  kit: Kit,
  repository: RemoteRepository,
  options: PublishOptions = {},
): Promise<PublishResult> {
  const {manifest} = kit
  const destination = destinationOf(repository, manifest.version)
  const {reference} = destination

  const layer = kitLayerBlob(manifest, await packKitLayer(kit.dir))
  const imageReference = await chooseImage(store, kit, options.image)
  const images = imageReference === undefined ? [] : await imageManifests(store, imageReference)

  // A pulled kit pushed again is someone else's code: its on_publish never runs here.
  const pulled = storeKitOf(kit.dir, store.root) !== undefined
  const onPublishSkipped = manifest.hooks?.on_publish !== undefined && pulled
  const report =
    manifest.hooks?.on_publish && !pulled ? await runOnPublish(kit, repository, destination, layer, images) : undefined
  const artifact = kitArtifactManifest(manifest, layer.descriptor, report?.blob.descriptor)
  const root = images.length > 0 ? releaseIndex(manifest, images, artifact.descriptor) : artifact

  return store.withWriteLease(async () => {
    for (const blob of [
      emptyConfig(),
      layer,
      ...(report ? [report.blob] : []),
      artifact,
      ...(root === artifact ? [] : [root]),
    ]) {
      await store.push(blob.descriptor, blob.bytes)
    }
    const copy = await copyToRegistry(store, repository, kit, root, destination, options.progress)
    await store.tag(root.descriptor, reference)
    await recordInstall(store, kit, artifact, root, reference, pulled)
    return {
      reference,
      root: root.descriptor,
      kitArtifact: artifact.descriptor,
      ...(imageReference === undefined ? {} : {image: {reference: imageReference, manifests: images}}),
      ...(report ? {report: report.value} : {}),
      ...(onPublishSkipped ? {onPublishSkipped} : {}),
      copy,
    }
  })
}

/** The tag a kit is pushed to, and the destination with it. */
interface Destination {
  tag: string
  reference: string
}

/** The repository's reference with its tag (the kit's version when it names none); a digest is refused. */
function destinationOf(repository: RemoteRepository, version: string): Destination {
  const ref = repository.reference
  if (ref.digest !== undefined) {
    throw new AegisError(`cannot push a kit to ${formatReference(ref)}: a kit is pushed to a tag, not a digest`, {
      hint: `leave out the @digest, e.g. ${formatReference({...ref, digest: undefined})}`,
    })
  }
  const tag = ref.tag ?? version
  return {tag, reference: formatReference({...ref, tag})}
}

/** Runs on_publish with the release and what it publishes; its report, as returned and as a blob. */
async function runOnPublish(
  kit: Kit,
  repository: RemoteRepository,
  {tag, reference}: Destination,
  layer: Blob,
  images: Descriptor[],
): Promise<{value: unknown; blob: Blob}> {
  const {manifest} = kit
  const ref = repository.reference
  const release = {
    name: manifest.name,
    version: manifest.version,
    reference,
    registry: ref.registry,
    repository: ref.repository,
    tag,
  }
  const artifacts = [
    {
      kind: 'kit',
      mediaType: layer.descriptor.mediaType,
      digest: layer.descriptor.digest,
      size: layer.descriptor.size,
    },
    ...images.map((image) => ({
      kind: 'image',
      mediaType: image.mediaType,
      digest: image.digest,
      size: image.size,
      platform: formatPlatform(image.platform as Platform),
    })),
  ]
  const value = await onPublish(kit, buildAppContext(kit), release, artifacts)
  return {value, blob: reportBlob(value)}
}

async function copyToRegistry(
  store: LocalStore,
  repository: RemoteRepository,
  kit: Kit,
  root: Blob,
  {tag, reference}: Destination,
  progress: PublishOptions['progress'],
): Promise<CopyResult> {
  // The image's referrers (its SBOM) travel with it.
  return copyGraph(store, repository, root.descriptor, {
    tag,
    referrers: true,
    ...(progress ? {progress} : {}),
  }).catch((error: unknown) => {
    throw transferFailed(`Push of kit ${kit.manifest.name} ${kit.manifest.version} to ${reference}`, error)
  })
}

/** Installs the pushed kit in the store under the destination, with where it was pushed from. */
async function recordInstall(
  store: LocalStore,
  kit: Kit,
  artifact: Blob,
  root: Blob,
  reference: string,
  pulled: boolean,
): Promise<void> {
  // A kit from the store (pulled) is not the user's own: pushing it again records no new source.
  await installKit(
    store,
    artifact.descriptor,
    [reference],
    pulled
      ? undefined
      : {
          via: 'push',
          reference: `${reference}@${root.descriptor.digest}`,
          kitArtifact: artifact.descriptor.digest,
          directory: kit.dir,
        },
  )
}

/** The image reference to publish, or undefined for the kit alone. */
async function chooseImage(
  store: LocalStore,
  kit: Kit,
  image: string | false | undefined,
): Promise<string | undefined> {
  if (image === false) return undefined
  if (image !== undefined) return image
  const wanted = kitImageReference(kit, store.root)
  // A name or version that is no valid tag cannot name a stored image: the kit goes alone.
  return (await store.lookup(wanted).catch(() => undefined)) === undefined ? undefined : wanted
}

/** The image's manifests, each with its platform (from the index, or from the config of a single manifest). */
async function imageManifests(store: LocalStore, reference: string): Promise<Descriptor[]> {
  const root = await store.resolve(reference)
  const bytes = await store.readManifest(root)
  if (bytes === undefined) throw store.missingBlob(root)
  const parsed = parseManifest(root, bytes)
  if (parsed.kind === 'index') {
    const manifests = parsed.index.manifests
      .filter((entry) => entry.platform !== undefined)
      .map(({mediaType, digest, size, platform}) => ({mediaType, digest, size, platform}))
    if (manifests.length === 0)
      throw new AegisError(`${reference} is an index with no platform images`, {
        hint: 'give the image to publish with --image',
      })
    return manifests
  }
  const config = await store.readImageConfig(parsed.manifest.config)
  if (!config) {
    throw new AegisError(`${reference} is not an image: its config is ${parsed.manifest.config.mediaType}`, {
      hint: 'give the image to publish with --image, or publish the kit alone with --kit-only',
    })
  }
  const platform: Platform = {
    os: config.os,
    architecture: config.architecture,
    ...(config.variant ? {variant: config.variant} : {}),
  }
  return [{mediaType: root.mediaType, digest: root.digest, size: root.size, platform}]
}
