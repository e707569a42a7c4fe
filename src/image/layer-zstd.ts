/**
 * zstd through the `zstd` program, fed from a worker thread. The main thread reads files with
 * synchronous calls, so its event loop cannot pump a pipe meanwhile: feeding zstd from it
 * would leave zstd idle while files are read, and the reader idle while zstd works. The
 * worker owns the child's pipes; the main thread only posts blocks. When the blob goes to a
 * file, the worker also writes and hashes zstd's output itself (thousands of 64 KiB chunks that
 * would otherwise cross to the main thread, the one doing the tar work); else it posts them.
 * The worker hashes the tar too (the diffId), so the main thread only reads files and frames
 * the tar: it is the pipeline's critical path, and the worker mostly waits on the pipe.
 */
import {Worker} from 'node:worker_threads'

import {AegisError} from '../errors.js'
import type {BlockCompressor, CompressorOptions} from './layer-compress.js'

/**
 * Blocks of tar posted to the pump: 4 MiB, so a 500 MB layer is ~150 messages and acks rather
 * than ~600 (zstd's output does not depend on how its input arrives).
 */
const ZSTD_BLOCK_SIZE = 4 * 1024 * 1024
/** Blocks posted but not yet taken by zstd's stdin; enough to cover a burst of file reads. */
const MAX_BLOCKS_IN_FLIGHT = 4

// The pump's program: plain CommonJS in zstd-pump-worker.cjs (type-checked with // @ts-check),
// next to this file both in src/ (under vitest) and in dist/ (tsc emits it).
const PUMP_URL = new URL('./zstd-pump-worker.cjs', import.meta.url)

type PumpMessage =
  | {type: 'data'; chunk: Uint8Array}
  | {type: 'ack'; block: Uint8Array}
  | {type: 'pid'; pid: number | undefined}
  | {type: 'exit'; code: number | null; stderr: string; written?: {digest: string; size: number}; input?: string}

export class ZstdProgram implements BlockCompressor {
  readonly name: string
  private readonly worker: Worker
  private readonly done: Promise<void>
  private outputChain: Promise<void> = Promise.resolve()
  private inFlight = 0
  private wakeWriter: (() => void) | undefined
  private finished = false
  private childPid: number | undefined
  private readonly spareBlocks: Buffer[] = []
  private written: {digest: string; size: number} | undefined
  private inputHash: string | undefined

  constructor(program: {path: string; version: string}, options: CompressorOptions & {threads: number}) {
    const level = options.level ?? 3
    const threads = Math.max(1, options.threads)
    // zstd's multi-threaded output is the same for every -T value (checked in the tests).
    const args = ['-q', '-c', `-${level}`, `-T${threads}`]
    this.name = `zstd (zstd ${program.version} program, ${args.slice(2).join(' ')})`
    this.worker = new Worker(PUMP_URL, {workerData: {program: program.path, args, outputFd: options.outputFd}})
    this.done = new Promise<void>((resolve, reject) => {
      this.worker.on('message', (message: PumpMessage) => {
        if (message.type === 'data') {
          const chunk = Buffer.from(message.chunk.buffer, message.chunk.byteOffset, message.chunk.byteLength)
          // Chunks stay in order even when the output applies backpressure.
          this.outputChain = this.outputChain.then(() => options.output(chunk))
          this.outputChain.catch(reject)
        } else if (message.type === 'pid') {
          this.childPid = message.pid
        } else if (message.type === 'ack') {
          const block = message.block
          if (block.byteOffset === 0 && block.byteLength === ZSTD_BLOCK_SIZE)
            this.spareBlocks.push(Buffer.from(block.buffer, 0, ZSTD_BLOCK_SIZE))
          this.inFlight--
          this.wake()
        } else {
          this.finished = true
          this.written = message.written
          this.inputHash = message.input
          this.wake()
          if (message.code === 0) this.outputChain.then(() => resolve(), reject)
          else reject(new AegisError(`zstd failed (exit ${message.code}): ${message.stderr.trim()}`))
        }
      })
      this.worker.on('error', reject)
    })
    this.done.catch(() => {}) // observed in push()/end()
  }

  /** What went to `outputFd`, once zstd has exited: the blob's digest and size. */
  writtenOutput(): {digest: string; size: number} | undefined {
    return this.written
  }

  /** The tar's sha256, hashed by the worker as it fed zstd; known once zstd has exited. */
  inputDigest(): string {
    if (this.inputHash === undefined) throw new AegisError('zstd pump ended without the tar digest')
    return this.inputHash
  }

  takeBlock(): Buffer {
    // Never pooled memory: blocks are transferred to the worker and back.
    return this.spareBlocks.pop() ?? Buffer.allocUnsafeSlow(ZSTD_BLOCK_SIZE)
  }

  async push(block: Buffer): Promise<void> {
    this.worker.postMessage({type: 'block', data: block}, [block.buffer as ArrayBuffer])
    this.inFlight++
    while (this.inFlight > MAX_BLOCKS_IN_FLIGHT && !this.finished) {
      await new Promise<void>((resolve) => (this.wakeWriter = resolve))
    }
    if (this.finished) await this.done // zstd exited early: surface its error
  }

  async end(lastBlock: Buffer): Promise<void> {
    try {
      if (lastBlock.length > 0) {
        const own = Buffer.allocUnsafeSlow(lastBlock.length) // never pooled memory: it is transferred
        lastBlock.copy(own)
        await this.push(own)
      }
      this.worker.postMessage({type: 'end'})
      await this.done
    } finally {
      await this.close()
    }
  }

  /** Stops the worker, and the zstd process it started when that is still running (after a failure). */
  async close(): Promise<void> {
    if (!this.finished && this.childPid !== undefined) {
      try {
        process.kill(this.childPid)
      } catch {
        // already gone
      }
    }
    await this.worker.terminate()
  }

  private wake(): void {
    const wake = this.wakeWriter
    this.wakeWriter = undefined
    wake?.()
  }
}
