/**
 * LayerWriter: files in, one deterministic OCI layer blob out. Reproducibility lives here:
 * entries sorted by path bytes, owners fixed (0:0 unless given), owner names empty, mtimes
 * clamped to SOURCE_DATE_EPOCH, no atime/ctime, PAX only when ustar cannot hold a field,
 * and compression whose block boundaries depend only on the bytes. Both digests (of the blob
 * and of the tar, the diffId) are computed while streaming, in one pass.
 */
import {statSync} from 'node:fs'

import {AegisError} from '../errors.js'
import {isInside} from '../fs-util.js'
import {MediaType} from '../oci/media-types.js'
import type {Descriptor} from '../oci/types.js'
import {createCompressor, type GzipFraming, type LayerCompression} from './layer-compress.js'
import {
  OPAQUE_WHITEOUT,
  WHITEOUT_PREFIX,
  entryFromStat,
  normalizeLayerPath,
  orderEntries,
  parentOf,
  streamTree,
  treeRoot,
  walkTree,
  type EntryOrder,
  type LayerEntry,
  type Owner,
  type TreeOptions,
} from './layer-entries.js'
import {BlobOutput, MAX_PENDING_BLOCKS, TarBlocks} from './layer-output.js'
import {TAR_END, tarPadding, type TarHeaderStyle} from './layer-tar.js'

export type {GzipFraming, LayerCompression} from './layer-compress.js'
export type {EntryOrder, TreeOptions} from './layer-entries.js'
export type {TarHeaderStyle} from './layer-tar.js'

export interface LayerWriterOptions {
  /** Default `gzip`. */
  compression?: LayerCompression
  /** gzip 1-9 (default 6), zstd 1-19 (default 3). */
  level?: number
  /** Seconds; every mtime later than this is written as this. Default 0 (all mtimes 0). */
  sourceDateEpoch?: number
  /** Owner of every entry unless an entry says otherwise. Default 0:0. */
  owner?: Owner
  /** Compression threads; the output is the same for any value. Default: available cores. */
  threads?: number
  /** Called for each warning (skipped sockets, devices...), which are also returned. */
  onWarning?: (message: string) => void
  // The three below exist for the kit layer, whose bytes were fixed before it went through this
  // writer (its digests must not change); image layers keep the defaults.
  /** Default `path-bytes`. */
  order?: EntryOrder
  /** Default `posix`. */
  tarHeaders?: TarHeaderStyle
  /** Default `blocks` (parallel); `single-stream` also keeps the blob's bytes independent of the thread count. */
  gzipFraming?: GzipFraming
}

export interface EntryOptions {
  /** Permission bits; default 0644 for files, 0755 for directories, 0777 for symlinks. */
  mode?: number
  uid?: number
  gid?: number
  /** Seconds since the epoch (still clamped); default SOURCE_DATE_EPOCH. */
  mtime?: number
}

export interface LayerBlob {
  /** The blob's descriptor, ready for a manifest's `layers`. */
  descriptor: Descriptor
  mediaType: string
  /** sha256 of the compressed blob. */
  digest: string
  /** Size of the compressed blob in bytes. */
  size: number
  /** sha256 of the uncompressed tar, for the config's `rootfs.diff_ids`. */
  diffId: string
  uncompressedSize: number
  entries: number
  /** Which compressor ran (e.g. the zstd program or Node's zlib), for logs and docs. */
  compressor: string
  warnings: string[]
}

const MEDIA_TYPES: Record<LayerCompression, string> = {
  gzip: MediaType.LayerTarGzip,
  zstd: MediaType.LayerTarZstd,
  none: MediaType.LayerTar,
}

/** A tree added to an empty writer, walked only when the layer is written (see `addTree`). */
interface DeferredTree {
  sourceDir: string
  options: TreeOptions
  owner: Owner
}

export class LayerWriter {
  private readonly entries = new Map<string, LayerEntry>()
  private deferredTree: DeferredTree | undefined
  private readonly warnings: string[] = []
  private readonly compression: LayerCompression
  private readonly epoch: number
  private readonly owner: Owner

  constructor(private readonly options: LayerWriterOptions = {}) {
    this.compression = options.compression ?? 'gzip'
    this.epoch = Math.max(0, Math.floor(options.sourceDateEpoch ?? 0))
    this.owner = options.owner ?? {uid: 0, gid: 0}
  }

