/**
 * pigz-style gzip on all cores, with output that depends only on the input bytes and level.
 *
 * The input is cut into fixed 1 MiB blocks (by offset, never by timing). Each block is
 * raw-deflated on its own, primed with the previous block's last 32 KiB as dictionary, and
 * ended with a sync flush so the pieces concatenate into ONE deflate stream; the last block
 * ends with Z_FINISH. One gzip header, the combined CRC-32 and the length close the member.
 * One member rather than one per block: every gzip reader handles it (some tools stop at the
 * end of the first member), and the 2-byte sync markers cost less than 18-byte member headers.
 * A block is compressed the same way on the main thread or in any worker, so the bytes are
 * the same for every core count. (They can differ across Node builds: the deflater is the
 * zlib bundled with Node.)
 */
import {availableParallelism} from 'node:os'
import {Worker} from 'node:worker_threads'
import * as zlib from 'node:zlib'

export const GZIP_BLOCK_SIZE = 1024 * 1024
const WINDOW = 32 * 1024
/** gzip magic, deflate, no flags, mtime 0, no extra flags, OS "unknown": nothing host-specific. */
const GZIP_HEADER = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0xff])

interface BlockJob {
  data: Uint8Array
  dictionary: Uint8Array | undefined
  last: boolean
  level: number
}
interface BlockResult {
  deflated: Uint8Array
  crc: number
  /** The input block, handed back so its memory is reused instead of reallocated. */
  data: Uint8Array
}

/** Inline twin of gzip-worker.cjs's code: same call, same options, so the same bytes. */
function deflateBlock(job: BlockJob): BlockResult {
  const deflated = zlib.deflateRawSync(job.data, {
    level: job.level,
    ...(job.dictionary === undefined ? {} : {dictionary: job.dictionary}),
    finishFlush: job.last ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH,
  })
  return {deflated, crc: crc32(job.data), data: job.data}
}

// The worker's program: plain CommonJS in gzip-worker.cjs (type-checked with // @ts-check), next
// to this file both in src/ (under vitest) and in dist/ (tsc emits it).
const WORKER_URL = new URL('./gzip-worker.cjs', import.meta.url)

/** Table CRC-32 for Node builds before zlib.crc32 (20.15); slow but only a fallback. */
function crc32Fallback(data: Uint8Array): number {
  let crc = 0xffffffff
  for (let i = 0; i < data.length; i++) {
    crc ^= data[i]!
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1
  }
  return (crc ^ 0xffffffff) >>> 0
}
const crc32: (data: Uint8Array) => number =
  typeof zlib.crc32 === 'function' ? (data) => zlib.crc32(data) : crc32Fallback

export interface ParallelGzipOptions {
  level?: number
  /** Worker threads; 0 compresses on the calling thread. Default: available cores. */
  threads?: number
  /** Receives compressed bytes in order; may return a promise to apply backpressure. */
  output: (chunk: Buffer) => void | Promise<void>
}

/** Streams 1 MiB blocks in, gzip bytes out (through `output`), in order. */
export class ParallelGzip {
  readonly threads: number
  private readonly level: number
  private readonly output: ParallelGzipOptions['output']
  private readonly workers: Worker[] = []
  private readonly waiting = new Map<number, {resolve: (r: BlockResult) => void; reject: (e: Error) => void}>()
  private readonly inFlight: Array<{promise: Promise<BlockResult>; length: number}> = []
  private readonly spareBlocks: Buffer[] = []
  private nextId = 0
  private previousTail: Uint8Array | undefined
  private crc = 0
  private length = 0
  private started = false
  private failure: Error | undefined

  constructor(options: ParallelGzipOptions) {
    this.level = options.level ?? 6
    this.threads = options.threads ?? availableParallelism()
    this.output = options.output
  }

  /** An empty GZIP_BLOCK_SIZE block to fill: a returned one when there is one (less GC churn). */
  takeBlock(): Buffer {
    return this.spareBlocks.pop() ?? Buffer.allocUnsafeSlow(GZIP_BLOCK_SIZE)
  }

