/**
 * The shapes of a published kit: the kit artifact (an OCI 1.1 image manifest with
 * `artifactType: application/vnd.aegis.kit.v1`, the empty config, the kit layer and optionally
 * the on_publish report) and the release index that puts the kit next to its image, so one
 * reference resolves to both. Everything here is a pure function of its inputs: the same kit
 * gives the same bytes, hence the same digests.
 */
import {AegisError} from '../errors.js'
import type {AegisKitManifest} from '../kit/manifest.generated.js'
import {artifactManifest, blobOf, imageIndex, jsonBlob, titled, type Blob} from '../oci/artifact.js'
import type {ParsedManifest} from '../oci/manifest.js'
import {Annotation, MediaType} from '../oci/media-types.js'
import type {Descriptor} from '../oci/types.js'

export function kitLayerBlob(manifest: AegisKitManifest, layer: Buffer): Blob {
  return blobOf(MediaType.KitLayer, layer, {annotations: titled(`${manifest.name}-${manifest.version}.tar.gz`)})
}

export function reportBlob(report: unknown): Blob {
  return jsonBlob(MediaType.KitReport, report, {annotations: titled('on_publish.json')})
}

/** The kit artifact manifest: empty config, the kit layer, then the report when there is one. */
export function kitArtifactManifest(manifest: AegisKitManifest, layer: Descriptor, report?: Descriptor): Blob {
  const artifact = artifactManifest(MediaType.KitArtifact, report ? [layer, report] : [layer], {
    annotations: kitAnnotations(manifest),
  })
  // Its descriptor carries the artifactType, as the release index and the store's tag list it.
  return {...artifact, descriptor: {...artifact.descriptor, artifactType: MediaType.KitArtifact}}
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
    if (!image.platform)
      throw new AegisError(`image manifest ${image.digest} has no platform`, {
        hint: 'every image in a kit release says which platform it is for',
      })
  }
  const kitEntry: Descriptor = {
    mediaType: kit.mediaType,
    digest: kit.digest,
    size: kit.size,
    artifactType: MediaType.KitArtifact,
  }
  return imageIndex([...images, kitEntry], {[Annotation.Title]: manifest.name, [Annotation.Version]: manifest.version})
}

/** The kit artifact in a pulled root: the root itself, or the index entry carrying the kit's artifactType. */
export function findKitDescriptor(root: Descriptor, parsed: ParsedManifest): Descriptor | undefined {
  if (parsed.kind === 'index')
    return parsed.index.manifests.find((entry) => entry.artifactType === MediaType.KitArtifact)
  if (
    parsed.manifest.artifactType === MediaType.KitArtifact ||
    parsed.manifest.config.mediaType === MediaType.KitArtifact
  )
    return root
  return undefined
}

/** A kit artifact manifest's layers, checked: exactly one kit layer, at most one report. */
export function kitArtifactLayers(
  parsed: ParsedManifest,
  desc: Descriptor,
): {layer: Descriptor; report?: Descriptor; annotations: Record<string, string>} {
  const layers = parsed.kind === 'manifest' ? parsed.manifest.layers : []
  const kitLayers = layers.filter((layer) => layer.mediaType === MediaType.KitLayer)
  const reports = layers.filter((layer) => layer.mediaType === MediaType.KitReport)
  if (kitLayers.length !== 1 || reports.length > 1) {
    throw new AegisError(
      `${desc.digest} is not a kit artifact: it has ${kitLayers.length} kit layers and ${reports.length} reports`,
      {
        hint: `a kit artifact has exactly one ${MediaType.KitLayer} layer`,
      },
    )
  }
  const annotations = parsed.kind === 'manifest' ? (parsed.manifest.annotations ?? {}) : {}
  return {layer: kitLayers[0] as Descriptor, ...(reports[0] ? {report: reports[0]} : {}), annotations}
}
