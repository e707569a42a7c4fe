/** What the store's operations return; the CLI formats these. */
import type {Descriptor, ImageConfig, ImageIndex, ImageManifest} from '../oci/types.js'

/** One tag in the store, as `aegis-kit images` lists it. */
export interface StoreEntry {
  /** Repository name, e.g. `openclaw` or `ghcr.io/acme/openclaw`. */
  name: string
  tag: string
  /** Digest of the tagged manifest or index. */
  digest: string
  mediaType: string
  /** Bytes of every distinct blob the tag reaches: manifests, configs and layers of all platforms. */
  size: number
  /** `os/arch[/variant]` of each image; empty for artifacts without a platform. */
  platforms: string[]
  /** Newest `created` among the images' configs, when they say. */
  created?: string
}

/** One platform's image inside an inspected reference. */
export interface ImageSummary {
  platform?: string
  digest: string
  manifest: ImageManifest
  configDigest: string
  configMediaType: string
  /** Parsed config, when the config is an OCI or Docker image config. */
  config?: ImageConfig
  layers: Descriptor[]
  /** Manifest + config + layers of this image. */
  size: number
}

export interface InspectResult {
  /** The descriptor the reference resolved to. */
  descriptor: Descriptor
  /** Every `name:tag` in the store pointing at this digest. */
  tags: string[]
  kind: 'manifest' | 'index'
  /** Present when the reference is an index (multi-platform image). */
  index?: ImageIndex
  images: ImageSummary[]
  /** Distinct bytes across all images, as in `StoreEntry.size`. */
  size: number
  /** Manifests about the image or one of its platforms (SBOMs, signatures), listed by `NAME:sha256-<hex>` tags. */
  referrers: Referrer[]
}

/** A referrer as a referrers list names it, plus the digest of the manifest it is about. */
export interface Referrer extends Descriptor {
  subject: string
}

export interface RemovedTag {
  name: string
  tag: string
  digest: string
}

export interface PruneResult {
  /** Unreferenced blobs deleted. */
  blobs: Array<{digest: string; size: number}>
  /** Temp files of dead processes (interrupted writes) deleted. */
  tempFiles: Array<{path: string; size: number}>
  /** Temp directories of dead processes (killed builds' scratch, kit unpacks) deleted. */
  tempDirs: Array<{path: string; size: number}>
  /** Temp directories of dead processes kept because something is mounted under them. */
  kept: Array<{path: string; reason: string}>
  bytesFreed: number
}

export interface ImportedImage {
  name: string
  tag: string
  digest: string
}

export interface ImportOptions {
  /**
   * Store the image under this `name[:tag]` instead of the source's own ref.name. Without a tag
   * the source's tag is kept. Only valid when exactly one image is imported.
   */
  as?: string
}

export interface DockerExportOptions {
  /** `os/arch[/variant]` to pick from a multi-platform index; default: the host's. */
  platform?: string
}