  /** Adds the next block (exactly GZIP_BLOCK_SIZE bytes unless `last`). Ownership passes here. */
  async push(block: Buffer, last = false): Promise<void> {
    if (!this.started) {
      this.started = true
      await this.output(GZIP_HEADER)
    }
    const dictionary = this.previousTail
    // A copy: the block itself moves to a worker. Only the last block can be shorter.
    this.previousTail = block.length >= WINDOW ? new Uint8Array(block.subarray(block.length - WINDOW)) : undefined
    const length = block.length // read before the block is transferred to a worker
    const job: BlockJob = {data: block, dictionary, last, level: this.level}
    this.inFlight.push({promise: this.compress(job), length})
    // Bounded look-ahead keeps memory flat while every worker has its next block queued.
    while (this.inFlight.length > Math.max(2, this.threads * 8)) await this.emitOldest()
  }

  /** Writes the last block (may be empty) and the gzip trailer, then stops the workers. */
  async end(lastBlock: Buffer): Promise<void> {
    try {
      await this.push(lastBlock, true)
      while (this.inFlight.length > 0) await this.emitOldest()
      const trailer = Buffer.alloc(8)
      trailer.writeUInt32LE(this.crc >>> 0, 0)
      trailer.writeUInt32LE(this.length % 2 ** 32, 4)
      await this.output(trailer)
    } finally {
      await this.close()
    }
  }

  /** Stops the workers; safe to call more than once, and after a failure. */
  async close(): Promise<void> {
    const workers = this.workers.splice(0)
    await Promise.all(workers.map((w) => w.terminate()))
  }

  private async emitOldest(): Promise<void> {
    const {promise, length} = this.inFlight.shift()!
    const result = await promise
    const data = result.data
    if (data.byteOffset === 0 && data.byteLength === GZIP_BLOCK_SIZE)
      this.spareBlocks.push(Buffer.from(data.buffer, 0, GZIP_BLOCK_SIZE))
    this.crc = crc32Combine(this.crc, result.crc, length)
    this.length += length
    await this.output(Buffer.from(result.deflated.buffer, result.deflated.byteOffset, result.deflated.byteLength))
  }

  private compress(job: BlockJob): Promise<BlockResult> {
    if (this.failure !== undefined) return Promise.reject(this.failure)
    if (this.threads === 0) return Promise.resolve(deflateBlock(job))
    const id = this.nextId++
    const promise = new Promise<BlockResult>((resolve, reject) => this.waiting.set(id, {resolve, reject}))
    this.startWorkers()
    // Posted at once, round-robin: a worker's own message queue holds its next blocks, so it
    // never idles while the main thread is busy reading files. Which worker compresses a
    // block does not change its bytes.
    this.workers[id % this.workers.length]!.postMessage({id, job}, [job.data.buffer as ArrayBuffer])
    return promise
  }

  private startWorkers(): void {
    while (this.workers.length < this.threads) {
      const worker = new Worker(WORKER_URL)
      worker.on('message', ({id, result}: {id: number; result: BlockResult}) => {
        const waiter = this.waiting.get(id)
        this.waiting.delete(id)
        waiter?.resolve(result)
      })
      worker.on('error', (error) => this.fail(error))
      this.workers.push(worker)
    }
  }

  private fail(error: Error): void {
    this.failure = error
    for (const waiter of this.waiting.values()) waiter.reject(error)
    this.waiting.clear()
  }
}

// CRC-32 of a concatenation from the parts' CRCs (zlib's crc32_combine, in GF(2) polynomials).
const CRC_POLY = 0xedb88320
const X2N_TABLE: number[] = (() => {
  const table = [1 << 30] // x^1
  for (let n = 1; n < 32; n++) table.push(multModP(table[n - 1]!, table[n - 1]!))
  return table
})()

function multModP(a: number, b: number): number {
  let m = 1 << 31
  let p = 0
  for (;;) {
    if (a & m) {
      p ^= b
      if ((a & (m - 1)) === 0) break
    }
    m >>>= 1
    b = b & 1 ? (b >>> 1) ^ CRC_POLY : b >>> 1
  }
  return p >>> 0
}

/** x^(n * 2^k) modulo the CRC polynomial. */
function x2nModP(n: number, k: number): number {
  let p = 1 << 31 // x^0
  while (n) {
    if (n & 1) p = multModP(X2N_TABLE[k & 31]!, p)
    n = Math.floor(n / 2)
    k++
  }
  return p
}

export function crc32Combine(crcA: number, crcB: number, lengthB: number): number {
  return (multModP(x2nModP(lengthB, 3), crcA) ^ crcB) >>> 0
}
