/**
 * OCI artifacts (image-spec 1.1): content addressed by its bytes, the empty config, an artifact
 * manifest (with a subject when it is about another manifest: an SBOM, a signature) and the
 * referrers tag schema that lists such artifacts where the referrers API is missing. Pure
 * functions of their inputs: the same input gives the same bytes, hence the same digests.
 */
import {sha256Digest} from './digest.js'
import {Annotation, MediaType} from './media-types.js'
import type {Descriptor, ImageIndex, ImageManifest} from './types.js'

/** Content addressed by its bytes: what goes into the store and the registry. */
export interface Blob {
  descriptor: Descriptor
  bytes: Buffer
}

export function blobOf(mediaType: string, bytes: Buffer, extra: Partial<Descriptor> = {}): Blob {
  return {descriptor: {mediaType, digest: sha256Digest(bytes), size: bytes.length, ...extra}, bytes}
}

/** `value` as compact JSON (JSON.stringify's key order, so a value written the same way hashes the same). */
export function jsonBlob(mediaType: string, value: unknown, extra: Partial<Descriptor> = {}): Blob {
  return blobOf(mediaType, Buffer.from(JSON.stringify(value)), extra)
}

/** `{}`: the config of every OCI artifact. */
export function emptyConfig(): Blob {
  return blobOf(MediaType.Empty, Buffer.from('{}'))
}

/** Annotations naming a blob's file (what `oras pull` writes it as). */
export function titled(title: string): Record<string, string> {
  return {[Annotation.Title]: title}
}

export interface ArtifactOptions {
  /** The manifest this artifact is about (OCI 1.1 `subject`). */
  subject?: Descriptor
  annotations?: Record<string, string>
}

/**
 * An artifact manifest: `artifactType`, the empty config, `layers`, then the subject and
 * annotations when given. Its descriptor does not carry the artifactType; callers that list it
 * (an index, a referrers list) add it.
 */
export function artifactManifest(artifactType: string, layers: Descriptor[], options: ArtifactOptions = {}): Blob {
  const body: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    artifactType,
    config: emptyConfig().descriptor,
    layers,
    ...(options.subject ? {subject: options.subject} : {}),
    ...(options.annotations ? {annotations: options.annotations} : {}),
  }
  return jsonBlob(MediaType.ImageManifest, body)
}

/** An image index of `manifests`, with its annotations when given. */
export function imageIndex(manifests: Descriptor[], annotations?: Record<string, string>): Blob {
  const body: ImageIndex = {
    schemaVersion: 2,
    mediaType: MediaType.ImageIndex,
    manifests,
    ...(annotations ? {annotations} : {}),
  }
  return jsonBlob(MediaType.ImageIndex, body)
}

/** The referrers tag schema's tag (`sha256-<hex>`): an index of artifacts (SBOM, signatures) about that digest. */
export function isReferrersTag(tag: string): boolean {
  return /^sha256-[0-9a-f]{64}$/.test(tag)
}

/** The referrers tag of `digest`: `sha256:<hex>` → `sha256-<hex>`. */
export function referrersTag(digest: string): string {
  return digest.replace(':', '-')
}
