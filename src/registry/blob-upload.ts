/**
 * Blob upload sessions (distribution-spec "pushing blobs"): open with POST (or a cross-repository
 * mount), then either one PUT with the whole blob, or PATCH chunks with Content-Range and a
 * closing PUT. Every `Location` is used as given, relative or absolute.
 */
import type {Readable} from 'node:stream'
import type {Descriptor} from '../oci/types.js'
import {FileBody, openBody, type HttpResult, type RequestBody} from './http.js'
import {RegistryError, errorFromResponse} from './registry-error.js'

export type UploadMode = 'auto' | 'monolithic' | 'chunked'

/** Sends a request for the repository being pushed to, authenticated for push. */
export type SendForPush = (
  method: string,
  url: URL,
  init?: {headers?: Record<string, string>; body?: RequestBody; extraScopes?: string[]},
) => Promise<HttpResult>

export interface UploadOptions {
  mode: UploadMode
  chunkSize: number
  /** Repositories on the same registry that may already hold the blob. */
  mountFrom?: string[]
}

export type UploadOutcome = 'uploaded' | 'mounted'

const OCTET_STREAM = 'application/octet-stream'

export async function uploadBlob(
  send: SendForPush,
  uploadsUrl: URL,
  desc: Descriptor,
  body: RequestBody,
  options: UploadOptions,
): Promise<UploadOutcome> {
  let session: URL | undefined
  for (const from of options.mountFrom ?? []) {
    const mount = await tryMount(send, uploadsUrl, desc, from)
    if (mount === 'mounted') return 'mounted'
    session ??= mount
  }
  if (options.mode === 'chunked') {
    await uploadChunked(send, session ?? (await openSession(send, uploadsUrl)), desc, body, options.chunkSize)
    return 'uploaded'
  }
  const first = await putMonolithic(send, session ?? (await openSession(send, uploadsUrl)), desc, body)
  if (first === 'done') return 'uploaded'
  // A registry that refuses big bodies (413) gets chunks; an upload session lost to a restart
  // (BLOB_UPLOAD_UNKNOWN / _INVALID) gets one fresh start.
  if (first.status === 413 && options.mode === 'auto') {
    await uploadChunked(send, await openSession(send, uploadsUrl), desc, body, options.chunkSize)
    return 'uploaded'
  }
  if (first.code === 'BLOB_UPLOAD_UNKNOWN' || first.code === 'BLOB_UPLOAD_INVALID') {
    const second = await putMonolithic(send, await openSession(send, uploadsUrl), desc, body)
    if (second === 'done') return 'uploaded'
    throw second
  }
  throw first
}

/** POST with `mount=`: 'mounted' (201), the upload session it opened instead (202), or undefined. */
export async function tryMount(
  send: SendForPush,
  uploadsUrl: URL,
  desc: Descriptor,
  from: string,
): Promise<'mounted' | URL | undefined> {
  const url = new URL(uploadsUrl)
  url.search = `?mount=${encodeURIComponent(desc.digest)}&from=${encodeURIComponent(from)}`
  const result = await send('POST', url, {headers: {'content-length': '0'}, extraScopes: [`repository:${from}:pull`]})
  if (result.response.status === 201) {
    result.response.discard()
    return 'mounted'
  }
  if (result.response.status === 202) {
    result.response.discard()
    return result.response.header('location') ? locationOf(result, 'POST') : undefined
  }
  // A refused mount is not fatal: the blob is uploaded instead.
  result.response.discard()
  return undefined
}

async function openSession(send: SendForPush, uploadsUrl: URL): Promise<URL> {
  const result = await send('POST', uploadsUrl, {headers: {'content-length': '0'}})
  if (result.response.status !== 202) {
    throw await errorFromResponse('POST', result.url, result.response, {
      what: 'Starting a blob upload',
      attempts: result.attempts,
    })
  }
  result.response.discard()
  return locationOf(result, 'POST')
}

function locationOf(result: HttpResult, method: string): URL {
  const location = result.response.header('location')
  if (!location) {
    throw new RegistryError(
      `${method} ${result.url.origin}${result.url.pathname} answered ${result.response.status} without a Location header.`,
      {
        method,
        url: `${result.url.origin}${result.url.pathname}`,
        status: result.response.status,
      },
    )
  }
  return new URL(location, result.url)
}

/** The session URL plus `digest=`, keeping the registry's own query exactly as it gave it. */
function withDigest(session: URL, digest: string): URL {
  const url = new URL(session)
  url.search = `${url.search ? `${url.search}&` : '?'}digest=${encodeURIComponent(digest)}`
  return url
}

async function putMonolithic(
  send: SendForPush,
  session: URL,
  desc: Descriptor,
  body: RequestBody,
): Promise<'done' | RegistryError> {
  const url = withDigest(session, desc.digest)
  const result = await send('PUT', url, {
    headers: {'content-type': OCTET_STREAM, 'content-length': String(desc.size)},
    body,
  })
  if (result.response.status === 201 || result.response.status === 204) {
    result.response.discard()
    return 'done'
  }
  return errorFromResponse('PUT', result.url, result.response, {
    what: `Uploading blob ${desc.digest}`,
    attempts: result.attempts,
  })
}

async function uploadChunked(
  send: SendForPush,
  session: URL,
  desc: Descriptor,
  body: RequestBody,
  chunkSize: number,
): Promise<void> {
  const opened = await openBody(body)
  const source = opened instanceof FileBody ? opened.stream() : opened
  let location = session
  let offset = 0
  const patch = async (chunk: Buffer) => {
    const result = await send('PATCH', location, {
      headers: {
        'content-type': OCTET_STREAM,
        'content-length': String(chunk.length),
        'content-range': `${offset}-${offset + chunk.length - 1}`,
      },
      body: chunk,
    })
    if (result.response.status !== 202) {
      throw await errorFromResponse('PATCH', result.url, result.response, {
        what: `Uploading blob ${desc.digest}`,
        attempts: result.attempts,
      })
    }
    result.response.discard()
    location = locationOf(result, 'PATCH')
    offset += chunk.length
  }
  for await (const chunk of chunksOf(source, chunkSize)) await patch(chunk)
  const result = await send('PUT', withDigest(location, desc.digest), {headers: {'content-length': '0'}})
  if (result.response.status !== 201 && result.response.status !== 204) {
    throw await errorFromResponse('PUT', result.url, result.response, {
      what: `Finishing the upload of blob ${desc.digest}`,
      attempts: result.attempts,
    })
  }
  result.response.discard()
}

/** Re-slices a body into Buffers of `size` bytes (the last may be shorter); each is a replayable PATCH body. */
async function* chunksOf(source: Buffer | string | Readable | undefined, size: number): AsyncGenerator<Buffer> {
  if (source === undefined) return
  if (typeof source === 'string' || Buffer.isBuffer(source)) {
    const bytes = Buffer.from(source)
    for (let start = 0; start < bytes.length; start += size) yield bytes.subarray(start, start + size)
    return
  }
  let pending: Buffer[] = []
  let pendingLength = 0
  for await (const data of source) {
    let chunk = Buffer.isBuffer(data) ? data : Buffer.from(data as Uint8Array)
    while (pendingLength + chunk.length >= size) {
      const take = size - pendingLength
      pending.push(chunk.subarray(0, take))
      yield Buffer.concat(pending, size)
      chunk = chunk.subarray(take)
      pending = []
      pendingLength = 0
    }
    if (chunk.length > 0) {
      pending.push(chunk)
      pendingLength += chunk.length
    }
  }
  if (pendingLength > 0) yield Buffer.concat(pending, pendingLength)
}
