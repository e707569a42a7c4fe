/**
 * Test images made with real tools (umoci), skopeo as an independent reader and writer, and a
 * small HTTP proxy for faults docker-registry cannot produce (429s, dropped connections, redirects).
 */
import {randomBytes} from 'node:crypto'
import {writeFile} from 'node:fs/promises'
import {createServer, request as httpRequest, type IncomingMessage, type ServerResponse} from 'node:http'
import {join} from 'node:path'
import {execa} from 'execa'
import {LayoutStore} from './layout-store.js'

/** An OCI layout at `dir` holding image `tag` with `layers` layers of `layerSize` random bytes, made by umoci. */
export async function makeImage(
  dir: string,
  options: {tag?: string; layers?: number; layerSize?: number} = {},
): Promise<LayoutStore> {
  const tag = options.tag ?? 'test'
  const layout = join(dir, 'layout')
  await execa('umoci', ['init', '--layout', layout])
  await execa('umoci', ['new', '--image', `${layout}:${tag}`])
  for (let i = 0; i < (options.layers ?? 2); i++) {
    const file = join(dir, `layer-${i}.bin`)
    await writeFile(file, randomBytes(options.layerSize ?? 64 * 1024))
    await execa('umoci', ['insert', '--image', `${layout}:${tag}`, file, `/data/layer-${i}.bin`])
  }
  await execa('umoci', ['config', '--image', `${layout}:${tag}`, '--config.cmd', '/bin/true'])
  return new LayoutStore(layout)
}

export async function skopeo(...args: string[]): Promise<string> {
  const {stdout} = await execa('skopeo', args, {timeout: 60_000, stripFinalNewline: false})
  return stdout
}

/** `skopeo inspect --raw` of a plain-HTTP registry image. */
export async function skopeoRawManifest(
  reference: string,
  creds?: {username: string; password: string},
): Promise<string> {
  return skopeo(
    'inspect',
    '--raw',
    '--tls-verify=false',
    ...(creds ? ['--creds', `${creds.username}:${creds.password}`] : []),
    `docker://${reference}`,
  )
}

export type ProxyAction =
  /** Forward to the registry; `headers` are added to its answer. */
  | {kind: 'pass'; headers?: Record<string, string>}
  | {kind: 'respond'; status: number; headers?: Record<string, string>; body?: string}
  | {kind: 'drop'}
  /** Forward the answer with its body chunked (no Content-Length), as some CDNs and proxies send blobs. */
  | {kind: 'chunked'}
  /** Forward the answer's head and `bytes` of its body, then close the connection. */
  | {kind: 'cut'; bytes: number}
  /** Forward the answer's first `first` body bytes in one write, then the rest in `piece`-byte writes 1 ms apart. */
  | {kind: 'trickle'; first: number; piece: number}

export interface FaultProxy {
  host: string
  url: string
  /** Every request seen: method, path and headers. */
  seen: Array<{method: string; path: string; headers: IncomingMessage['headers']; at: number}>
  close(): Promise<void>
}

/** An HTTP proxy to `target` that lets `decide` answer, drop or pass each request. */
export async function startFaultProxy(
  target: string,
  decide: (request: IncomingMessage) => ProxyAction,
): Promise<FaultProxy> {
  const seen: FaultProxy['seen'] = []
  const targetUrl = new URL(target)
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    seen.push({method: request.method ?? '', path: request.url ?? '', headers: request.headers, at: Date.now()})
    const action = decide(request)
    if (action.kind === 'drop') {
      request.socket.destroy()
      return
    }
    if (action.kind === 'respond') {
      request.resume()
      response.writeHead(action.status, action.headers).end(action.body ?? '')
      return
    }
    const upstream = httpRequest(
      {
        host: targetUrl.hostname,
        port: targetUrl.port,
        method: request.method,
        path: request.url,
        headers: {...request.headers, host: targetUrl.host},
      },
      (answer) => {
        // Locations the registry gives point at itself; rewrite them to stay on the proxy.
        const headers = {...answer.headers, ...(action.kind === 'pass' ? action.headers : {})}
        if (typeof headers.location === 'string')
          headers.location = headers.location.replace(targetUrl.origin, `http://${request.headers.host}`)
        if (action.kind === 'chunked') delete headers['content-length']
        response.writeHead(answer.statusCode ?? 502, headers)
        if (action.kind === 'trickle') {
          const chunks: Buffer[] = []
          answer.on('data', (chunk: Buffer) => chunks.push(chunk))
          answer.on('end', () => {
            const body = Buffer.concat(chunks)
            response.write(body.subarray(0, action.first))
            const next = (offset: number): void => {
              if (offset >= body.length) {
                response.end()
                return
              }
              response.write(body.subarray(offset, offset + action.piece))
              setTimeout(() => next(offset + action.piece), 1)
            }
            setTimeout(() => next(action.first), 1)
          })
          return
        }
        if (action.kind !== 'cut') {
          answer.pipe(response)
          return
        }
        let left = action.bytes
        answer.on('data', (chunk: Buffer) => {
          if (left <= 0) return
          const part = chunk.subarray(0, left)
          left -= part.length
          response.write(part)
          if (left <= 0) {
            answer.destroy()
            setTimeout(() => request.socket.destroy(), 50) // what was written reaches the client first
          }
        })
      },
    )
    upstream.on('error', () => response.destroy())
    request.pipe(upstream)
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return {
    host: `127.0.0.1:${address.port}`,
    url: `http://127.0.0.1:${address.port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}
