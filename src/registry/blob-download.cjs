// @ts-check
/**
 * A large blob's download for direct-download.ts: GETs `job.url`, hashes the body and writes it
 * to `job.tempPath` as it arrives, reporting progress through `onBytes`. Plain-HTTP bodies are
 * read off the socket into one reused buffer (rawGet), without node:http's per-chunk buffers and
 * streams. It ran on two worker threads until 2026-12-07; on these 2 cores their start cost more
 * than their parallel hashing gave (docs/performance.md, "a pull without worker threads"), so it
 * runs on the main thread. Still CommonJS with JSDoc types, as it was written for a worker, beside
 * http-core.cjs; tsc checks it (allowJs + checkJs).
 */

/**
 * A download as direct-download.ts gives it.
 * @typedef {object} BlobDownloadJob
 * @property {string} url
 * @property {Record<string, string>} headers
 * @property {boolean} insecure
 * @property {string} tempPath
 * @property {number} size
 * @property {string} digest
 * @property {number} idleMs
 * @property {number} deadlineMs
 */

/**
 * How it ended (direct-download.ts's DownloadOutcome).
 * @typedef {{kind: 'filled', size: number, digest: string} | {kind: 'status', status: number}} Outcome
 */

/**
 * An answer of get() or rawGet(): the body is read only by save(), or dropped by discard().
 * @typedef {object} Response
 * @property {number} status
 * @property {string | undefined} location
 * @property {boolean} [chunked] rawGet() only: the body has no Content-Length, so get() must ask again.
 * @property {() => void} discard
 * @property {(sink: Sink) => Promise<void>} save
 */

/**
 * A response head as parseHead() reads it.
 * @typedef {object} Head
 * @property {number} status
 * @property {string | undefined} location
 * @property {number | undefined} length undefined for chunked or unsized bodies
 */

/** @typedef {Error & {code: string}} CodedError */

const http = require('node:http')
const net = require('node:net')
const {createHash} = require('node:crypto')
const fs = require('node:fs')
const {TOO_MANY_REDIRECTS, idleTimeoutError, keepAliveAgents, redirectStep} = require('./http-core.cjs')
const BATCH = 4 * 1024 * 1024
const DIRECT_WRITE = 256 * 1024
// Progress every 4 MiB received: a report per 1 MiB cost ~45 ms on a 210 MB pull (as worker messages).
// Counted as bytes arrive, not as they are written: a blob's small reads are batched up to 4 MiB,
// and counting writes could leave a 5 MiB blob with no report before its end.
const PROGRESS_EVERY = 4 * 1024 * 1024
const SYNC_EVERY = 16 * 1024 * 1024
const MAX_HEAD_BYTES = 64 * 1024
// One read buffer for every socket read of the plain-HTTP path, however many downloads run: each
// read is hashed and written (or copied) in its own callback, before the next read (see rawGet).
const readBuffer = Buffer.allocUnsafe(1024 * 1024)
const agentFor = keepAliveAgents()
// What direct-download.ts turns into its deadline error (it knows the URL to name, redacted).
const deadlineError = () =>
  /** @type {CodedError} */ (
    Object.assign(new Error('the download did not finish within its deadline'), {code: 'EDEADLINE'})
  )

/**
 * The temp file being filled: hashed as it arrives and written at once (synchronous writes: a
 * copy into the page cache, and a pull's main thread has nothing else to do meanwhile).
 */
class Sink {
  /**
   * @param {BlobDownloadJob} job
   * @param {(bytes: number) => void} onBytes
   */
  constructor(job, onBytes) {
    this.job = job
    this.onBytes = onBytes
    this.fd = fs.openSync(job.tempPath, 'wx', 0o644)
    this.hash = createHash('sha256')
    /** @type {Buffer | undefined} */
    this.batch = undefined // allocated on the first small chunk
    this.batched = 0
    this.received = 0
    this.unreported = 0
    this.unsynced = 0
    // The early fdatasync in flight, if any: the fd stays open until it is done.
    /** @type {Promise<void> | undefined} */
    this.syncing = undefined
  }
  /**
   * Takes a chunk, written before this returns (the caller may reuse it); false once more than
   * the expected size arrived. Large reads are written as they are (a copy into the batch cost
   * as much CPU as the hashing), small ones gathered into 4 MiB writes.
   * @param {Buffer} chunk
   * @returns {boolean}
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
    for (let offset = 0; offset < chunk.length; ) {
      const copied = chunk.copy(this.batch, this.batched, offset)
      this.batched += copied
      offset += copied
      if (this.batched === BATCH) this.flush()
    }
    return true
  }
  flush() {
    if (this.batched === 0) return
    this.write(/** @type {Buffer} */ (this.batch), this.batched) // batched > 0: add() allocated it
    this.batched = 0
  }
  /**
   * @param {Buffer} buffer
   * @param {number} length
   */
  write(buffer, length) {
    for (let offset = 0; offset < length; ) offset += fs.writeSync(this.fd, buffer, offset, length - offset)
    this.unsynced += length
    // Start the disk on what is written so far (asynchronously: the download goes on), so the
    // fsync that ends the blob finds little left to write: 0.74 s -> 0.56 s on a 210 MB pull.
    if (this.unsynced >= SYNC_EVERY && this.syncing === undefined) {
      this.unsynced = 0
      this.syncing = /** @type {Promise<void>} */ (
        new Promise((resolve) => fs.fdatasync(this.fd, () => resolve()))
      ).then(() => {
        this.syncing = undefined
      })
    }
  }
  report() {
    if (this.unreported > 0) this.onBytes(this.unreported)
    this.unreported = 0
  }
  /**
   * The outcome; the file is fsynced only when it holds what the store will keep.
   * @returns {Promise<Outcome>}
   */
  async finish() {
    this.flush()
    this.report()
    const digest = 'sha256:' + this.hash.digest('hex')
    if (this.received === this.job.size && digest === this.job.digest)
      await /** @type {Promise<void>} */ (
        new Promise((resolve, reject) => fs.fsync(this.fd, (error) => (error ? reject(error) : resolve())))
      )
    return {kind: 'filled', size: this.received, digest}
  }
  async close() {
    await this.syncing
    fs.closeSync(this.fd)
  }
}

