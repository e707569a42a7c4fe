/**
 * The content graph of an image: an index points at manifests (or nested indexes), a manifest at
 * a config and layers. Parsing validates every descriptor (sha256 digests, whole-number sizes)
 * because manifests from archives and layouts are untrusted input.
 */
import {AegisError} from '../errors.js'
import {MediaType, type Descriptor, type ImageIndex, type ImageManifest, type Platform} from '../oci/types.js'
import {sha256Digest, sha256Hex, shortDigest} from './digest.js'

/** Registries cap manifests at 4 MiB; so does the store, before reading one into memory. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024

export type ParsedManifest = {kind: 'index'; index: ImageIndex} | {kind: 'manifest'; manifest: ImageManifest}

export type GraphNode =
  | {role: 'manifest'; desc: Descriptor; bytes: Buffer; parsed: ParsedManifest}
  | {role: 'blob'; desc: Descriptor}

/** Returns the verified bytes of a manifest or index, or undefined when it is not there. */
export type ManifestReader = (desc: Descriptor) => Promise<Buffer | undefined>

const INDEX_TYPES = new Set<string>([MediaType.ImageIndex, MediaType.DockerManifestList])
const MANIFEST_TYPES = new Set<string>([MediaType.ImageManifest, MediaType.DockerManifest])

export function isIndexMediaType(mediaType: string): boolean {
  return INDEX_TYPES.has(mediaType)
}

/**
 * Visits every node reachable from `root` once, parents before children. A manifest the reader
 * cannot find is passed to `onMissing` (or throws when there is none); a missing blob is the
 * visitor's business.
 */
export async function walkGraph(
  root: Descriptor,
  readManifest: ManifestReader,
  visit: (node: GraphNode) => Promise<void> | void,
  onMissing?: (desc: Descriptor) => void,
): Promise<void> {
  const seen = new Set<string>()
  const walk = async (desc: Descriptor, role: 'manifest' | 'blob'): Promise<void> => {
    if (seen.has(`${role} ${desc.digest}`)) return
    seen.add(`${role} ${desc.digest}`)
    if (role === 'blob') return visit({role, desc})
    const bytes = await readManifest(desc)
    if (bytes === undefined) {
      if (onMissing) return onMissing(desc)
      throw new AegisError(`manifest ${shortDigest(desc.digest)} is missing`, {hint: 'the image is incomplete; import or pull it again'})
    }
    const parsed = parseManifest(desc, bytes)
    await visit({role, desc, bytes, parsed})
    const children = childrenOf(parsed)
    for (const child of children.manifests) await walk(child, 'manifest')
    for (const child of children.blobs) await walk(child, 'blob')
  }
  await walk(root, 'manifest')
}

export function childrenOf(parsed: ParsedManifest): {manifests: Descriptor[]; blobs: Descriptor[]} {
  if (parsed.kind === 'index') return {manifests: parsed.index.manifests, blobs: []}
  return {manifests: [], blobs: [parsed.manifest.config, ...parsed.manifest.layers]}
}

/** Checks `bytes` against `desc` (size and digest), then parses and validates the JSON. */
export function parseManifest(desc: Descriptor, bytes: Buffer): ParsedManifest {
  if (bytes.length !== desc.size || sha256Digest(bytes) !== desc.digest) {
    throw new AegisError(`manifest ${shortDigest(desc.digest)} does not match its digest or size`, {
      hint: 'the content is corrupt or was changed',
    })
  }
  let json: unknown
  try {
    json = JSON.parse(bytes.toString('utf8'))
  } catch {
    throw invalidManifest(desc, 'it is not JSON')
  }
  if (!isRecord(json) || json.schemaVersion !== 2) throw invalidManifest(desc, 'schemaVersion is not 2')
  const looksLikeIndex = Array.isArray(json.manifests) && json.config === undefined
  if (isIndexMediaType(desc.mediaType) || (!MANIFEST_TYPES.has(desc.mediaType) && looksLikeIndex)) {
    if (!Array.isArray(json.manifests)) throw invalidManifest(desc, 'an index needs a manifests array')
    const manifests = json.manifests.map((entry, i) => validateDescriptor(entry, `manifests[${i}]`, desc))
    return {kind: 'index', index: {...(json as unknown as ImageIndex), manifests}}
  }
  if (!Array.isArray(json.layers)) throw invalidManifest(desc, 'a manifest needs a layers array')
  const config = validateDescriptor(json.config, 'config', desc)
  const layers = json.layers.map((entry, i) => validateDescriptor(entry, `layers[${i}]`, desc))
  return {kind: 'manifest', manifest: {...(json as unknown as ImageManifest), config, layers}}
}

/** The media type a manifest declares about itself, for building a descriptor from bare bytes. */
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

export function validateDescriptor(value: unknown, where: string, parent?: Descriptor): Descriptor {
  const context = parent ? ` in ${shortDigest(parent.digest)}` : ''
  if (!isRecord(value)) throw new AegisError(`${where}${context} is not a descriptor`, {hint: 'the image metadata is malformed'})
  const {mediaType, digest, size} = value
  if (typeof mediaType !== 'string' || typeof digest !== 'string' || typeof size !== 'number') {
    throw new AegisError(`${where}${context} needs mediaType, digest and size`, {hint: 'the image metadata is malformed'})
  }
  sha256Hex(digest)
  if (!Number.isSafeInteger(size) || size < 0) {
    throw new AegisError(`${where}${context} has an invalid size ${size}`, {hint: 'the image metadata is malformed'})
  }
  return value as unknown as Descriptor
}

export function formatPlatform(platform: Pick<Platform, 'os' | 'architecture' | 'variant'>): string {
  return [platform.os, platform.architecture, platform.variant].filter(Boolean).join('/')
}

function invalidManifest(desc: Descriptor, reason: string): AegisError {
  return new AegisError(`${shortDigest(desc.digest)} is not a valid manifest or index: ${reason}`, {
    hint: 'the image metadata is malformed',
  })
}

export function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
