/**
 * One HTTP exchange with a registry over node:http and node:https with keep-alive agents. Bodies
 * stay Node streams end to end (fetch's web streams and parser cost ~150 ms on a 210 MB pull, and
 * loading undici ~50 ms on every command). Redirects are followed by hand so that credentials
 * never travel to another host; that rule, the agents and the idle timeout live in http-core.cjs,
 * shared with the direct download of large blobs (blob-download.cjs).
 */
import {createReadStream, read as readFile, ReadStream} from 'node:fs'
import {type ClientRequest, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders} from 'node:http'
import {request as httpsRequest} from 'node:https'
import type {Readable} from 'node:stream'
import {AegisError} from '../errors.js'
import {idleTimeoutError, keepAliveAgents, redirectStep, type RedirectableRequest} from './http-core.cjs'
import {redactUrl} from './registry-error.js'
import {sendFileZeroCopy, zeroCopySender} from './zero-copy-upload.js'

/**
 * A body that can be sent again: bytes, or a factory that opens a fresh stream each call. A
 * factory that cannot (a stream handed to us once) throws BodyNotReplayableError on the second call.
 */
export type RequestBody = Buffer | string | (() => Readable | FileBody | Promise<Readable | FileBody>)

/**
 * The first `size` bytes of an open file, sent by reading into a few reused 1 MiB buffers and
 * writing each to the socket as the previous read is written: no stream, no buffer per chunk.
 * Uploading an 84 MB blob that way took ~70 ms of CPU against ~300-360 ms piping a ReadStream
 * (streams, a fresh Buffer per read and the garbage collection they cause). A file shorter than
 * `size` fails the request; `close` is called once the request is over, whatever the outcome.
 */
export class FileBody {
  constructor(
    readonly fd: number,
    readonly size: number,
    readonly close: () => void,
    readonly onBytes?: (bytes: number) => void,
  ) {}

  /** The same bytes as a stream (chunked uploads slice a stream), counted through onBytes. */
  stream(): Readable {
    const stream = createReadStream('', {
      fd: this.fd,
      start: 0,
      end: this.size - 1,
      autoClose: false,
      highWaterMark: FILE_BUFFER_BYTES,
    })
    stream.on('data', (chunk) => this.onBytes?.(chunk.length))
    let closed = false
    const close = () => {
      if (closed) return
      closed = true
      this.close()
    }
    // autoClose is off (the descriptor is the source's): read to the end or given up, it closes the source.
    stream.once('end', close)
    stream.once('close', close)
    return stream
  }
}

/**
 * A FileBody for `source` when it is a file stream nothing has read yet (the local store's blobs
 * are: LocalStore.fetch), from its start; undefined for any other stream, to be sent as a stream.
 */
export function fileBodyOf(source: Readable, size: number, onBytes?: (bytes: number) => void): FileBody | undefined {
  if (!(source instanceof ReadStream)) return undefined
  // fd and start: set on every ReadStream, missing from @types/node's declaration.
  const {fd, start} = source as ReadStream & {fd?: unknown; start?: number}
  if (typeof fd !== 'number' || source.bytesRead !== 0 || (start ?? 0) !== 0 || source.readableFlowing !== null)
    return undefined
  return new FileBody(fd, size, () => source.destroy(), onBytes)
}

const FILE_BUFFER_BYTES = 1024 * 1024
/** Reads of a FileBody in flight or waiting to be written: 3 MiB per upload at most. */
const FILE_BUFFERS = 3

export interface RegistryRequest {
  method: string
  url: URL
  headers?: Record<string, string>
  body?: RequestBody
  /** HTTPS without verifying the server's certificate (`--insecure`). */
  insecure?: boolean
  /** Where a line for the user goes when the exchange has to wait (a `Retry-After`): the command's status channel. */
  notify?: (line: string) => void
  /** Bytes the response is expected to carry (a blob's size): the exchange's deadline grows with them, as with an upload's Content-Length. */
  size?: number
}