  /**
   * Adds a host directory's contents (not following symlinks). Later additions of a path win.
   * A tree that is all the layer holds (the usual case: a root or a prefix of packages) is
   * walked while the layer is written, a directory at a time in write order, so the first bytes
   * are compressed while the rest is still being listed; anything added after it walks it now.
   */
  addTree(sourceDir: string, options: TreeOptions = {}): this {
    this.walkDeferredTree() // an earlier tree first, so this one's paths win
    treeRoot(sourceDir, options) // a bad root fails here, not when the layer is written
    this.deferredTree = {sourceDir, options, owner: options.owner ?? this.owner}
    // Streaming needs the tree to be the whole layer, in the order it lists in.
    if (this.entries.size > 0 || (this.options.order ?? 'path-bytes') !== 'path-bytes') this.walkDeferredTree()
    return this
  }

  /** A regular file from a host path (read when the layer is written) or from bytes. */
  addFile(path: string, source: string | Buffer, options: EntryOptions = {}): this {
    const layerPath = normalizeLayerPath(path)
    if (typeof source === 'string') {
      const stat = statSync(source)
      if (!stat.isFile()) throw new AegisError(`cannot add "${source}" as file "${layerPath}": not a regular file`)
      const entry = entryFromStat(layerPath, source, stat, this.owner, (m) => this.warn(m))!
      delete (entry as {inode?: string}).inode // an explicitly added file is never folded into a hardlink
      return this.put({...entry, ...this.overrides(options)})
    }
    return this.put({...this.base(layerPath, 0o644, options), type: 'file', source, size: source.length})
  }

  addDirectory(path: string, options: EntryOptions = {}): this {
    return this.put({...this.base(normalizeLayerPath(path), 0o755, options), type: 'directory'})
  }

  addSymlink(path: string, target: string, options: EntryOptions = {}): this {
    if (target === '') throw new AegisError(`symlink "${path}" needs a target`)
    return this.put({...this.base(normalizeLayerPath(path), 0o777, options), type: 'symlink', target})
  }

  /** A hardlink to `target`, a regular file of this same layer. */
  addHardlink(path: string, target: string, options: EntryOptions = {}): this {
    const targetPath = normalizeLayerPath(target, 'hardlink target')
    return this.put({...this.base(normalizeLayerPath(path), 0o644, options), type: 'hardlink', target: targetPath})
  }

  /** Deletes `path` (file or directory) of the layers below: a `.wh.<name>` entry. */
  addWhiteout(path: string): this {
    const hidden = normalizeLayerPath(path, 'whiteout path')
    const parent = parentOf(hidden)
    const name = hidden.slice(parent === '' ? 0 : parent.length + 1)
    if (name.startsWith(WHITEOUT_PREFIX))
      throw new AegisError(`cannot white out "${hidden}": names starting with ${WHITEOUT_PREFIX} are reserved`)
    const marker = parent === '' ? `${WHITEOUT_PREFIX}${name}` : `${parent}/${WHITEOUT_PREFIX}${name}`
    return this.put({...this.base(marker, 0o644, {}), type: 'file', source: Buffer.alloc(0), size: 0, whiteout: true})
  }

  /** Hides everything the layers below have in directory `path` (`.wh..wh..opq`); keeps the directory. */
  addOpaqueDirectory(path: string, options: EntryOptions = {}): this {
    this.walkDeferredTree()
    const dir = normalizeLayerPath(path, 'opaque directory')
    if (!this.entries.has(dir)) this.addDirectory(dir, options)
    return this.put({
      ...this.base(`${dir}/${OPAQUE_WHITEOUT}`, 0o644, {}),
      type: 'file',
      source: Buffer.alloc(0),
      size: 0,
      whiteout: true,
    })
  }

