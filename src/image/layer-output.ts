/**
 * The two ends of writing a layer: the tar stream cut into compressor-sized blocks (hashing the
 * diffId on the way), and the blob's destination (hashing the digest on the way).
 */
import {createHash, type Hash} from 'node:crypto'
import {closeSync, openSync, readSync, unlinkSync, writeSync} from 'node:fs'

import {AegisError, messageOf} from '../errors.js'
import type {BlockCompressor} from './layer-compress.js'
import {TAR_BLOCK, type TarHeader, type TarHeaderStyle, encodeTarHeader, writePlainPosixHeader} from './layer-tar.js'

/** Completed tar blocks held before handing them to the compressor: at once, so workers never wait. */
export const MAX_PENDING_BLOCKS = 1
/** Tar padding is never longer than a tar block: one shared run of zeros serves every file. */
const ZEROS = Buffer.alloc(512)

/**
 * The tar byte stream cut into fixed-size blocks for the compressor, with the diffId hashed
 * on the way. Writes are synchronous; the caller awaits `drain()` only when blocks pile up,
 * so a small file costs no promise at all.
 */
export class TarBlocks {
  private block: Buffer
  private used = 0
  private readonly completed: Buffer[] = []
  /** Undefined when the compressor hashes the tar itself (off this thread). */
  private readonly diffHash: Hash | undefined
  private total = 0

  constructor(private readonly compressor: BlockCompressor) {
    this.block = compressor.takeBlock()
    this.diffHash = compressor.inputDigest === undefined ? createHash('sha256') : undefined
  }

  get pendingBlocks(): number {
    return this.completed.length
  }

  put(bytes: Buffer): void {
    let offset = 0
    while (offset < bytes.length) {
      const n = bytes.copy(this.block, this.used, offset)
      offset += n
      this.advance(n)
    }
  }

  /**
   * An entry's header. A plain posix one is written straight into the block: the stream is at a
   * 512-byte boundary between entries and blocks are whole multiples of 512, so it always fits.
   */
  putHeader(header: TarHeader, style: TarHeaderStyle = 'posix'): void {
    if (style === 'posix' && writePlainPosixHeader(this.block, this.used, header)) this.advance(TAR_BLOCK)
    else this.put(encodeTarHeader(header, style))
  }

  putZeros(count: number): void {
    while (count > 0) {
      const n = Math.min(count, ZEROS.length)
      this.put(ZEROS.subarray(0, n))
      count -= n
    }
  }

  /** Reads a file straight into the blocks: no intermediate buffers, one read per block at most. */
  async putFile(hostPath: string, size: number): Promise<void> {
    let fd: number
    try {
      fd = openSync(hostPath, 'r')
    } catch (error) {
      throw new AegisError(`cannot read "${hostPath}" for the layer: ${messageOf(error)}`, {cause: error})
    }
    try {
      let remaining = size
      while (remaining > 0) {
        const n = readSync(fd, this.block, this.used, Math.min(remaining, this.block.length - this.used), null)
        if (n === 0) throw new AegisError(`"${hostPath}" shrank while the layer was written (expected ${size} bytes)`)
        remaining -= n
        this.advance(n)
        if (this.completed.length >= MAX_PENDING_BLOCKS) await this.drain()
      }
    } finally {
      closeSync(fd)
    }
  }

  async drain(): Promise<void> {
    while (this.completed.length > 0) await this.compressor.push(this.completed.shift()!)
  }

  async end(): Promise<{diffId: string; uncompressedSize: number}> {
    await this.drain()
    const last = this.block.subarray(0, this.used)
    const uncompressedSize = this.total + this.used
    this.diffHash?.update(last)
    await this.compressor.end(last)
    const diffId =
      this.diffHash === undefined ? this.compressor.inputDigest!() : `sha256:${this.diffHash.digest('hex')}`
    return {diffId, uncompressedSize}
  }

  private advance(n: number): void {
    this.used += n
    if (this.used < this.block.length) return
    this.diffHash?.update(this.block)
    this.total += this.block.length
    this.completed.push(this.block)
    this.block = this.compressor.takeBlock()
    this.used = 0
  }
}

/**
 * Where the blob goes, hashing and counting it on the way, unless told the blob is the tar
 * itself (no compression): then its digest is the diffId, and hashing it twice costs a second
 * pass over every byte.
 */
export class BlobOutput {
  private readonly hash: Hash | undefined
  private size = 0
  private readonly fd: number | undefined
  private readonly path: string | undefined
  private readonly stream: NodeJS.WritableStream | undefined
  private streamError: Error | undefined
  private adopted: {digest: string; size: number} | undefined

  constructor(destination: string | NodeJS.WritableStream, options: {blobIsInput?: boolean} = {}) {
    this.hash = options.blobIsInput ? undefined : createHash('sha256')
    if (typeof destination === 'string') {
      this.fd = openSync(destination, 'w')
      this.path = destination
    } else {
      this.stream = destination
      // Without a listener a stream error would crash the process; it fails the write instead.
      destination.on('error', (error: Error) => (this.streamError ??= error))
    }
  }

  /** The file descriptor when the blob goes to a file, for a compressor that writes it itself. */
  get fileDescriptor(): number | undefined {
    return this.fd
  }

  /** The compressor wrote the file itself and says what went in. */
  adopt(written: {digest: string; size: number}): void {
    this.adopted = written
  }

  write(chunk: Buffer): void | Promise<void> {
    this.hash?.update(chunk)
    this.size += chunk.length
    if (this.fd !== undefined) {
      for (let off = 0; off < chunk.length; ) off += writeSync(this.fd, chunk, off)
      return
    }
    const stream = this.stream!
    if (this.streamError !== undefined) throw this.failure()
    if (stream.write(chunk)) return
    return new Promise<void>((resolve, reject) => {
      const settle = (): void => {
        stream.off('drain', settle)
        stream.off('error', settle)
        if (this.streamError !== undefined) reject(this.failure())
        else resolve()
      }
      stream.on('drain', settle)
      stream.on('error', settle)
    })
  }

  /** `inputDigest`: the tar's digest, which is the blob's when the blob is the tar. */
  async close(inputDigest: string): Promise<{digest: string; size: number}> {
    if (this.adopted !== undefined && this.fd !== undefined) {
      closeSync(this.fd)
      return this.adopted
    }
    if (this.fd !== undefined) closeSync(this.fd)
    else {
      const stream = this.stream!
      await new Promise<void>((resolve, reject) => {
        if (this.streamError !== undefined) return reject(this.failure())
        stream.once('error', () => reject(this.failure()))
        stream.end(() => resolve())
      })
    }
    return {digest: this.hash === undefined ? inputDigest : `sha256:${this.hash.digest('hex')}`, size: this.size}
  }

  /** Leaves no partial file behind. */
  abort(): void {
    if (this.fd === undefined || this.path === undefined) return
    closeSync(this.fd)
    try {
      unlinkSync(this.path)
    } catch {
      // already gone
    }
  }

  private failure(): AegisError {
    return new AegisError(`cannot write the layer: ${messageOf(this.streamError)}`, {cause: this.streamError})
  }
}