/**
 * GET through node:http(s): TLS, and plain-HTTP answers rawGet does not take (chunked bodies).
 * @param {URL} url
 * @param {Record<string, string>} headers
 * @param {boolean} insecure
 * @param {number} idleMs
 * @param {AbortSignal} deadline aborted when the download's time is up
 * @returns {Promise<Response>}
 */
function get(url, headers, insecure, idleMs, deadline) {
  return new Promise((resolve, reject) => {
    const agent = agentFor(url, insecure)
    // node:https (and TLS) only when a URL needs it: a command's start does not pay for it.
    /** @type {typeof http.request} */
    const send =
      url.protocol === 'https:'
        ? /** @type {typeof import('node:https')} */ (require('node:https')).request
        : http.request
    const request = send(url, {method: 'GET', headers, agent, timeout: idleMs})
    const onDeadline = () => request.destroy(deadline.reason)
    deadline.addEventListener('abort', onDeadline, {once: true})
    request.on('close', () => deadline.removeEventListener('abort', onDeadline))
    request.on('timeout', () => request.destroy(idleTimeoutError(idleMs)))
    request.on('error', reject)
    request.on('response', (response) =>
      resolve({
        status: /** @type {number} */ (response.statusCode), // always set on a client's response
        location: response.headers.location,
        discard: () => response.destroy(),
        save: async (sink) => {
          for await (const chunk of /** @type {AsyncIterable<Buffer>} */ (response)) {
            if (!sink.add(chunk)) {
              response.destroy()
              break
            }
          }
        },
      }),
    )
    request.end()
  })
}

/**
 * GET over a plain socket reading into one reused 1 MiB buffer: each read is hashed and written
 * in the socket's own callback, without node:http's per-chunk buffers and streams (less than
 * half the CPU of get() for a local registry's 84 MB blob). Takes only answers with a
 * Content-Length; anything else is asked again through get().
 * @param {URL} url
 * @param {Record<string, string>} headers
 * @param {number} idleMs
 * @param {AbortSignal} deadline aborted when the download's time is up
 * @returns {Promise<Response>}
 */
