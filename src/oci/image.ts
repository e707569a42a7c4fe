/**
 * A read-only view of one image in a local store, as go-containerregistry's `v1.Image` over a
 * layout: a reference (or descriptor) → the manifest for a platform (through nested indexes) →
 * its config and layers. The runner, the builder's base step and the guest store read images
 * through this instead of parsing manifests themselves.
 */
import type {Readable} from 'node:stream'
import {AegisError} from '../errors.js'
import {findPlatform, noManifestFor, parseManifest, type ParsedManifest} from './manifest.js'
import type {Descriptor, ImageConfig, ImageManifest, Platform} from './types.js'

/** What the view needs of a store (the local store implements it). */
export interface ImageSource {
  resolve(reference: string): Promise<Descriptor>
  /** Verified bytes of a stored manifest or index; undefined when it is not stored. */
  readManifest(desc: Descriptor): Promise<Buffer | undefined>
  /** The parsed image config; undefined when `desc` is not an image config or not stored. */
  readImageConfig(desc: Descriptor): Promise<ImageConfig | undefined>
  fetch(desc: Descriptor): Promise<Readable>
  /** Where a stored blob is on disk, for a reader that opens the file itself (QEMU). */
  blobPath(desc: Descriptor): string
  missingBlob(desc: Descriptor): Error
}

export interface ImageView {
  /** The manifest read: the platform's, when the reference named an index. */
  descriptor: Descriptor
  manifest: ImageManifest
  layers: Descriptor[]
  /** The image config; throws when the config is not an image config or is not stored. */
  config(): Promise<ImageConfig>
  /** A layer's (or any blob's) content as stored. */
  open(desc: Descriptor): Promise<Readable>
  blobPath(desc: Descriptor): string
}

export interface OpenImageOptions {
  /** The platform to take from an index; without one, an index is refused. */
  platform?: Platform
  /** The error for an index without an image for `platform` (or when no platform was given), instead of the generic one. */
  noPlatform?: (index: Descriptor, platform: Platform | undefined) => Error
}

/** The manifest or index `desc` names in `source`, parsed and validated. */
export async function readParsedManifest(source: ImageSource, desc: Descriptor): Promise<ParsedManifest> {
  const bytes = await source.readManifest(desc)
  if (bytes === undefined) throw source.missingBlob(desc)
  return parseManifest(desc, bytes)
}

/** The image `reference` names in `source`, for `options.platform` when it names an index. */
export async function openImage(
  source: ImageSource,
  reference: string | Descriptor,
  options: OpenImageOptions = {},
): Promise<ImageView> {
  let desc = typeof reference === 'string' ? await source.resolve(reference) : reference
  let parsed = await readParsedManifest(source, desc)
  while (parsed.kind === 'index') {
    if (options.platform === undefined) {
      throw (
        options.noPlatform?.(desc, undefined) ??
        new AegisError(
          `${describe(reference)} is a multi-platform index: a platform is needed to pick an image from it`,
        )
      )
    }
    const entry = findPlatform(parsed.index, options.platform)
    if (entry === undefined)
      throw options.noPlatform?.(desc, options.platform) ?? noManifestFor(desc, parsed.index, options.platform)
    desc = entry
    parsed = await readParsedManifest(source, desc)
  }
  const manifest = parsed.manifest
  const descriptor = desc
  return {
    descriptor,
    manifest,
    layers: manifest.layers,
    config: async () => {
      const config = await source.readImageConfig(manifest.config)
      if (config) return config
      throw source.missingBlob(manifest.config)
    },
    open: (blob) => source.fetch(blob),
    blobPath: (blob) => source.blobPath(blob),
  }
}

function describe(reference: string | Descriptor): string {
  return typeof reference === 'string' ? reference : reference.digest
}
