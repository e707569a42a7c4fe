/**
 * Large blob downloads in worker threads: each worker sends the GET, hashes the body and writes
 * the store's temp file, so a pull's HTTP parsing, sha256 and file writes use both cores instead
 * of one (on the main thread they were ~0.5 s of a 210 MB pull). The store still decides: it
 * renames the temp file into place only when the size and digest the worker measured match.
 * At most two workers, started on the first large blob, so commands without one pay nothing.
 */
import {Worker} from 'node:worker_threads'
import {AegisError} from '../errors.js'
import {TOO_MANY_REDIRECTS} from './http-core.cjs'
import {deadlineError, deadlineFor, registryTimeouts, type RegistryRequest} from './http.js'

const POOL_SIZE = 2

export interface DownloadJob {
  request: RegistryRequest
  tempPath: string
  /** The expected size: the worker stops reading after one byte more. */
  size: number
  /** The expected digest: the worker fsyncs only a match (the store checks again before keeping it). */
  digest: string
}

/** `filled`: the temp file holds what the registry sent (to be verified); `status`: the answer was not a 200 and nothing was written. */
export type DownloadOutcome = {kind: 'filled'; size: number; digest: string} | {kind: 'status'; status: number}

// The worker's program: plain CommonJS in download-worker.cjs (type-checked with // @ts-check),
// next to this file both in src/ (under vitest) and in dist/ (tsc emits it), and nothing to load
// but Node's own modules.
const WORKER_URL = new URL('./download-worker.cjs', import.meta.url)

/** Posted to a worker: download-worker.cjs's WorkerJob typedef mirrors it. */
interface WorkerJob {
  url: string
  headers: Record<string, string>
  insecure: boolean
  tempPath: string
  size: number
  digest: string
  idleMs: number
  /** The whole download's time, from when the worker takes it. */
  deadlineMs: number
}

type WorkerMessage =
  | {ready: true}
  | {id: number; bytes: number}
  | {id: number; outcome: DownloadOutcome}
  | {id: number; error: {message: string; code?: string}}

interface Waiter {
  resolve: (outcome: DownloadOutcome) => void
  reject: (error: Error) => void
  onBytes: (bytes: number) => void
}

interface Queued extends Waiter {
  job: WorkerJob
}

interface Slot {
  worker: Worker
  /** Started and listening: jobs wait in the pool's queue until then, so the largest goes first. */
  ready: boolean
  /** The download it is running, if any. */
  current?: number
}

/**
 * One download per worker at a time, the largest queued first: the biggest layer, whose single
 * stream bounds the pull, starts at once and runs alone on its thread, while the other worker
 * works through the rest (with two streams per worker, the largest finished last, ~0.2 s after the others, alone on one core).
 */
class DownloadPool {
  private readonly slots: Slot[] = []
  private readonly queue: Queued[] = []
  private readonly running = new Map<number, Queued & {slot: Slot}>()
  private nextId = 0

  run(job: WorkerJob, onBytes: (bytes: number) => void): Promise<DownloadOutcome> {
    return new Promise<DownloadOutcome>((resolve, reject) => {
      this.queue.push({job, resolve, reject, onBytes})
      this.queue.sort((a, b) => b.job.size - a.job.size)
      this.dispatch()
    })
  }

  private dispatch(): void {
    for (let slot = this.idleSlot(); slot && this.queue.length > 0; slot = this.idleSlot()) {
      const next = this.queue.shift()!
      const id = this.nextId++
      slot.current = id
      slot.worker.ref()
      this.running.set(id, {...next, slot})
      slot.worker.postMessage({id, job: next.job})
    }
    const starting = this.slots.filter((slot) => !slot.ready)
    if (this.queue.length > starting.length && this.slots.length < POOL_SIZE) this.startWorker()
    // Queued downloads keep the process alive while their workers boot.
    if (this.queue.length > 0) for (const slot of this.slots) if (!slot.ready) slot.worker.ref()
  }

  private idleSlot(): Slot | undefined {
    return this.slots.find((slot) => slot.ready && slot.current === undefined)
  }

  /** Starts every worker now, idle: a pull calls this before its manifest requests, so they boot meanwhile. */
  prewarm(): void {
    while (this.slots.length < POOL_SIZE) this.startWorker()
  }

  private startWorker(): void {
    const worker = new Worker(WORKER_URL)
    worker.unref() // Until it has a download: a worker booting for nothing must not delay the exit.
    const slot: Slot = {worker, ready: false}
    worker.on('message', (message: WorkerMessage) => {
      if ('ready' in message) {
        slot.ready = true
        this.dispatch()
        if (slot.current === undefined) worker.unref() // The other worker took the work: idle must not keep the process alive.
        return
      }
      const waiter = this.running.get(message.id)
      if (!waiter) return
      if ('bytes' in message) {
        waiter.onBytes(message.bytes)
        return
      }
      this.release(message.id, slot)
      if ('outcome' in message) waiter.resolve(message.outcome)
      else if (message.error.code === 'EDEADLINE')
        waiter.reject(deadlineError('GET', new URL(waiter.job.url), waiter.job.deadlineMs))
      // The error http.ts throws for the same chain: not retried, and not asked again on the main thread.
      else if (message.error.code === TOO_MANY_REDIRECTS) waiter.reject(new AegisError(message.error.message))
      else
        waiter.reject(
          Object.assign(
            new Error(message.error.message),
            message.error.code === undefined ? {} : {code: message.error.code},
          ),
        )
      this.dispatch()
    })
    // A crashed worker fails its download and leaves the pool; queued downloads go to a new one.
    worker.on('error', (error) => this.drop(slot, error))
    worker.on('exit', (code) => this.drop(slot, new Error(`download worker exited with code ${code}`)))
    this.slots.push(slot)
  }

  private release(id: number, slot: Slot): void {
    this.running.delete(id)
    slot.current = undefined
    slot.worker.unref() // An idle worker must not keep the process alive.
  }

  private drop(slot: Slot, error: Error): void {
    const index = this.slots.indexOf(slot)
    if (index === -1) return
    this.slots.splice(index, 1)
    const id = slot.current
    const waiter = id === undefined ? undefined : this.running.get(id)
    if (id !== undefined && waiter) {
      this.release(id, slot)
      waiter.reject(error)
    }
    // A worker that could not even start would fail again: fail what waits instead of looping.
    if (!slot.ready) for (const queued of this.queue.splice(0)) queued.reject(error)
    this.dispatch()
  }
}

let pool: DownloadPool | undefined

/**
 * Boots the download workers ahead of the first large blob (~40-70 ms each, on the other core
 * while the main thread asks for manifests). A pull of small blobs only leaves them idle.
 */
export function prewarmDownloadWorkers(): void {
  pool ??= new DownloadPool()
  pool.prewarm()
}

/** Downloads `job.request` into `job.tempPath` on a worker thread; `onBytes` hears of each batch written. */
export function downloadInWorker(job: DownloadJob, onBytes: (bytes: number) => void): Promise<DownloadOutcome> {
  pool ??= new DownloadPool()
  const {request, tempPath, size, digest} = job
  const timeouts = registryTimeouts()
  const deadlineMs = deadlineFor(size, timeouts)
  return pool.run(
    {
      url: request.url.href,
      headers: request.headers ?? {},
      insecure: request.insecure === true,
      tempPath,
      size,
      digest,
      idleMs: timeouts.idleMs,
      deadlineMs,
    },
    onBytes,
  )
}
