/**
 * The one manifest model: which media types are manifests and indexes, parsing and validating
 * one from its bytes (manifests come from registries, archives and layouts: untrusted input),
 * what it points at (its successors in the content graph), and platforms.
 */
import {AegisError} from '../errors.js'
import {sha256Hex, verifyBytes} from './digest.js'
import {MediaType} from './media-types.js'
import type {Descriptor, ImageIndex, ImageManifest, Platform} from './types.js'

/** distribution's limit; a manifest larger than this is refused rather than read into memory. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024
/** Image configs are a page of JSON (a long history makes a few hundred KiB): far above that is not a config. */
export const MAX_CONFIG_BYTES = 16 * 1024 * 1024
/** Far beyond any real layer: a descriptor claiming more is a hostile source's way to fill the disk. */
export const MAX_LAYER_BYTES = 64 * 1024 ** 3

export const INDEX_MEDIA_TYPES: ReadonlySet<string> = new Set([MediaType.ImageIndex, MediaType.DockerManifestList])
const IMAGE_MANIFEST_MEDIA_TYPES: ReadonlySet<string> = new Set([MediaType.ImageManifest, MediaType.DockerManifest])
/** Every manifest and index type this model parses. */
export const MANIFEST_MEDIA_TYPES: ReadonlySet<string> = new Set([...IMAGE_MANIFEST_MEDIA_TYPES, ...INDEX_MEDIA_TYPES])

/** Accept header for manifest requests: every manifest and index type we can read. */
export const MANIFEST_ACCEPT = [...MANIFEST_MEDIA_TYPES].join(', ')

/** True for a manifest or an index (anything parseManifest reads), false for a config or layer. */
export function isManifest(desc: Pick<Descriptor, 'mediaType'>): boolean {
  return MANIFEST_MEDIA_TYPES.has(desc.mediaType)
}

export function isIndex(desc: Pick<Descriptor, 'mediaType'>): boolean {
  return INDEX_MEDIA_TYPES.has(desc.mediaType)
}

export type ParsedManifest = {kind: 'index'; index: ImageIndex} | {kind: 'manifest'; manifest: ImageManifest}

/**
 * Checks `bytes` against `desc` (size and digest), then parses and validates the JSON: every
 * descriptor in it (children and subject) must have a media type, a sha256 digest and a size
 * that is a byte count within what its kind may be, so nothing it names is read or downloaded
 * before that holds.
 */
export function parseManifest(desc: Descriptor, bytes: Buffer): ParsedManifest {
  if (desc.size > MAX_MANIFEST_BYTES) throw tooLarge(desc)
  verifyBytes(bytes, desc)
  let json: unknown
  try {
    json = JSON.parse(bytes.toString('utf8'))
  } catch {
    throw invalidManifest(desc, 'it is not JSON')
  }
  if (!isRecord(json) || json.schemaVersion !== 2) throw invalidManifest(desc, 'schemaVersion is not 2')
  const subject = json.subject === undefined ? {} : {subject: validateDescriptor(json.subject, desc, 'subject')}
  // Without a media type an index and a manifest are told apart by their fields.
  const looksLikeIndex = Array.isArray(json.manifests) && json.config === undefined
  if (isIndex(desc) || (!IMAGE_MANIFEST_MEDIA_TYPES.has(desc.mediaType) && looksLikeIndex)) {
    if (!Array.isArray(json.manifests)) throw invalidManifest(desc, 'an index needs a manifests array')
    const manifests = json.manifests.map((entry: unknown) => validateDescriptor(entry, desc, 'manifest'))
    return {kind: 'index', index: {...(json as unknown as ImageIndex), manifests, ...subject}}
  }
  if (!Array.isArray(json.layers)) throw invalidManifest(desc, 'a manifest needs a layers array')
  const config = validateDescriptor(json.config, desc, 'config')
  const layers = json.layers.map((entry: unknown) => validateDescriptor(entry, desc, 'layer'))
  return {kind: 'manifest', manifest: {...(json as unknown as ImageManifest), config, layers, ...subject}}
}

/** What a descriptor is to the manifest listing it; decides the size it may have. */
export type DescriptorRole = 'manifest' | 'config' | 'layer' | 'subject'

/**
 * `value` as a descriptor, or an error naming `parent` (the manifest or index file listing it):
 * a media type, a sha256 digest and a size that is a byte count no larger than its role allows.
 */
export function validateDescriptor(value: unknown, parent: Descriptor | string, role?: DescriptorRole): Descriptor {
  const where = typeof parent === 'string' ? parent : parent.digest
  const malformed = (problem: string) =>
    new AegisError(`${where} lists ${role ?? 'an entry'}${problem}.`, {hint: MALFORMED_HINT})
  if (!isRecord(value)) throw malformed(' that is not a descriptor')
  const {mediaType, digest, size} = value
  if (typeof mediaType !== 'string' || typeof digest !== 'string') throw malformed(' without a mediaType and digest')
  sha256Hex(digest)
  const limit = role === undefined ? undefined : sizeLimit(mediaType, role)
  const problem =
    typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0
      ? `has size ${JSON.stringify(size)}, not a byte count`
      : limit !== undefined && size > limit.bytes
        ? `is ${size} bytes: more than the ${limit.bytes} a ${limit.kind} may have`
        : undefined
  if (problem !== undefined) throw malformed(` ${digest}, which ${problem}`)
  return value as unknown as Descriptor
}

