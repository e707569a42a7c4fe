/**
 * One HTTP exchange with a registry over Node's fetch (undici: keep-alive connections), following
 * redirects by hand so that credentials never travel to another host.
 */
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
}

export interface HttpResult {
  response: Response
  /** The URL that answered, after redirects: relative `Location`s resolve against it. */
  url: URL
  /** How many times the request was sent (retries included). */
  attempts: number
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

const MAX_REDIRECTS = 10

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
    const opened = await openBody(body)
    const response = await fetch(url, {
      method,
      headers,
      // A Readable is an AsyncIterable<Uint8Array>, which undici streams with duplex 'half'.
      body: opened as Buffer | string | AsyncIterable<Uint8Array> | undefined,
      redirect: 'manual',
      duplex: opened === undefined || typeof opened === 'string' || Buffer.isBuffer(opened) ? undefined : 'half',
    } as RequestInit)
    const location = response.headers.get('location')
    if (!isRedirect(response.status) || location === null) return {response, url, attempts: 1}
    if (redirects >= MAX_REDIRECTS) {
      await response.body?.cancel()
      throw new AegisError(`${method} ${url.origin}${url.pathname} redirected more than ${MAX_REDIRECTS} times.`)
    }
    await response.body?.cancel()
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

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308
}

function withoutAuthorization(headers: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => k.toLowerCase() !== 'authorization'))
}