export interface HttpResult {
  response: RegistryResponse
  /** The URL that answered, after redirects: relative `Location`s resolve against it. */
  url: URL
  /** How many times the request was sent (retries included). */
  attempts: number
}

/** Bodies up to this size are read to the end when discarded, so the connection can be reused. */
const DRAIN_LIMIT = 64 * 1024

/**
 * How long an exchange with a registry may take. A registry that trickles a byte now and then is
 * never idle, so every exchange also has a deadline: a base plus its bytes at a slow but
 * reasonable rate. Read from the environment at each request (a few lookups per request, none per
 * chunk), so a slow link can allow more and tests can allow less.
 */
export interface RegistryTimeouts {
  /** A connection that sends or receives nothing for this long is given up (and retried). */
  idleMs: number
  /** Every exchange may take this long, plus the time its bytes take at `minBytesPerSecond`. */
  baseMs: number
  minBytesPerSecond: number
}

export function registryTimeouts(env: NodeJS.ProcessEnv = process.env): RegistryTimeouts {
  return {
    idleMs: positiveNumber(env.AEGIS_REGISTRY_IDLE_TIMEOUT, 300) * 1000,
    baseMs: positiveNumber(env.AEGIS_REGISTRY_DEADLINE, 120) * 1000,
    minBytesPerSecond: positiveNumber(env.AEGIS_REGISTRY_MIN_RATE, 64 * 1024),
  }
}

/** Milliseconds an exchange moving `bytes` (up and down) may take. */
export function deadlineFor(bytes: number, timeouts: RegistryTimeouts): number {
  return timeouts.baseMs + (bytes / timeouts.minBytesPerSecond) * 1000
}

/** The error of an exchange past its deadline: not retried (a stalling registry would stall again). */
export function deadlineError(method: string, url: URL, deadlineMs: number): AegisError {
  return new AegisError(`${method} ${redactUrl(url)} did not finish within ${(deadlineMs / 1000).toFixed(1)} s.`, {
    hint: 'The registry is stalling or very slow. On a slow link, allow more: AEGIS_REGISTRY_DEADLINE (seconds per request, default 120) and AEGIS_REGISTRY_MIN_RATE (bytes per second expected, default 65536).',
  })
}

function positiveNumber(text: string | undefined, fallback: number): number {
  const value = Number(text)
  return text !== undefined && Number.isFinite(value) && value > 0 ? value : fallback
}

/** A response whose body is a Node stream. Every response must be read to the end or discarded. */
export class RegistryResponse {
  readonly status: number
  readonly statusText: string

  constructor(
    private readonly message: IncomingMessage,
    /** Called when the body is given up: the request's own upload may still be unfinished. */
    private readonly onDiscard: () => void = () => undefined,
  ) {
    this.status = message.statusCode ?? 0
    this.statusText = message.statusMessage ?? ''
  }

  get ok(): boolean {
    return this.status >= 200 && this.status < 300
  }

  /** The body, to be consumed once. */
  get body(): Readable {
    return this.message
  }

  /** A header's value (lowercase name), several joined by `, `, or null. */
  header(name: string): string | null {
    const value = this.message.headers[name]
    if (value === undefined) return null
    return Array.isArray(value) ? value.join(', ') : value
  }

  /** The body as bytes, reading at most `limit + 1` bytes: a longer result means it was larger than `limit`. */
  async bytes(limit: number): Promise<Buffer> {
    const chunks: Buffer[] = []
    let length = 0
    for await (const chunk of this.message) {
      chunks.push(chunk as Buffer)
      length += (chunk as Buffer).length
      if (length > limit) {
        this.message.destroy()
        break
      }
    }
    return Buffer.concat(chunks, length)
  }

  async text(limit = 4 * 1024 * 1024): Promise<string> {
    return (await this.bytes(limit)).toString('utf8')
  }

