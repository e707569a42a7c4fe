/**
 * What the registry client needs to know about manifests: which media types are manifests, what
 * a manifest points at (its successors in the content graph) and platform matching.
 */
import {AegisError} from '../errors.js'
import {MediaType, type Descriptor, type ImageIndex, type ImageManifest, type Platform} from '../oci/types.js'

export const INDEX_MEDIA_TYPES: ReadonlySet<string> = new Set([MediaType.ImageIndex, MediaType.DockerManifestList])
export const MANIFEST_MEDIA_TYPES: ReadonlySet<string> = new Set([
  MediaType.ImageManifest,
  MediaType.DockerManifest,
  ...INDEX_MEDIA_TYPES,
])

/** Accept header for manifest requests: every manifest and index type we can read. */
export const MANIFEST_ACCEPT = [...MANIFEST_MEDIA_TYPES].join(', ')

/** distribution's limit; a manifest larger than this is refused rather than buffered. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024

/** Image configs are a page of JSON (a long history makes a few hundred KiB): far above that is not a config. */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024
/** Far beyond any real layer: a descriptor claiming more is a hostile registry's way to fill the disk. */
export const MAX_LAYER_BYTES = 64 * 1024 ** 3

/**
 * Refuses a manifest or index that names content larger than its kind may be (or a size that is
 * not a byte count), before any of that content is downloaded.
 */
export function checkSuccessorSizes(desc: Descriptor, bytes: Buffer): void {
  const parsed = parseManifest<ImageManifest & ImageIndex>(bytes, desc)
  const check = (child: Descriptor | undefined, kind: 'manifest' | 'config' | 'layer' | 'subject'): void => {
    if (child === undefined) return
    const [limit, limitKind] = isManifest(child) || kind === 'subject' ? [MAX_MANIFEST_BYTES, 'manifest'] : kind === 'config' ? [MAX_CONFIG_BYTES, 'config'] : [MAX_LAYER_BYTES, 'layer']
    const problem = !Number.isSafeInteger(child.size) || child.size < 0
      ? `has size ${JSON.stringify(child.size)}, not a byte count`
      : child.size > limit ? `is ${child.size} bytes: more than the ${limit} a ${limitKind} may have` : undefined
    if (problem === undefined) return
    throw new AegisError(`${desc.digest} lists ${kind} ${child.digest}, which ${problem}.`, {
      hint: 'The registry holds malformed or hostile content: nothing it names was downloaded.',
    })
  }
  if (isIndex(desc)) for (const child of parsed.manifests ?? []) check(child, 'manifest')
  else {
    check(parsed.config, 'config')
    for (const layer of parsed.layers ?? []) check(layer, 'layer')
  }
  check(parsed.subject, 'subject')
}

export function isManifest(desc: Pick<Descriptor, 'mediaType'>): boolean {
  return MANIFEST_MEDIA_TYPES.has(desc.mediaType)
}

export function isIndex(desc: Pick<Descriptor, 'mediaType'>): boolean {
  return INDEX_MEDIA_TYPES.has(desc.mediaType)
}

export function parseManifest<T extends ImageManifest | ImageIndex>(bytes: Buffer, desc: Descriptor): T {
  try {
    const parsed: unknown = JSON.parse(bytes.toString('utf8'))
    if (parsed === null || typeof parsed !== 'object') throw new Error('not a JSON object')
    return parsed as T
  } catch (error) {
    throw new AegisError(`Manifest ${desc.digest} (${desc.mediaType}) is not valid JSON: ${(error as Error).message}`)
  }
}

/** The descriptors a manifest or index refers to: what must be copied before it. */
export function successors(desc: Descriptor, bytes: Buffer): Descriptor[] {
  if (isIndex(desc)) {
    const index = parseManifest<ImageIndex>(bytes, desc)
    return [...(index.manifests ?? []), ...(index.subject ? [index.subject] : [])]
  }
  if (isManifest(desc)) {
    const manifest = parseManifest<ImageManifest>(bytes, desc)
    return [
      ...(manifest.config ? [manifest.config] : []),
      ...(manifest.layers ?? []),
      ...(manifest.subject ? [manifest.subject] : []),
    ]
  }
  return []
}

/** True when `candidate` runs on `wanted`: same os and architecture, and variant when one is asked for. */
export function matchesPlatform(candidate: Platform | undefined, wanted: Platform): boolean {
  if (!candidate) return false
  if (candidate.os !== wanted.os || candidate.architecture !== wanted.architecture) return false
  return !wanted.variant || candidate.variant === wanted.variant
}

/** `linux/arm64/v8` → a Platform. */
export function parsePlatform(text: string): Platform {
  const [os, architecture, variant, ...rest] = text.split('/')
  if (!os || !architecture || rest.length > 0) {
    throw new AegisError(`Invalid platform "${text}".`, {hint: 'Write it as os/architecture[/variant], e.g. linux/amd64 or linux/arm64/v8.'})
  }
  return variant ? {os, architecture, variant} : {os, architecture}
}

export function formatPlatform(platform: Platform): string {
  return [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/')
}

/**
 * How a referrers list names a referrer (distribution-spec 1.1): its descriptor with the
 * manifest's artifactType (else its config's media type) and annotations.
 */
export function referrerDescriptor(desc: Descriptor, bytes: Buffer): Descriptor {
  const manifest = parseManifest<ImageManifest | ImageIndex>(bytes, desc)
  const entry: Descriptor = {mediaType: desc.mediaType, digest: desc.digest, size: desc.size}
  const artifactType = manifest.artifactType ?? ('config' in manifest ? manifest.config?.mediaType : undefined)
  if (artifactType) entry.artifactType = artifactType
  if (manifest.annotations) entry.annotations = manifest.annotations
  return entry
}

/** The digest of the manifest `bytes` names as its subject, if any. */
export function subjectDigest(desc: Descriptor, bytes: Buffer): string | undefined {
  return parseManifest<ImageManifest | ImageIndex>(bytes, desc).subject?.digest
}
