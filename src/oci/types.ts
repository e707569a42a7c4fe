/**
 * OCI image-spec and distribution-spec shapes shared by the store, the registry client and the
 * image builder. Storage-agnostic: the local store and a remote repository both implement
 * `ContentStore`, so pushing and pulling are the same graph copy in two directions (oras-go's
 * `content.Storage` + `Copy`).
 */
import {createHash} from 'node:crypto'
import type {Readable} from 'node:stream'

export const MediaType = {
  ImageIndex: 'application/vnd.oci.image.index.v1+json',
  ImageManifest: 'application/vnd.oci.image.manifest.v1+json',
  ImageConfig: 'application/vnd.oci.image.config.v1+json',
  LayerTar: 'application/vnd.oci.image.layer.v1.tar',
  LayerTarGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  LayerTarZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
  Empty: 'application/vnd.oci.empty.v1+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerConfig: 'application/vnd.docker.container.image.v1+json',
  DockerLayerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
  /** aegis-kit's own: a kit (manifest, schema version, hooks) published as an OCI artifact. */
  KitArtifact: 'application/vnd.aegis.kit.v1',
  KitLayer: 'application/vnd.aegis.kit.layer.v1.tar+gzip',
  /** The JSON report a kit's on_publish hook returned, a layer of the kit artifact. */
  KitReport: 'application/vnd.aegis.kit.report.v1+json',
  SpdxJson: 'application/spdx+json',
} as const

export interface Platform {
  architecture: string
  os: string
  variant?: string
  'os.version'?: string
  'os.features'?: string[]
}

export interface Descriptor {
  mediaType: string
  /** `sha256:<64 hex>` */
  digest: string
  size: number
  urls?: string[]
  annotations?: Record<string, string>
  platform?: Platform
  artifactType?: string
}

export interface ImageManifest {
  schemaVersion: 2
  mediaType: string
  artifactType?: string
  config: Descriptor
  layers: Descriptor[]
  subject?: Descriptor
  annotations?: Record<string, string>
}

export interface ImageIndex {
  schemaVersion: 2
  mediaType: string
  artifactType?: string
  manifests: Descriptor[]
  subject?: Descriptor
  annotations?: Record<string, string>
}

export interface ImageConfig {
  created?: string
  author?: string
  architecture: string
  os: string
  variant?: string
  config?: {
    User?: string
    ExposedPorts?: Record<string, Record<string, never>>
    Env?: string[]
    Entrypoint?: string[]
    Cmd?: string[]
    Volumes?: Record<string, Record<string, never>>
    WorkingDir?: string
    Labels?: Record<string, string>
    StopSignal?: string
  }
  rootfs: {type: 'layers'; diff_ids: string[]}
  history?: Array<{created?: string; created_by?: string; comment?: string; empty_layer?: boolean}>
}

/**
 * Content-addressed storage that can also resolve and set tags. Implemented by the local
 * OCI-layout store and by a remote registry repository.
 */
export interface ContentStore {
  /** True when the blob or manifest `desc` is already present. */
  exists(desc: Descriptor): Promise<boolean>
  /** A stream of the content; the caller verifies it against `desc` when it does not trust the store. */
  fetch(desc: Descriptor): Promise<Readable>
  /**
   * Stores content. Implementations verify size and digest before the content becomes visible
   * and leave nothing behind when verification or the stream fails.
   */
  push(desc: Descriptor, content: Readable | Buffer): Promise<void>
  /** The descriptor a tag (or digest) points at. */
  resolve(reference: string): Promise<Descriptor>
  /** Points `reference` (a tag) at `desc`, which must already be stored with all its children. */
  tag(desc: Descriptor, reference: string): Promise<void>
}

/** The referrers tag schema's tag (`sha256-<hex>`): an index of artifacts (SBOM, signatures) about that digest. */
export function isReferrersTag(tag: string): boolean {
  return /^sha256-[0-9a-f]{64}$/.test(tag)
}

/** The referrers tag of `digest`: `sha256:<hex>` → `sha256-<hex>`. */
export function referrersTag(digest: string): string {
  return digest.replace(':', '-')
}

/** The `sha256:<hex>` digest of some bytes, as descriptors carry it. */
export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`
}