  async json<T>(limit = 4 * 1024 * 1024): Promise<T> {
    return JSON.parse(await this.text(limit)) as T
  }

  /** Gives up the body: a short one is read so the connection goes back to the pool, a long one closes it. */
  discard(): void {
    this.onDiscard()
    if (this.message.destroyed) return
    // Even a complete (or bodiless HEAD) response frees its connection only once read to its end.
    const length = Number(this.header('content-length') ?? 0)
    if (this.message.complete || length <= DRAIN_LIMIT) this.message.resume()
    else this.message.destroy()
  }
}

export class BodyNotReplayableError extends Error {
  constructor() {
    super('the request body was a stream that has already been sent')
    this.name = 'BodyNotReplayableError'
  }
}

/** Wraps a stream that can be sent once as a RequestBody. */
export function onceBody(stream: Readable): () => Readable {
  let used = false
  return () => {
    if (used) throw new BodyNotReplayableError()
    used = true
    return stream
  }
}

export async function openBody(
  body: RequestBody | undefined,
): Promise<Buffer | string | Readable | FileBody | undefined> {
  if (body === undefined || typeof body === 'string' || Buffer.isBuffer(body)) return body
  return body()
}

/** Sends `request` once (plus redirects). Network failures reject, HTTP statuses resolve. */
export async function sendOnce(request: RegistryRequest): Promise<HttpResult> {
  let current: RedirectableRequest = {method: request.method, url: request.url, headers: {...request.headers}}
  let body = request.body
  for (let redirects = 0; ; redirects++) {
    const {method, url, headers} = current
    const response = await exchange(
      method,
      url,
      headers,
      await openBody(body),
      request.insecure === true,
      request.size ?? 0,
    )
    const step = redirectStep(current, response.status, response.header('location'), redirects)
    if (step.kind === 'final') return {response, url, attempts: 1}
    response.discard()
    if (step.kind === 'too-many') throw new AegisError(step.message)
    if (step.dropBody) body = undefined
    current = step.request
  }
}

const agentFor = keepAliveAgents()

/**
 * One request and its response head; a stream body is piped and stopped if the server answers
 * early. One timer bounds the whole exchange, the response body included (`downloadBytes` scale it).
 * Long: one promise whose request, response and body handlers share the upload state, the
 * answer and the deadline timer; split, that state would have to travel between them. A file
 * sent through sendfile gets a connection of its own that says `Connection: close`: its socket
 * turns blocking (zero-copy-upload.ts).
 */
