/**
 * `aegis-kit pull`: a published kit (and its image) into the local store. The content is
 * verified as it arrives; the kit is unpacked and checked before anything is tagged, so a
 * malicious kit layer leaves no tag and no files outside its staging directory.
 */
import {AegisError} from '../errors.js'
import {isManifest, parseManifest, type ParsedManifest} from '../oci/manifest.js'
import {MediaType} from '../oci/media-types.js'
import {formatReference, manifestReference} from '../oci/reference.js'
import type {Descriptor} from '../oci/types.js'
import {
  copyGraph,
  fetchManifest,
  transferFailed,
  type CopyProgress,
  type CopyResult,
  type RemoteRepository,
} from '../registry/index.js'
import type {KitVerification} from '../kit/trust.js'
import type {LocalStore} from '../store/index.js'
import {findKitDescriptor, kitArtifactLayers} from './artifact.js'
import {installKit, type InstalledKit} from './install.js'
import {MAX_KIT_BYTES} from './layer.js'

export interface PullKitOptions {
  /** The reference to tag in the local store. */
  localReference: string
  /** More references `validate` and `hooks` should know the kit by (e.g. what the user typed). */
  aliases?: string[]
  /** Only the kit artifact, not the image next to it. */
  kitOnly?: boolean
  /**
   * Checks the signature of what is about to be pulled (the resolved root) before anything is
   * written, throwing to refuse it; what it returns is recorded with the kit, which is then trusted.
   */
  verify?: (root: Descriptor) => Promise<KitVerification>
  progress?: (event: CopyProgress) => void
}

export interface PullKitResult {
  /** The remote reference with the digest of what was pulled. */
  reference: string
  /** What was pulled and tagged: the release index, or the kit artifact. */
  root: Descriptor
  kitArtifact: Descriptor
  /** Image manifests pulled with the kit. */
  images: Descriptor[]
  kit: InstalledKit
  copy: CopyResult
}

export async function pullKit(
  store: LocalStore,
  repository: RemoteRepository,
  options: PullKitOptions,
): Promise<PullKitResult> {
  const failed = (error: unknown): never => {
    throw transferFailed(`Pull of ${formatReference(repository.reference)}`, error)
  }
  const published = await repository.resolve(manifestReference(repository.reference)).catch(failed)
  const rootBytes = await fetchManifest(repository, published).catch(failed)
  const rootParsed = parseManifest(published, rootBytes)
  const kitArtifact =
    findKitDescriptor(published, rootParsed) ?? (await probeIndex(repository, rootParsed).catch(failed))
  if (!kitArtifact) {
    throw new AegisError(
      `${formatReference(repository.reference)} is not a kit: it holds no ${MediaType.KitArtifact} artifact`,
      {
        hint: 'pull images with `aegis-kit images pull`',
      },
    )
  }
  const kitParsed =
    kitArtifact.digest === published.digest
      ? rootParsed
      : parseManifest(kitArtifact, await fetchManifest(repository, kitArtifact).catch(failed))
  checkKitLayerSize(kitArtifact, kitParsed)
  const root = options.kitOnly ? kitArtifact : published
  const images =
    root === published && rootParsed.kind === 'index'
      ? rootParsed.index.manifests.filter((entry) => entry.digest !== kitArtifact.digest)
      : []
  const verified = options.verify ? await options.verify(published) : undefined
  return store.withWriteLease(async () => {
    const copy = await copyGraph(repository, store, root, {
      referrers: {reference: options.localReference},
      ...(options.progress ? {progress: options.progress} : {}),
    }).catch(failed)
    // The source is what the reference resolved to (what a signature covers), also with --kit-only.
    const source = {
      via: 'pull' as const,
      reference: formatReference({...repository.reference, digest: published.digest}),
      kitArtifact: kitArtifact.digest,
      ...(verified ? {verified} : {}),
    }
    const kit = await installKit(store, kitArtifact, [options.localReference, ...(options.aliases ?? [])], source)
    // Tagged last: a kit that failed to unpack is not in the list of images.
    await store.tag(root, options.localReference)
    return {
      reference: formatReference({...repository.reference, digest: root.digest}),
      root,
      kitArtifact,
      images,
      kit,
      copy,
    }
  })
}

/** A gzip'd tar of a kit within MAX_KIT_BYTES: gzip's worst case adds under 0.1%, the tar headers of MAX_KIT_BYTES / 16 cover the rest. */
const MAX_KIT_LAYER_BYTES = MAX_KIT_BYTES + MAX_KIT_BYTES / 16

/** Refuses a kit layer too large for a kit from its descriptor, before it is downloaded. */
function checkKitLayerSize(kitArtifact: Descriptor, parsed: ParsedManifest): void {
  const {layer} = kitArtifactLayers(parsed, kitArtifact)
  if (layer.size <= MAX_KIT_LAYER_BYTES) return
  throw new AegisError(
    `The kit layer ${layer.digest} is ${layer.size} bytes: more than the ${MAX_KIT_LAYER_BYTES} a kit may have (${MAX_KIT_BYTES / 1024 / 1024} MiB unpacked).`,
    {
      hint: 'The registry holds a malformed or hostile kit: nothing of it was downloaded.',
    },
  )
}

/** For indexes written by other tools: a manifest without a platform whose own artifactType is the kit's. */
async function probeIndex(repository: RemoteRepository, root: ParsedManifest): Promise<Descriptor | undefined> {
  if (root.kind !== 'index') return undefined
  for (const entry of root.index.manifests) {
    if (entry.platform || !isManifest(entry)) continue
    const parsed = parseManifest(entry, await fetchManifest(repository, entry))
    if ((parsed.kind === 'manifest' ? parsed.manifest : parsed.index).artifactType === MediaType.KitArtifact)
      return entry
  }
  return undefined
}
