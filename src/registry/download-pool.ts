/**
 * Large blob downloads in worker threads: each worker sends the GET, hashes the body and writes
 * the store's temp file, so a pull's HTTP parsing, sha256 and file writes use both cores instead
 * of one (on the main thread they were ~0.5 s of a 210 MB pull). The store still decides: it
 * renames the temp file into place only when the size and digest the worker measured match.
 * At most two workers, started on the first large blob, so commands without one pay nothing.
 */
import {Worker} from 'node:worker_threads'
import type {RegistryRequest} from './http.js'

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

// Plain CommonJS evaluated by `new Worker(..., {eval: true})`: no file to locate (src/ under
// vitest, dist/ otherwise), and nothing to load but Node's own modules. Redirects are followed
// as http.ts does: Authorization never goes to another origin.
const WORKER_SOURCE = `
const {parentPort} = require('node:worker_threads')
const http = require('node:http')
const {createHash} = require('node:crypto')
const fs = require('node:fs')
const BATCH = 1024 * 1024
// Progress every 4 MiB: a message per 1 MiB batch cost ~45 ms of a worker's time on a 210 MB pull.
const PROGRESS_EVERY = 4 * BATCH
const IDLE_TIMEOUT_MS = 300000
const agents = {}
// node:https (and TLS) only when a URL needs it: a worker's start is on the pull's critical path.
let https
function agentFor(url, insecure) {
  https ??= url.protocol === 'https:' ? require('node:https') : undefined
  if (url.protocol === 'http:') return (agents.http ??= new http.Agent({keepAlive: true}))
  if (insecure) return (agents.insecure ??= new https.Agent({keepAlive: true, rejectUnauthorized: false}))
  return (agents.https ??= new https.Agent({keepAlive: true}))
}
function get(url, headers, insecure) {
  return new Promise((resolve, reject) => {
    const agent = agentFor(url, insecure)
    const send = url.protocol === 'https:' ? https.request : http.request
    const request = send(url, {method: 'GET', headers, agent, timeout: IDLE_TIMEOUT_MS})
    request.on('timeout', () => request.destroy(Object.assign(new Error('no data for ' + IDLE_TIMEOUT_MS / 1000 + ' s'), {code: 'ETIMEDOUT'})))
    request.on('error', reject)
    request.on('response', resolve)
    request.end()
  })
}
async function download(id, job) {
  let url = new URL(job.url)
  let headers = job.headers
  for (let redirects = 0; ; redirects++) {
    const response = await get(url, headers, job.insecure)
    const status = response.statusCode
    const location = response.headers.location
    if ((status === 301 || status === 302 || status === 303 || status === 307 || status === 308) && location && redirects < 10) {
      response.resume()
      const next = new URL(location, url)
      if (next.origin !== url.origin) headers = Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== 'authorization'))
      url = next
      continue
    }
    if (status !== 200) {
      response.destroy()
      return {kind: 'status', status}
    }
    return save(id, job, response)
  }
}
async function save(id, job, response) {
  const fd = fs.openSync(job.tempPath, 'wx', 0o644)
  const hash = createHash('sha256')
  let received = 0
  let pending = []
  let pendingBytes = 0
  let unreported = 0
  const report = () => {
    if (unreported > 0) parentPort.postMessage({id, bytes: unreported})
    unreported = 0
  }
  // Synchronous writes: a copy into the page cache, and the worker has nothing else to do meanwhile.
  const flush = () => {
    const written = fs.writevSync(fd, pending)
    if (written < pendingBytes) {
      const rest = Buffer.concat(pending).subarray(written)
      for (let offset = 0; offset < rest.length;) offset += fs.writeSync(fd, rest, offset)
    }
    unreported += pendingBytes
    if (unreported >= PROGRESS_EVERY) report()
    pending = []
    pendingBytes = 0
  }
  try {
    for await (const chunk of response) {
      received += chunk.length
      if (received > job.size) {
        response.destroy()
        break
      }
      hash.update(chunk)
      pending.push(chunk)
      pendingBytes += chunk.length
      if (pendingBytes >= BATCH) flush()
    }
    if (pendingBytes > 0) flush()
    report()
    const digest = 'sha256:' + hash.digest('hex')
    // Only content the store will keep is worth an fsync. Asynchronous: the worker's other
    // download goes on while the disk catches up (a synchronous one stalled it ~70 ms per worker).
    if (received === job.size && digest === job.digest) await new Promise((resolve, reject) => fs.fsync(fd, (error) => (error ? reject(error) : resolve())))
    return {kind: 'filled', size: received, digest}
  } finally {
    fs.closeSync(fd)
  }
}
parentPort.postMessage({ready: true})
parentPort.on('message', ({id, job}) => {
  download(id, job).then(
    (outcome) => parentPort.postMessage({id, outcome}),
    (error) => parentPort.postMessage({id, error: {message: String(error && error.message || error), code: error && error.code}}),
  )
})
`

interface WorkerJob {
  url: string
  headers: Record<string, string>
  insecure: boolean
  tempPath: string
  size: number
  digest: string
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
  private readonly running = new Map<number, Waiter & {slot: Slot}>()
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
    const starting = this.slots.filter((slot) => !slot.ready).length
    if (this.queue.length > starting && this.slots.length < POOL_SIZE) this.startWorker()
  }

  private idleSlot(): Slot | undefined {
    return this.slots.find((slot) => slot.ready && slot.current === undefined)
  }

  private startWorker(): void {
    const worker = new Worker(WORKER_SOURCE, {eval: true})
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
      else waiter.reject(Object.assign(new Error(message.error.message), message.error.code === undefined ? {} : {code: message.error.code}))
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

/** Downloads `job.request` into `job.tempPath` on a worker thread; `onBytes` hears of each batch written. */
export function downloadInWorker(job: DownloadJob, onBytes: (bytes: number) => void): Promise<DownloadOutcome> {
  pool ??= new DownloadPool()
  const {request, tempPath, size, digest} = job
  return pool.run({url: request.url.href, headers: request.headers ?? {}, insecure: request.insecure === true, tempPath, size, digest}, onBytes)
}
