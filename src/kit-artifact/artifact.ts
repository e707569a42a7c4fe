/**
 * The shapes of a published kit: the kit artifact (an OCI 1.1 image manifest with
 * `artifactType: application/vnd.aegis.kit.v1`, the empty config, the kit layer and optionally
 * the on_publish report) and the release index that puts the kit next to its image, so one
 * reference resolves to both. Everything here is a pure function of its inputs: the same kit
 * gives the same bytes, hence the same digests.
 */
import {AegisError} from '../errors.js'
import type {AegisKitManifest} from '../kit/manifest.generated.js'
import {MediaType, type Descriptor, type ImageIndex, type ImageManifest} from '../oci/types.js'
import {sha256Digest} from '../registry/verify.js'

export const Annotation = {
  Title: 'org.opencontainers.image.title',
  Version: 'org.opencontainers.image.version',
  Source: 'org.opencontainers.image.source',
  KitSchemaVersion: 'io.aegis.kit.schema-version',
} as const

/** Content addressed by its bytes: what goes into the store and the registry. */
export interface Blob {
  descriptor: Descriptor
  bytes: Buffer
}

export function jsonBlob(mediaType: string, value: unknown, extra: Partial<Descriptor> = {}): Blob {
  return blobOf(mediaType, Buffer.from(JSON.stringify(value)), extra)
}

export function blobOf(mediaType: string, bytes: Buffer, extra: Partial<Descriptor> = {}): Blob {
  return {descriptor: {mediaType, digest: sha256Digest(bytes), size: bytes.length, ...extra}, bytes}
}

/** `{}`: the config of every OCI artifact. */
export function emptyConfig(): Blob {
  return blobOf(MediaType.Empty, Buffer.from('{}'))
}

export function kitLayerBlob(manifest: AegisKitManifest, layer: Buffer): Blob {
  return blobOf(MediaType.KitLayer, layer, {annotations: {[Annotation.Title]: `${manifest.name}-${manifest.version}.tar.gz`}})
}

export function reportBlob(report: unknown): Blob {
  return jsonBlob(MediaType.KitReport, report, {annotations: {[Annotation.Title]: 'on_publish.json'}})
}

/** The kit artifact manifest: empty config, the kit layer, then the report when there is one. */
export function kitArtifactManifest(manifest: AegisKitManifest, layer: Descriptor, report?: Descriptor): Blob {
  const body: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    artifactType: MediaType.KitArtifact,
    config: emptyConfig().descriptor,
    layers: report ? [layer, report] : [layer],
    annotations: kitAnnotations(manifest),
  }
  return jsonBlob(MediaType.ImageManifest, body, {artifactType: MediaType.KitArtifact})
}

export function kitAnnotations(manifest: AegisKitManifest): Record<string, string> {
  return {
    [Annotation.Title]: manifest.name,
    [Annotation.Version]: manifest.version,
    ...(manifest.homepage ? {[Annotation.Source]: manifest.homepage} : {}),
    [Annotation.KitSchemaVersion]: String(manifest.schema_version ?? 1),
  }
}

/**
 * One index for the release: the image's manifests (each with its platform) first, then the kit
 * artifact (with its artifactType and no platform, so platform selection never picks it).
 */
export function releaseIndex(manifest: AegisKitManifest, images: Descriptor[], kit: Descriptor): Blob {
  for (const image of images) {
    if (!image.platform) throw new AegisError(`image manifest ${image.digest} has no platform`, {hint: 'every image in a kit release says which platform it is for'})
  }
  const body: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.ImageIndex,
    manifests: [...images, {mediaType: kit.mediaType, digest: kit.digest, size: kit.size, artifactType: MediaType.KitArtifact}],
    annotations: {[Annotation.Title]: manifest.name, [Annotation.Version]: manifest.version},
  }
  return jsonBlob(MediaType.ImageIndex, body)
}

/** The kit artifact in a pulled root: the root itself, or the index entry carrying the kit's artifactType. */
export function findKitDescriptor(root: Descriptor, rootBytes: Buffer): Descriptor | undefined {
  const parsed = parseJson(rootBytes) as Partial<ImageManifest & ImageIndex>
  if (Array.isArray(parsed.manifests)) return parsed.manifests.find((entry) => entry.artifactType === MediaType.KitArtifact)
  if (parsed.artifactType === MediaType.KitArtifact || parsed.config?.mediaType === MediaType.KitArtifact) return root
  return undefined
}

/** A kit artifact manifest's layers, checked: exactly one kit layer, at most one report. */
export function kitArtifactLayers(bytes: Buffer, desc: Descriptor): {layer: Descriptor; report?: Descriptor; annotations: Record<string, string>} {
  const manifest = parseJson(bytes) as Partial<ImageManifest>
  const layers = Array.isArray(manifest.layers) ? manifest.layers : []
  const kitLayers = layers.filter((layer) => layer.mediaType === MediaType.KitLayer)
  const reports = layers.filter((layer) => layer.mediaType === MediaType.KitReport)
  if (kitLayers.length !== 1 || reports.length > 1) {
    throw new AegisError(`${desc.digest} is not a kit artifact: it has ${kitLayers.length} kit layers and ${reports.length} reports`, {
      hint: `a kit artifact has exactly one ${MediaType.KitLayer} layer`,
    })
  }
  return {layer: kitLayers[0] as Descriptor, ...(reports[0] ? {report: reports[0]} : {}), annotations: manifest.annotations ?? {}}
}

function parseJson(bytes: Buffer): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(bytes.toString('utf8'))
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : {}
  } catch {
    return {}
  }
}