function rawGet(url, headers, idleMs, deadline) {
  for (const [name, value] of Object.entries(headers)) {
    if (/[\r\n]/.test(name + value)) return Promise.reject(new Error('header ' + name + ' holds a line break'))
  }
  const lines = [
    'GET ' + url.pathname + url.search + ' HTTP/1.1',
    'Host: ' + url.host,
    ...Object.entries(headers).map(([name, value]) => name + ': ' + value),
    'Connection: close',
  ]
  return new Promise((resolve, reject) => {
    /** @type {Buffer | undefined} */
    let head = Buffer.alloc(0)
    let answered = false
    // Body bytes go to onBody once save() is called; until then they are kept (copied: the read buffer is reused).
    /** @type {(data: Buffer) => unknown} */
    let onBody = (data) => early.push(Buffer.from(data))
    /** @type {Buffer[]} */
    const early = []
    // How the connection ended, for a save() that starts after it did.
    let closed = false
    /** @type {Error | undefined} */
    let failure
    /** @type {() => void} */
    let onEnd = () => undefined
    const socket = net.connect({
      host: url.hostname.replace(/^\[|\]$/g, ''),
      port: Number(url.port || 80),
      onread: {
        buffer: readBuffer,
        // The buffer is readBuffer, a Buffer. any: @types/node asks for a boolean, but Node pauses
        // the socket only on a return of false, which this never returns (undefined, or the socket).
        callback: /** @type {(length: number, buffer: Buffer) => any} */ (
          (length, buffer) => {
            let data = buffer.subarray(0, length)
            if (!answered) {
              // Still set: head becomes undefined only once answered.
              head = Buffer.concat([/** @type {Buffer} */ (head), data])
              const end = head.indexOf('\r\n\r\n')
              if (end === -1) {
                if (head.length > MAX_HEAD_BYTES)
                  socket.destroy(new Error('the response head exceeds ' + MAX_HEAD_BYTES + ' bytes'))
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
          }
        ),
      },
    })
    socket.setTimeout(idleMs, () => socket.destroy(idleTimeoutError(idleMs)))
    const onDeadline = () => socket.destroy(deadline.reason)
    deadline.addEventListener('abort', onDeadline, {once: true})
    socket.on('connect', () => socket.write(lines.join('\r\n') + '\r\n\r\n'))
    socket.on('error', (error) => {
      failure = error
    })
    socket.on('close', () => {
      deadline.removeEventListener('abort', onDeadline)
      closed = true
      if (!answered)
        reject(failure ?? Object.assign(new Error('the connection closed before the response'), {code: 'ECONNRESET'}))
      onEnd()
    })
    /**
     * @param {Head} answer
     * @returns {Response}
     */
    function respond({status, location, length}) {
      return {
        status,
        location,
        chunked: length === undefined,
        discard: () => socket.destroy(),
        save: (sink) =>
          new Promise((done, failed) => {
            // One byte past the expected size is enough to know the blob is wrong.
            // (download() calls save() only on an answer with a length: a chunked one is asked again.)
            let left = Math.min(/** @type {number} */ (length), sink.job.size + 1)
            let finished = false
            const finish = () => {
              if (finished) return
              finished = true
              onBody = () => undefined
              socket.destroy()
              done()
            }
            onEnd = () => {
              if (left > 0)
                failed(
                  failure ??
                    Object.assign(new Error('the connection closed ' + left + ' bytes before the end of the body'), {
                      code: 'ECONNRESET',
                    }),
                )
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

/**
 * Status, Location and Content-Length of a response head; length undefined for chunked or unsized bodies.
 * @param {string} text
 * @returns {Head | undefined}
 */
function parseHead(text) {
  const [statusLine, ...fields] = text.split('\r\n')
  const match = /^HTTP\/1\.[01] (\d{3})/.exec(statusLine)
  if (!match) return undefined
  /** @type {Record<string, string>} */
  const header = {}
  for (const field of fields) {
    const colon = field.indexOf(':')
    if (colon > 0) header[field.slice(0, colon).trim().toLowerCase()] = field.slice(colon + 1).trim()
  }
  const length =
    header['transfer-encoding'] === undefined && /^\d+$/.test(header['content-length'] ?? '')
      ? Number(header['content-length'])
      : undefined
  return {status: Number(match[1]), location: header.location, length}
}

/**
 * Downloads `job` into its temp file; `onBytes` hears of the bytes received, every 4 MiB and at the end.
 * @param {BlobDownloadJob} job
 * @param {(bytes: number) => void} onBytes
 * @returns {Promise<Outcome>}
 */
async function download(job, onBytes) {
  // One timer for the whole download, redirects included: a trickling registry is never idle.
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(deadlineError()), job.deadlineMs)
  try {
    return await downloadBefore(controller.signal, job, onBytes)
  } catch (error) {
    throw controller.signal.aborted ? controller.signal.reason : error
  } finally {
    clearTimeout(timer)
  }
}

/**
 * @param {AbortSignal} deadline
 * @param {BlobDownloadJob} job
 * @param {(bytes: number) => void} onBytes
 * @returns {Promise<Outcome>}
 */
async function downloadBefore(deadline, job, onBytes) {
  /** @type {import('./http-core.cjs').RedirectableRequest} */
  let request = {method: 'GET', url: new URL(job.url), headers: job.headers}
  // Redirects as http.ts follows them (http-core.cjs): the same hosts, headers and limit.
  for (let redirects = 0; ; redirects++) {
    const {url, headers} = request
    let response =
      url.protocol === 'http:'
        ? await rawGet(url, headers, job.idleMs, deadline)
        : await get(url, headers, job.insecure, job.idleMs, deadline)
    if (response.chunked && response.status === 200) {
      response.discard()
      response = await get(url, headers, job.insecure, job.idleMs, deadline)
    }
    const {status, location} = response
    const step = redirectStep(request, status, location, redirects)
    if (step.kind === 'too-many') {
      response.discard()
      throw Object.assign(new Error(step.message), {code: TOO_MANY_REDIRECTS})
    }
    if (step.kind === 'follow') {
      response.discard()
      request = step.request
      continue
    }
    if (status !== 200) {
      response.discard()
      return {kind: 'status', status}
    }
    const sink = new Sink(job, onBytes)
    try {
      await response.save(sink)
      // A body cut short by the deadline may end without an error of its own.
      if (deadline.aborted) throw deadline.reason
      return await sink.finish()
    } finally {
      await sink.close()
    }
  }
}

module.exports = {download}
