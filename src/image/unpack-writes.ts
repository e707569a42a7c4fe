/**
 * File contents written on libuv's threadpool while the main thread goes on to the next tar
 * entries. Writing into the page cache is most of an unpack's CPU (for OpenClaw's root, three
 * quarters of the bytes are in 1,100 files of 64 KiB or more); this lets it run on the other
 * core. Only data goes through here: every path operation (create, link, remove) stays
 * synchronous and in tar order on the main thread, and a write lands in the inode the main
 * thread opened, whatever happens to its name afterwards.
 */
import {closeSync, write} from 'node:fs'

import {AegisError, messageOf} from '../errors.js'

/** Bytes given to this class and not yet written: the tar stream waits above this. */
const MAX_IN_FLIGHT_BYTES = 32 * 1024 * 1024
/**
 * Writes on the threadpool at once. Its four threads also decompress the layer and read the
 * blob, and a job queued behind dozens of writes would leave the main thread waiting for data.
 */
const MAX_RUNNING_WRITES = 2

export class BackgroundWrites {
  private inFlightBytes = 0
  private readonly files = new Set<Promise<void>>()
  private failure: unknown
  private waiting: (() => void) | undefined
  private running = 0
  private readonly queued: (() => void)[] = []

  /**
   * Writes `pieces` (the content of layer entry `name`, possibly still arriving) to `fd`, then
   * runs `finish(fd)` (owner, mode, times) and closes `fd`, which belongs to this class from now
   * on. Throws the first failure of any file so far.
   */
  async add(name: string, fd: number, pieces: AsyncIterable<Buffer>, finish: (fd: number) => void): Promise<void> {
    const fail = (error: unknown): void => {
      this.failure ??= new AegisError(`cannot unpack layer entry "${name}": ${messageOf(error)}`, {cause: error})
      this.wake()
    }
    const writes: Promise<void>[] = []
    let position = 0
    try {
      for await (const piece of pieces) {
        if (this.failure !== undefined) break
        if (piece.length === 0) continue
        writes.push(this.writeAll(fd, piece, position))
        position += piece.length
        if (this.inFlightBytes > MAX_IN_FLIGHT_BYTES) await new Promise<void>((resolve) => (this.waiting = resolve))
      }
    } catch (error) {
      fail(error)
    }
    // allSettled, not all: the descriptor is closed only once no write can still use its number.
    const file = Promise.allSettled(writes).then((settled) => {
      try {
        const failed = settled.find((result): result is PromiseRejectedResult => result.status === 'rejected')
        if (failed !== undefined) fail(failed.reason)
        else if (this.failure === undefined) finish(fd)
      } catch (error) {
        fail(error)
      } finally {
        this.files.delete(file)
        try {
          closeSync(fd)
        } catch (error) {
          fail(error)
        }
      }
    })
    this.files.add(file)
    if (this.failure !== undefined) throw this.failure
  }

  /** Waits for every file; throws the first error any of them met. */
  async drain(): Promise<void> {
    await this.settle()
    if (this.failure !== undefined) throw this.failure
  }

  /** Waits for every file (their descriptors closed), errors or not. */
  async settle(): Promise<void> {
    while (this.files.size > 0) await Promise.all(this.files)
  }

  private writeAll(fd: number, buffer: Buffer, position: number): Promise<void> {
    this.inFlightBytes += buffer.length
    return new Promise<void>((resolve, reject) => {
      const start = (): void => {
        this.running++
        const next = (offset: number): void => {
          write(fd, buffer, offset, buffer.length - offset, position + offset, (error, written) => {
            if (!error && written > 0 && offset + written < buffer.length) return next(offset + written)
            this.running--
            this.queued.shift()?.()
            this.inFlightBytes -= buffer.length
            if (this.inFlightBytes <= MAX_IN_FLIGHT_BYTES / 2) this.wake()
            if (error) reject(error)
            else if (written === 0) reject(new Error('write wrote nothing'))
            else resolve()
          })
        }
        next(0)
      }
      if (this.running < MAX_RUNNING_WRITES) start()
      else this.queued.push(start)
    })
  }

  private wake(): void {
    this.waiting?.()
    this.waiting = undefined
  }
}