function sizeLimit(mediaType: string, role: DescriptorRole): {bytes: number; kind: string} {
  if (role === 'subject' || MANIFEST_MEDIA_TYPES.has(mediaType)) return {bytes: MAX_MANIFEST_BYTES, kind: 'manifest'}
  return role === 'config' ? {bytes: MAX_CONFIG_BYTES, kind: 'config'} : {bytes: MAX_LAYER_BYTES, kind: 'layer'}
}

/**
 * What a manifest or index points at, all of which a copy or a completeness check needs before
 * it: an index's manifests, a manifest's config and layers, and either's subject. `subject:
 * false` leaves the subject out, for walks where a referrer must not reach the image it is about.
 */
export function successors(parsed: ParsedManifest, options: {subject?: boolean} = {}): Descriptor[] {
  const {subject, children} =
    parsed.kind === 'index'
      ? {subject: parsed.index.subject, children: parsed.index.manifests}
      : {subject: parsed.manifest.subject, children: [parsed.manifest.config, ...parsed.manifest.layers]}
  return subject !== undefined && options.subject !== false ? [...children, subject] : children
}

/** The media type manifest bytes declare about themselves, for a descriptor made from bare bytes. */
export function declaredMediaType(bytes: Buffer): string | undefined {
  try {
    const json: unknown = JSON.parse(bytes.toString('utf8'))
    if (!isRecord(json)) return undefined
    if (typeof json.mediaType === 'string') return json.mediaType
    if (Array.isArray(json.manifests)) return MediaType.ImageIndex
    if (isRecord(json.config)) return MediaType.ImageManifest
  } catch {
    // not JSON: not a manifest
  }
  return undefined
}

/**
 * How a referrers list names a referrer (distribution-spec 1.1): its descriptor with the
 * manifest's artifactType (else its config's media type) and annotations.
 */
export function referrerDescriptor(desc: Descriptor, parsed: ParsedManifest): Descriptor {
  const body = parsed.kind === 'index' ? parsed.index : parsed.manifest
  const entry: Descriptor = {mediaType: desc.mediaType, digest: desc.digest, size: desc.size}
  const artifactType = body.artifactType ?? (parsed.kind === 'manifest' ? parsed.manifest.config.mediaType : undefined)
  if (artifactType) entry.artifactType = artifactType
  if (body.annotations) entry.annotations = body.annotations
  return entry
}

/** The manifest's or index's subject (the content it is about), if any. */
export function subjectOf(parsed: ParsedManifest): Descriptor | undefined {
  return parsed.kind === 'index' ? parsed.index.subject : parsed.manifest.subject
}

// ---- Platforms ----

/** `linux/arm64/v8`: how messages, flags and summaries write a platform. */
export function formatPlatform(platform: Pick<Platform, 'os' | 'architecture' | 'variant'>): string {
  return [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/')
}

/** `linux/arm64/v8` → a Platform. */
export function parsePlatform(text: string): Platform {
  const [os, architecture, variant, ...rest] = text.split('/')
  if (!os || !architecture || rest.length > 0) {
    throw new AegisError(`Invalid platform "${text}".`, {
      hint: 'Write it as os/architecture[/variant], e.g. linux/amd64 or linux/arm64/v8.',
    })
  }
  return variant ? {os, architecture, variant} : {os, architecture}
}

/** True when `candidate` runs on `wanted`: same os and architecture, and variant when one is asked for. */
export function matchesPlatform(candidate: Platform | undefined, wanted: Platform): boolean {
  if (!candidate) return false
  if (candidate.os !== wanted.os || candidate.architecture !== wanted.architecture) return false
  return !wanted.variant || candidate.variant === wanted.variant
}

/** The first entry of an index for `platform`, if any. It may itself be an index: select again in it. */
export function findPlatform(index: ImageIndex, platform: Platform): Descriptor | undefined {
  return index.manifests.find((entry) => matchesPlatform(entry.platform, platform))
}

/** `findPlatform`, or an error listing the platforms the index (`indexDesc`) has. */
export function selectPlatform(indexDesc: Descriptor, index: ImageIndex, platform: Platform): Descriptor {
  const match = findPlatform(index, platform)
  if (match) return match
  throw noManifestFor(indexDesc, index, platform)
}

export function noManifestFor(indexDesc: Descriptor, index: ImageIndex, platform: Platform): AegisError {
  const available = index.manifests
    .map((entry) => (entry.platform ? formatPlatform(entry.platform) : 'unspecified'))
    .join(', ')
  return new AegisError(
    `Index ${indexDesc.digest} has no manifest for ${formatPlatform(platform)} (it has: ${available || 'none'}).`,
  )
}

const MALFORMED_HINT = 'The image metadata is malformed or hostile: nothing it names was read or downloaded.'

function tooLarge(desc: Descriptor): AegisError {
  return new AegisError(
    `Manifest ${desc.digest} is ${desc.size} bytes: more than the ${MAX_MANIFEST_BYTES} a manifest may have.`,
    {hint: MALFORMED_HINT},
  )
}

function invalidManifest(desc: Descriptor, reason: string): AegisError {
  return new AegisError(`${desc.digest} is not a valid manifest or index: ${reason}`, {
    hint: 'the image metadata is malformed',
  })
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
