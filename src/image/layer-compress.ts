/**
 * The compressors a layer can be written with, behind one small interface: blocks of tar in
 * order, compressed bytes out (in order) through a callback.
 */
import {spawnSync} from 'node:child_process'
import {availableParallelism} from 'node:os'
import type {Transform} from 'node:stream'
import * as zlib from 'node:zlib'

import {AegisError} from '../errors.js'
import {GZIP_BLOCK_SIZE, ParallelGzip} from './gzip-parallel.js'
import {ZstdProgram} from './layer-zstd.js'

export type LayerCompression = 'gzip' | 'zstd' | 'none'

/**
 * How a gzip layer is framed. `blocks`: pigz-style 1 MiB blocks deflated in parallel
 * (gzip-parallel.ts), the bytes independent of the thread count. `single-stream`: one zlib
 * deflate stream over the whole tar on this thread, with gzip's header as zlib writes it but
 * the OS byte "unknown": the bytes of zlib.gzipSync, which wrote the kit layer before.
 */
export type GzipFraming = 'blocks' | 'single-stream'

export interface BlockCompressor {
  /** Which implementation runs, e.g. `gzip (parallel zlib, 2 threads)`, `zstd (zstd 1.5.4 binary)`. */
  readonly name: string
  /** A buffer to fill with the next block (may be recycled); its length is the compressor's block size. */
  takeBlock(): Buffer
  /** Hands over a full block; the compressor owns it from now on. */
  push(block: Buffer): Promise<void>
  /** The final, possibly short or empty block; resolves once every byte went to the output. */
  end(lastBlock: Buffer): Promise<void>
  /** Releases workers or child processes after a failure. */
  close(): Promise<void>
  /**
   * When the compressor wrote the blob to `outputFd` itself (instead of through `output`): its
   * digest and size, known after `end`.
   */
  writtenOutput?(): {digest: string; size: number} | undefined
  /**
   * Present when the compressor hashes its input itself (off the main thread): the tar's
   * `sha256:<hex>`, known after `end`. The caller then does not hash the tar.
   */
  inputDigest?(): string
}

export interface CompressorOptions {
  level?: number
  /** Default `blocks`. */
  gzipFraming?: GzipFraming
  threads?: number
  output: (chunk: Buffer) => void | Promise<void>
  /** The blob's file, when it goes to one: a compressor may write and hash it off the main thread. */
  outputFd?: number
}

export function createCompressor(kind: LayerCompression, options: CompressorOptions): BlockCompressor {
  if (kind === 'none') return new PassThroughCompressor(options.output)
  if (kind === 'gzip' && options.gzipFraming === 'single-stream') {
    const level = options.level ?? 6
    return new StreamCompressor(
      zlib.createGzip({level}),
      `gzip (zlib ${process.versions.zlib}, level ${level}, single stream)`,
      options.output,
      (header) => {
        header[GZIP_OS_OFFSET] = GZIP_OS_UNKNOWN // zlib writes the build host's OS: the bytes must not depend on it
      },
    )
  }
  if (kind === 'gzip') return new HeldStartGzip(options)
  const zstd = findZstd()
  if (zstd === undefined) {
    throw new AegisError('zstd compression needs the zstd program or a Node.js with zlib zstd support', {
      hint: 'Install zstd (apt-get install zstd), or use gzip compression.',
    })
  }
  if (zstd.kind === 'node') {
    const level = options.level ?? 3
    // ZSTD_c_compressionLevel is 100 in zstd.h; @types/node 20 lacks the constant.
    return new StreamCompressor(
      nodeZstdFactory()!({params: {100: level}}),
      `zstd (Node.js zlib, level ${level}, single thread)`,
      options.output,
    )
  }
  return new ZstdProgram(zstd, {...options, threads: options.threads ?? availableParallelism()})
}

class PassThroughCompressor implements BlockCompressor {
  readonly name = 'none (plain tar)'
  takeBlock(): Buffer {
    return Buffer.allocUnsafeSlow(GZIP_BLOCK_SIZE) // written blocks stay referenced by the stream
  }
  constructor(private readonly output: CompressorOptions['output']) {}
  async push(block: Buffer): Promise<void> {
    await this.output(block)
  }
  async end(lastBlock: Buffer): Promise<void> {
    if (lastBlock.length > 0) await this.output(lastBlock)
  }
  async close(): Promise<void> {}
}

/** Below this much tar, worker start-up costs more than it saves (the bytes are the same either way). */
const INLINE_GZIP_BLOCKS = 4

