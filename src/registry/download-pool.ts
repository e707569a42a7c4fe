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
const net = require('node:net')
const {createHash} = require('node:crypto')
const fs = require('node:fs')
const BATCH = 4 * 1024 * 1024
const DIRECT_WRITE = 256 * 1024
// Progress every 4 MiB received: a message per 1 MiB cost ~45 ms of a worker's time on a 210 MB pull.
// Counted as bytes arrive, not as they are written: a blob's small reads are batched up to 4 MiB,
// and counting writes could leave a 5 MiB blob with no report before its end.
const PROGRESS_EVERY = 4 * 1024 * 1024
const SYNC_EVERY = 16 * 1024 * 1024
const IDLE_TIMEOUT_MS = 300000
const MAX_HEAD_BYTES = 64 * 1024
const REDIRECTS = new Set([301, 302, 303, 307, 308])
// One read buffer per worker, reused for every socket read of the plain-HTTP path (see rawGet).
const readBuffer = Buffer.allocUnsafe(1024 * 1024)
const agents = {}
// node:https (and TLS) only when a URL needs it: a worker's start is on the pull's critical path.
let https
function agentFor(url, insecure) {
  https ??= url.protocol === 'https:' ? require('node:https') : undefined
  if (url.protocol === 'http:') return (agents.http ??= new http.Agent({keepAlive: true}))
  if (insecure) return (agents.insecure ??= new https.Agent({keepAlive: true, rejectUnauthorized: false}))
  return (agents.https ??= new https.Agent({keepAlive: true}))
}
const timeoutError = () => Object.assign(new Error('no data for ' + IDLE_TIMEOUT_MS / 1000 + ' s'), {code: 'ETIMEDOUT'})

/**
 * The temp file being filled: hashed as it arrives and written at once (synchronous writes: a
 * copy into the page cache, and the worker has nothing else to do meanwhile).
 */
class Sink {
  constructor(id, job) {
    this.id = id
    this.job = job
    this.fd = fs.openSync(job.tempPath, 'wx', 0o644)
    this.hash = createHash('sha256')
    this.batch = undefined // allocated on the first small chunk
    this.batched = 0
    this.received = 0
    this.unreported = 0
    this.unsynced = 0
    // The early fdatasync in flight, if any: the fd stays open until it is done.
    this.syncing = undefined
  }
  /**
   * Takes a chunk, written before this returns (the caller may reuse it); false once more than
   * the expected size arrived. Large reads are written as they are (a copy into the batch cost
   * as much CPU as the hashing), small ones gathered into 4 MiB writes.
   */
  add(chunk) {
    this.received += chunk.length
    if (this.received > this.job.size) return false
    this.hash.update(chunk)
    this.unreported += chunk.length
    if (this.unreported >= PROGRESS_EVERY) this.report()
    if (chunk.length >= DIRECT_WRITE) {
      this.flush()
      this.write(chunk, chunk.length)
      return true
    }
    this.batch ??= Buffer.allocUnsafe(BATCH)
    for (let offset = 0; offset < chunk.length;) {
      const copied = chunk.copy(this.batch, this.batched, offset)
      this.batched += copied
      offset += copied
      if (this.batched === BATCH) this.flush()
    }
    return true
  }
  flush() {
    if (this.batched === 0) return
    this.write(this.batch, this.batched)
    this.batched = 0
  }
  write(buffer, length) {
    for (let offset = 0; offset < length;) offset += fs.writeSync(this.fd, buffer, offset, length - offset)
    this.unsynced += length
    // Start the disk on what is written so far (asynchronously: the download goes on), so the
    // fsync that ends the blob finds little left to write: 0.74 s -> 0.56 s on a 210 MB pull.
    if (this.unsynced >= SYNC_EVERY && this.syncing === undefined) {
      this.unsynced = 0
      this.syncing = new Promise((resolve) => fs.fdatasync(this.fd, () => resolve())).then(() => {
        this.syncing = undefined
      })
    }
  }
  report() {
    if (this.unreported > 0) parentPort.postMessage({id: this.id, bytes: this.unreported})
    this.unreported = 0
  }
  /** The outcome; the file is fsynced only when it holds what the store will keep. */
  async finish() {
    this.flush()
    this.report()
    const digest = 'sha256:' + this.hash.digest('hex')
    if (this.received === this.job.size && digest === this.job.digest) await new Promise((resolve, reject) => fs.fsync(this.fd, (error) => (error ? reject(error) : resolve())))
    return {kind: 'filled', size: this.received, digest}
  }
  async close() {
    await this.syncing
    fs.closeSync(this.fd)
  }
}

/** GET through node:http(s): TLS, and plain-HTTP answers rawGet does not take (chunked bodies). */
function get(url, headers, insecure) {
  return new Promise((resolve, reject) => {
    const agent = agentFor(url, insecure)
    const send = url.protocol === 'https:' ? https.request : http.request
    const request = send(url, {method: 'GET', headers, agent, timeout: IDLE_TIMEOUT_MS})
    request.on('timeout', () => request.destroy(timeoutError()))
    request.on('error', reject)
    request.on('response', (response) => resolve({
      status: response.statusCode,
      location: response.headers.location,
      discard: () => response.destroy(),
      save: async (sink) => {
        for await (const chunk of response) {
          if (!sink.add(chunk)) {
            response.destroy()
            break
          }
        }
      },
    }))
    request.end()
  })
}