  /**
   * Writes the layer to a file path (created or truncated) or a writable stream, and returns
   * its digests. The writer can be written again; the same entries give the same bytes.
   */
  async write(destination: string | NodeJS.WritableStream): Promise<LayerBlob> {
    const implied = {...this.owner, mode: 0o755, mtime: this.epoch}
    // A deferred tree is walked again by every write; its warnings belong to this write.
    const treeWarnings: string[] = []
    // A blob written inside its own tree must not be listed in it: walk the tree before it exists.
    if (typeof destination === 'string' && this.deferredTree && isInside(this.deferredTree.sourceDir, destination))
      this.walkDeferredTree()
    const tree = this.deferredTree
    const entries = tree
      ? streamTree(tree.sourceDir, tree.options, tree.owner, implied, (message) => {
          treeWarnings.push(message)
          this.options.onWarning?.(message)
        })
      : orderEntries(new Map(this.entries), implied, this.options.order)
    const output = new BlobOutput(destination, {blobIsInput: this.compression === 'none'})
    const compressor = createCompressor(this.compression, {
      level: this.options.level,
      gzipFraming: this.options.gzipFraming,
      threads: this.options.threads,
      output: (chunk) => output.write(chunk),
      outputFd: output.fileDescriptor,
    })
    const tar = new TarBlocks(compressor)
    try {
      const count = await this.writeEntries(tar, entries)
      tar.put(TAR_END)
      const {diffId, uncompressedSize} = await tar.end()
      const written = compressor.writtenOutput?.()
      if (written) output.adopt(written)
      const {digest, size} = await output.close(diffId)
      const mediaType = MEDIA_TYPES[this.compression]
      return {
        descriptor: {mediaType, digest, size},
        mediaType,
        digest,
        size,
        diffId,
        uncompressedSize,
        entries: count,
        compressor: compressor.name,
        warnings: [...this.warnings, ...treeWarnings],
      }
    } catch (error) {
      await compressor.close()
      output.abort()
      throw error
    }
  }

  /** Each entry's header and content, in order; returns how many were written. */
  private async writeEntries(tar: TarBlocks, entries: Iterable<LayerEntry>): Promise<number> {
    let count = 0
    for (const entry of entries) {
      count++
      tar.putHeader(
        {
          path: entry.path,
          type: entry.type,
          mode: entry.mode,
          uid: entry.uid,
          gid: entry.gid,
          size: entry.type === 'file' ? entry.size : 0,
          mtime: Math.max(0, Math.min(entry.mtime, this.epoch)),
          ...(entry.type === 'symlink' || entry.type === 'hardlink' ? {linkname: entry.target} : {}),
        },
        this.options.tarHeaders,
      )
      if (entry.type === 'file' && entry.size > 0) {
        if (typeof entry.source === 'string') await tar.putFile(entry.source, entry.size)
        else tar.put(entry.source)
        tar.putZeros(tarPadding(entry.size))
      }
      if (tar.pendingBlocks >= MAX_PENDING_BLOCKS) await tar.drain()
    }
    return count
  }

  /** Turns a deferred tree into entries, before anything else is added to the layer. */
  private walkDeferredTree(): void {
    const tree = this.deferredTree
    if (tree === undefined) return
    this.deferredTree = undefined
    for (const entry of walkTree(tree.sourceDir, tree.options, tree.owner, (m) => this.warn(m)))
      this.entries.set(entry.path, entry)
  }

  private warn(message: string): void {
    this.warnings.push(message)
    this.options.onWarning?.(message)
  }

  private put(entry: LayerEntry): this {
    this.walkDeferredTree()
    this.entries.set(entry.path, entry)
    return this
  }

  private base(path: string, defaultMode: number, options: EntryOptions) {
    return {
      path,
      mode: defaultMode,
      uid: this.owner.uid,
      gid: this.owner.gid,
      mtime: this.epoch,
      ...this.overrides(options),
    }
  }

  private overrides(options: EntryOptions): Partial<Pick<LayerEntry, 'mode' | 'uid' | 'gid' | 'mtime'>> {
    const result: Partial<Pick<LayerEntry, 'mode' | 'uid' | 'gid' | 'mtime'>> = {}
    if (options.mode !== undefined) result.mode = options.mode & 0o7777
    if (options.uid !== undefined) result.uid = options.uid
    if (options.gid !== undefined) result.gid = options.gid
    if (options.mtime !== undefined) result.mtime = Math.floor(options.mtime)
    return result
  }
}

/** SOURCE_DATE_EPOCH from an environment, validated; undefined when unset or empty. */
export function sourceDateEpochFrom(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const raw = env.SOURCE_DATE_EPOCH
  if (raw === undefined || raw === '') return undefined
  if (!/^\d+$/.test(raw)) {
    throw new AegisError(`SOURCE_DATE_EPOCH must be a whole number of seconds, got "${raw}"`)
  }
  return Number(raw)
}