/**
 * Parallel gzip that holds the layer's first blocks before it chooses: a layer that ends within
 * them is deflated on this thread, a larger one on worker threads. The writer streams entries
 * as it lists them, so it cannot know the layer's size beforehand.
 */
class HeldStartGzip implements BlockCompressor {
  private gzip: ParallelGzip | undefined
  private held: Buffer[] = []

  constructor(private readonly options: CompressorOptions) {}

  get name(): string {
    const threads = this.gzip?.threads ?? 0
    return `gzip (zlib ${process.versions.zlib}, ${threads} worker threads, 1 MiB blocks)`
  }

  takeBlock(): Buffer {
    // Never pooled memory: blocks are transferred to workers.
    return this.gzip?.takeBlock() ?? Buffer.allocUnsafeSlow(GZIP_BLOCK_SIZE)
  }

  async push(block: Buffer): Promise<void> {
    if (this.gzip !== undefined) return this.gzip.push(block)
    this.held.push(block)
    if (this.held.length > INLINE_GZIP_BLOCKS) await this.start(this.options.threads)
  }

  async end(lastBlock: Buffer): Promise<void> {
    if (this.gzip === undefined) await this.start(0)
    await this.gzip!.end(lastBlock)
  }

  async close(): Promise<void> {
    await this.gzip?.close()
  }

  private async start(threads: number | undefined): Promise<void> {
    const gzip = new ParallelGzip({...this.options, ...(threads === undefined ? {} : {threads})})
    this.gzip = gzip
    for (const block of this.held.splice(0)) await gzip.push(block)
  }
}

type ZstdSupport = {kind: 'binary'; path: string; version: string} | {kind: 'node'}

/**
 * The `zstd` program first: it runs on all cores, and its multi-threaded output is the same
 * for any thread count. Node's own zstd (22.15+/23.8+) is single-threaded, so it is the fallback.
 */
export function findZstd(): ZstdSupport | undefined {
  const probe = spawnSync('zstd', ['--version'], {encoding: 'utf8'})
  if (probe.status === 0) {
    const version = /v(\d+\.\d+\.\d+)/.exec(probe.stdout)?.[1] ?? 'unknown'
    return {kind: 'binary', path: 'zstd', version}
  }
  if (nodeZstdFactory() !== undefined) return {kind: 'node'}
  return undefined
}

type ZstdFactory = (options: {params: Record<number, number>}) => Transform

function nodeZstdFactory(): ZstdFactory | undefined {
  // @types/node 20 does not declare zstd; newer Node versions have it at runtime.
  const api = zlib as unknown as {createZstdCompress?: ZstdFactory}
  return typeof api.createZstdCompress === 'function' ? api.createZstdCompress.bind(zlib) : undefined
}

/** Byte 9 of a gzip header names the OS that wrote it; 0xff is "unknown", as Go writes it. */
const GZIP_OS_OFFSET = 9
const GZIP_OS_UNKNOWN = 0xff

/** One of zlib's streaming compressors (Node's zstd, or gzip as one stream) on this thread. */
class StreamCompressor implements BlockCompressor {
  takeBlock(): Buffer {
    return Buffer.allocUnsafeSlow(GZIP_BLOCK_SIZE) // written blocks stay referenced by the stream
  }
  private readonly done: Promise<void>

  constructor(
    private readonly stream: Transform,
    readonly name: string,
    output: CompressorOptions['output'],
    /** Edits the first chunk of output in place (zlib emits a whole gzip header in its first chunk). */
    patchFirstChunk?: (chunk: Buffer) => void,
  ) {
    let first = true
    this.done = new Promise<void>((resolve, reject) => {
      this.stream.on('data', (chunk: Buffer) => {
        if (first) {
          first = false
          patchFirstChunk?.(chunk)
        }
        const pending = output(chunk)
        if (pending instanceof Promise) {
          this.stream.pause()
          pending.then(() => this.stream.resume(), reject)
        }
      })
      this.stream.on('error', reject)
      this.stream.on('end', resolve)
    })
    this.done.catch(() => {})
  }

  async push(block: Buffer): Promise<void> {
    if (!this.stream.write(block)) await new Promise((r) => this.stream.once('drain', r))
  }

  async end(lastBlock: Buffer): Promise<void> {
    if (lastBlock.length > 0) await this.push(lastBlock)
    this.stream.end()
    await this.done
  }

  async close(): Promise<void> {
    this.stream.destroy()
  }
}