/**
 * GET over a plain socket reading into one reused 1 MiB buffer: each read is hashed and written
 * in the socket's own callback, without node:http's per-chunk buffers and streams (less than
 * half the CPU of get() for a local registry's 84 MB blob). Takes only answers with a
 * Content-Length; anything else is asked again through get().
 */
function rawGet(url, headers) {
  for (const [name, value] of Object.entries(headers)) {
    if (/[\\r\\n]/.test(name + value)) return Promise.reject(new Error('header ' + name + ' holds a line break'))
  }
  const lines = ['GET ' + url.pathname + url.search + ' HTTP/1.1', 'Host: ' + url.host, ...Object.entries(headers).map(([name, value]) => name + ': ' + value), 'Connection: close']
  return new Promise((resolve, reject) => {
    let head = Buffer.alloc(0)
    let answered = false
    // Body bytes go to onBody once save() is called; until then they are kept (copied: the read buffer is reused).
    let onBody = (data) => early.push(Buffer.from(data))
    const early = []
    // How the connection ended, for a save() that starts after it did.
    let closed = false
    let failure
    let onEnd = () => undefined
    const socket = net.connect({
      host: url.hostname.replace(/^\\[|\\]$/g, ''),
      port: Number(url.port || 80),
      onread: {
        buffer: readBuffer,
        callback: (length, buffer) => {
          let data = buffer.subarray(0, length)
          if (!answered) {
            head = Buffer.concat([head, data])
            const end = head.indexOf('\\r\\n\\r\\n')
            if (end === -1) {
              if (head.length > MAX_HEAD_BYTES) socket.destroy(new Error('the response head exceeds ' + MAX_HEAD_BYTES + ' bytes'))
              return
            }
            const answer = parseHead(head.subarray(0, end).toString('latin1'))
            if (answer === undefined) return socket.destroy(new Error('not an HTTP/1.1 response'))
            answered = true
            data = head.subarray(end + 4)
            head = undefined
            resolve(respond(answer))
          }
          if (data.length > 0) onBody(data)
        },
      },
    })
    socket.setTimeout(IDLE_TIMEOUT_MS, () => socket.destroy(timeoutError()))
    socket.on('connect', () => socket.write(lines.join('\\r\\n') + '\\r\\n\\r\\n'))
    socket.on('error', (error) => {
      failure = error
    })
    socket.on('close', () => {
      closed = true
      if (!answered) reject(failure ?? Object.assign(new Error('the connection closed before the response'), {code: 'ECONNRESET'}))
      onEnd()
    })
    function respond({status, location, length}) {
      return {
        status,
        location,
        chunked: length === undefined,
        discard: () => socket.destroy(),
        save: (sink) => new Promise((done, failed) => {
          // One byte past the expected size is enough to know the blob is wrong.
          let left = Math.min(length, sink.job.size + 1)
          let finished = false
          const finish = () => {
            if (finished) return
            finished = true
            onBody = () => undefined
            socket.destroy()
            done()
          }
          onEnd = () => {
            if (left > 0) failed(failure ?? Object.assign(new Error('the connection closed ' + left + ' bytes before the end of the body'), {code: 'ECONNRESET'}))
          }
          onBody = (data) => {
            const part = data.length > left ? data.subarray(0, left) : data
            left -= part.length
            if (!sink.add(part) || left === 0) finish()
          }
          for (const data of early.splice(0)) if (left > 0) onBody(data)
          if (left === 0) finish()
          else if (closed) onEnd()
        }),
      }
    }
  })
}

/** Status, Location and Content-Length of a response head; length undefined for chunked or unsized bodies. */
function parseHead(text) {
  const [statusLine, ...fields] = text.split('\\r\\n')
  const match = /^HTTP\\/1\\.[01] (\\d{3})/.exec(statusLine)
  if (!match) return undefined
  const header = {}
  for (const field of fields) {
    const colon = field.indexOf(':')
    if (colon > 0) header[field.slice(0, colon).trim().toLowerCase()] = field.slice(colon + 1).trim()
  }
  const length = header['transfer-encoding'] === undefined && /^\\d+$/.test(header['content-length'] ?? '') ? Number(header['content-length']) : undefined
  return {status: Number(match[1]), location: header.location, length}
}

// Redirects are followed as http.ts does: Authorization never goes to another origin.
async function download(id, job) {
  let url = new URL(job.url)
  let headers = job.headers
  for (let redirects = 0; ; redirects++) {
    let response = url.protocol === 'http:' ? await rawGet(url, headers) : await get(url, headers, job.insecure)
    if (response.chunked && response.status === 200) {
      response.discard()
      response = await get(url, headers, job.insecure)
    }
    const {status, location} = response
    if (REDIRECTS.has(status) && location && redirects < 10) {
      response.discard()
      const next = new URL(location, url)
      if (next.origin !== url.origin) headers = Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== 'authorization'))
      url = next
      continue
    }
    if (status !== 200) {
      response.discard()
      return {kind: 'status', status}
    }
    const sink = new Sink(id, job)
    try {
      await response.save(sink)
      return await sink.finish()
    } finally {
      await sink.close()
    }
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
    const worker = new Worker(WORKER_SOURCE, {eval: true})
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
  return pool.run({url: request.url.href, headers: request.headers ?? {}, insecure: request.insecure === true, tempPath, size, digest}, onBytes)
}
