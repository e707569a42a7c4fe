/**
 * One HTTP exchange with a registry over node:http and node:https with keep-alive agents. Bodies
 * stay Node streams end to end (fetch's web streams and parser cost ~150 ms on a 210 MB pull, and
 * loading undici ~50 ms on every command). Redirects are followed by hand so that credentials
 * never travel to another host.
 */
import {Agent as HttpAgent, request as httpRequest, type IncomingMessage, type OutgoingHttpHeaders} from 'node:http'
import {Agent as HttpsAgent, request as httpsRequest} from 'node:https'
import type {Readable} from 'node:stream'
import {AegisError} from '../errors.js'

/**
 * A body that can be sent again: bytes, or a factory that opens a fresh stream each call. A
 * factory that cannot (a stream handed to us once) throws BodyNotReplayableError on the second call.
 */
export type RequestBody = Buffer | string | (() => Readable | Promise<Readable>)

export interface RegistryRequest {
  method: string
  url: URL
  headers?: Record<string, string>
  body?: RequestBody
  /** HTTPS without verifying the server's certificate (`--insecure`). */
  insecure?: boolean
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
/** A connection that sends or receives nothing for this long is given up (and retried). */
const IDLE_TIMEOUT_MS = 300_000
const MAX_REDIRECTS = 10

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

export async function openBody(body: RequestBody | undefined): Promise<Buffer | string | Readable | undefined> {
  if (body === undefined || typeof body === 'string' || Buffer.isBuffer(body)) return body
  return body()
}

/** Sends `request` once (plus redirects). Network failures reject, HTTP statuses resolve. */
export async function sendOnce(request: RegistryRequest): Promise<HttpResult> {
  let {method, url} = request
  let headers: Record<string, string> = {...request.headers}
  let body = request.body
  for (let redirects = 0; ; redirects++) {
    const response = await exchange(method, url, headers, await openBody(body), request.insecure === true)
    const location = response.header('location')
    if (!isRedirect(response.status) || location === null) return {response, url, attempts: 1}
    response.discard()
    if (redirects >= MAX_REDIRECTS) {
      throw new AegisError(`${method} ${url.origin}${url.pathname} redirected more than ${MAX_REDIRECTS} times.`)
    }
    const next = new URL(location, url)
    if (next.origin !== url.origin) headers = withoutAuthorization(headers)
    if (response.status === 303 || ((response.status === 301 || response.status === 302) && method === 'POST')) {
      method = 'GET'
      body = undefined
      headers = Object.fromEntries(Object.entries(headers).filter(([k]) => !/^content-(type|length)$/i.test(k)))
    }
    url = next
  }
}

const agents: {http?: HttpAgent; https?: HttpsAgent; insecure?: HttpsAgent} = {}

function agentFor(url: URL, insecure: boolean): HttpAgent | HttpsAgent {
  if (url.protocol === 'http:') return (agents.http ??= new HttpAgent({keepAlive: true}))
  if (insecure) return (agents.insecure ??= new HttpsAgent({keepAlive: true, rejectUnauthorized: false}))
  return (agents.https ??= new HttpsAgent({keepAlive: true}))
}

/** One request and its response head; a stream body is piped and stopped if the server answers early. */
function exchange(method: string, url: URL, headers: Record<string, string>, body: Buffer | string | Readable | undefined, insecure: boolean): Promise<RegistryResponse> {
  return new Promise((resolve, reject) => {
    const outgoing: OutgoingHttpHeaders = {...headers}
    if ((typeof body === 'string' || Buffer.isBuffer(body)) && !hasHeader(headers, 'content-length')) outgoing['content-length'] = Buffer.byteLength(body)
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest
    const request = send(url, {method, headers: outgoing, agent: agentFor(url, insecure), timeout: IDLE_TIMEOUT_MS})
    const stream = body !== undefined && typeof body !== 'string' && !Buffer.isBuffer(body) ? body : undefined
    let uploaded = stream === undefined
    request.on('timeout', () => {
      request.destroy(Object.assign(new Error(`no data for ${IDLE_TIMEOUT_MS / 1000} s`), {code: 'ETIMEDOUT'}))
    })
    request.on('error', (error) => {
      stream?.destroy()
      reject(error)
    })
    request.on('finish', () => {
      uploaded = true
    })
    request.on('response', (message) => {
      if (!uploaded && stream) {
        // Answered before the upload ended (an error, a redirect): stop sending. The connection is
        // not reusable mid-body, so it closes once the answer has been read or given up.
        stream.unpipe(request)
        stream.destroy()
        message.on('end', () => request.destroy())
      }
      resolve(new RegistryResponse(message, () => {
        if (!uploaded) request.destroy()
      }))
    })
    if (stream) {
      stream.on('error', (error) => request.destroy(error))
      stream.pipe(request)
    } else {
      request.end(body)
    }
  })
}

function hasHeader(headers: Record<string, string>, name: string): boolean {
  return Object.keys(headers).some((key) => key.toLowerCase() === name)
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308
}

function withoutAuthorization(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== 'authorization'))
}