function exchange(
  method: string,
  url: URL,
  headers: Record<string, string>,
  body: Buffer | string | Readable | FileBody | undefined,
  insecure: boolean,
  downloadBytes: number,
): Promise<RegistryResponse> {
  return new Promise((resolve, reject) => {
    const file = body instanceof FileBody ? body : undefined
    const busybox = file && zeroCopySender(file, url)
    const outgoing: OutgoingHttpHeaders = busybox ? {...headers, connection: 'close'} : {...headers}
    const agent = busybox ? false : agentFor(url, insecure)
    if ((typeof body === 'string' || Buffer.isBuffer(body)) && !hasHeader(headers, 'content-length'))
      outgoing['content-length'] = Buffer.byteLength(body)
    const timeouts = registryTimeouts()
    const uploadBytes = Number(outgoing['content-length'] ?? headerValue(headers, 'content-length') ?? 0) || 0
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest
    const request = send(url, {method, headers: outgoing, agent, timeout: timeouts.idleMs})
    const stream =
      body !== undefined && typeof body !== 'string' && !Buffer.isBuffer(body) && !(body instanceof FileBody)
        ? body
        : undefined
    let uploaded = stream === undefined && file === undefined
    let answered = false
    let message: IncomingMessage | undefined
    const deadlineMs = deadlineFor(uploadBytes + downloadBytes, timeouts)
    // The body's reader gets this error (destroying the request would turn it into a bare "aborted").
    const deadline = setTimeout(() => (message ?? request).destroy(deadlineError(method, url, deadlineMs)), deadlineMs)
    deadline.unref()
    request.on('timeout', () => {
      request.destroy(idleTimeoutError(timeouts.idleMs))
    })
    request.on('error', (error) => {
      clearTimeout(deadline)
      stream?.destroy()
      reject(error)
    })
    request.on('finish', () => {
      uploaded = true
    })
    request.on('response', (answer) => {
      message = answer
      answered = true
      if (!uploaded && file) answer.on('end', () => request.destroy())
      answer.on('close', () => clearTimeout(deadline))
      if (!uploaded && stream) {
        // Answered before the upload ended (an error, a redirect): stop sending. The connection is
        // not reusable mid-body, so it closes once the answer has been read or given up.
        stream.unpipe(request)
        stream.destroy()
        answer.on('end', () => request.destroy())
      }
      resolve(
        new RegistryResponse(answer, () => {
          if (!uploaded) request.destroy()
        }),
      )
    })
    if (file) {
      sendFileBody(file, busybox, request, timeouts.idleMs, () => answered)
    } else if (stream) {
      stream.on('error', (error) => request.destroy(error))
      stream.pipe(request)
    } else {
      request.end(body)
    }
  })
}

/** Sends a file body through sendfile when `busybox` can (zero-copy-upload.ts), else the buffered way. */
function sendFileBody(
  body: FileBody,
  busybox: string | undefined,
  request: ClientRequest,
  idleMs: number,
  stopped: () => boolean,
): void {
  if (busybox === undefined) sendFile(body, request, stopped)
  else sendFileZeroCopy(busybox, body, request, idleMs, () => sendFile(body, request, stopped))
}

/**
 * Writes `body.size` bytes of the file to `request`, then ends it: one read at a time (the data
 * stays in order), each buffer written while the next is read, and reused once the socket has
 * taken it. Stops when `stopped` (the registry answered early) or the request failed.
 */
function sendFile(body: FileBody, request: ClientRequest, stopped: () => boolean): void {
  const free = Array.from({length: FILE_BUFFERS}, () => Buffer.allocUnsafeSlow(FILE_BUFFER_BYTES))
  let position = 0
  let reading = false
  let writing = 0
  let over = false
  let closed = false
  // The file is closed once no read is in flight, so a late read never meets a closed (or reused) descriptor.
  const closeWhenIdle = () => {
    if (reading || closed) return
    closed = true
    body.close()
  }
  request.on('close', () => {
    over = true
    closeWhenIdle()
  })
  const fail = (error: Error) => {
    over = true
    request.destroy(error)
  }
  const pump = (): void => {
    if (over || reading || request.destroyed || stopped()) return
    if (position >= body.size) {
      if (writing === 0) {
        over = true
        request.end()
      }
      return
    }
    const buffer = free.pop()
    if (!buffer) return
    reading = true
    readFile(body.fd, buffer, 0, Math.min(buffer.length, body.size - position), position, (error, bytes) => {
      reading = false
      if (over) return closeWhenIdle()
      if (error) return fail(error)
      if (bytes === 0) return fail(new Error(`the file ended after ${position} of the ${body.size} bytes to upload`))
      position += bytes
      writing++
      body.onBytes?.(bytes)
      request.write(buffer.subarray(0, bytes), (writeError) => {
        writing--
        free.push(buffer)
        if (writeError) return fail(writeError)
        pump()
      })
      pump()
    })
  }
  pump()
}

function hasHeader(headers: Record<string, string>, name: string): boolean {
  return headerValue(headers, name) !== undefined
}

function headerValue(headers: Record<string, string>, name: string): string | undefined {
  return Object.entries(headers).find(([key]) => key.toLowerCase() === name)?.[1]
}
