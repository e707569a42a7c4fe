/**
 * OCI image-spec and distribution-spec shapes shared by the store, the registry client and the
 * image builder. Storage-agnostic: the local store and a remote repository both implement
 * `ContentStore`, so pushing and pulling are the same graph copy in two directions (oras-go's
 * `content.Storage` + `Copy`). Media types are in media-types.ts, digests in digest.ts, parsing
 * in manifest.ts.
 */
import type {Readable} from 'node:stream'

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
