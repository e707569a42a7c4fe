/**
 * The registry client (http.ts) and the direct download of large blobs (blob-download.cjs)
 * follow redirects by one rule (http-core.cjs): ten are followed, an eleventh is the same error
 * on both paths. Before, the download (then on a worker thread) stopped silently after ten and
 * http.ts asked the whole chain again. A small node:http server redirects a blob's GET `n` times before serving it.
 */
import {createHash, randomBytes} from 'node:crypto'
import {mkdtemp, rm} from 'node:fs/promises'
import {createServer, type IncomingMessage, type Server} from 'node:http'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'
import {AegisError} from '../../src/errors.js'
import type {ContentStore} from '../../src/oci/types.js'
import {RegistryClient} from '../../src/registry/auth.js'
import {MAX_REDIRECTS} from '../../src/registry/http-core.cjs'
import {sendOnce} from '../../src/registry/http.js'
import {pullImage} from '../../src/registry/push-pull.js'
import {RemoteRepository} from '../../src/registry/repository.js'
import {LocalStore} from '../../src/store/local-store.js'
import {LayoutStore} from './layout-store.js'

const digestOf = (bytes: Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`
// Large enough for the direct download (copy.ts downloads blobs of 4 MiB and more that way).
const layer = randomBytes(5 * 1024 * 1024)
const config = Buffer.from('{}')
const manifest = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: {mediaType: 'application/vnd.oci.empty.v1+json', digest: digestOf(config), size: config.length},
    layers: [{mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: digestOf(layer), size: layer.length}],
  }),
)

interface RedirectingRegistry {
  host: string
  /** GETs of the layer's blob URL, each with its Connection header (the direct download's plain-HTTP reader sends `close`). */
  layerGets: Array<string | undefined>
  close(): Promise<void>
}

/** A registry serving `manifest` as `r/app:1`, whose layer GET is redirected `redirects` times (all on this origin) before the bytes. */
async function redirectingRegistry(redirects: number): Promise<RedirectingRegistry> {
  const layerGets: RedirectingRegistry['layerGets'] = []
  const server: Server = createServer((request: IncomingMessage, response) => {
    const url = request.url ?? ''
    const hop = /^\/hop\/(\d+)$/.exec(url)
    if (url.endsWith(`/blobs/${digestOf(layer)}`) && request.method === 'GET') {
      layerGets.push(request.headers.connection)
      response.writeHead(307, {location: `/hop/${redirects - 1}`}).end()
    } else if (hop) {
      const left = Number(hop[1])
      if (left > 0) response.writeHead(307, {location: `/hop/${left - 1}`}).end()
      else
        response.writeHead(200, {'content-type': 'application/octet-stream', 'content-length': layer.length}).end(layer)
    } else if (
      /\/manifests\/(1|sha256:[0-9a-f]{64})$/.test(url) &&
      url.endsWith(url.includes('sha256:') ? digestOf(manifest) : '/1')
    ) {
      response.writeHead(200, {
        'content-type': 'application/vnd.oci.image.manifest.v1+json',
        'content-length': manifest.length,
        'docker-content-digest': digestOf(manifest),
      })
      response.end(request.method === 'HEAD' ? undefined : manifest)
    } else if (url.endsWith(`/blobs/${digestOf(config)}`)) {
      response.writeHead(200, {'content-type': 'application/octet-stream', 'content-length': config.length})
      response.end(request.method === 'HEAD' ? undefined : config)
    } else {
      response
        .writeHead(404, {'content-type': 'application/json'})
        .end('{"errors":[{"code":"NOT_FOUND","message":"unknown"}]}')
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const host = `127.0.0.1:${(server.address() as {port: number}).port}`
  return {
    host,
    layerGets,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

let work: string
const registries: RedirectingRegistry[] = []
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'aegis-redirects-'))
})
afterAll(async () => {
  await rm(work, {recursive: true, force: true})
})
afterEach(async () => {
  await Promise.all(registries.splice(0).map((registry) => registry.close()))
})

async function start(redirects: number): Promise<RedirectingRegistry> {
  const registry = await redirectingRegistry(redirects)
  registries.push(registry)
  return registry
}

const client = new RegistryClient({retry: {maxAttempts: 2, minDelayMs: 20, maxDelayMs: 50}})
let stores = 0

/** Pulls `r/app:1` into a new store: a LocalStore takes large blobs through the direct download, a LayoutStore through http.ts. */
async function pullInto(kind: 'direct' | 'http.ts', host: string): Promise<unknown> {
  const dir = join(work, `store-${stores++}`)
  const store: ContentStore = kind === 'direct' ? new LocalStore(dir) : await LayoutStore.create(dir)
  return pullImage(new RemoteRepository(`${host}/r/app:1`, {client}), store, {localReference: 'app:1'}).then(
    () => undefined,
    (error: unknown) => error,
  )
}

// The URL that answered with the redirect one too many: the last hop before the bytes.
const tooMany = (host: string) => `GET http://${host}/hop/1 redirected more than ${MAX_REDIRECTS} times.`

describe('a chain of redirects, through the direct download and through http.ts', () => {
  it(`follows ${MAX_REDIRECTS} redirects on both paths`, async () => {
    const registry = await start(MAX_REDIRECTS)
    const direct = await sendOnce({
      method: 'GET',
      url: new URL(`http://${registry.host}/v2/r/app/blobs/${digestOf(layer)}`),
    })
    expect(direct.response.status).toBe(200)
    expect(direct.url.pathname).toBe('/hop/0')
    direct.response.discard()
    expect(await pullInto('direct', registry.host)).toBeUndefined()
    expect(await pullInto('http.ts', registry.host)).toBeUndefined()
    // Once by sendOnce, once by the direct download (its own plain-HTTP reader), once by http.ts's pull.
    expect(registry.layerGets).toEqual(['keep-alive', 'close', 'keep-alive'])
  })

  it('refuses one redirect more with the same error on both paths, asking once', async () => {
    const registry = await start(MAX_REDIRECTS + 1)
    const direct = await sendOnce({
      method: 'GET',
      url: new URL(`http://${registry.host}/v2/r/app/blobs/${digestOf(layer)}`),
    }).then(
      () => undefined,
      (error: unknown) => error,
    )
    expect(direct).toBeInstanceOf(AegisError)
    expect((direct as Error).message).toBe(tooMany(registry.host))
    registry.layerGets.length = 0

    const viaDirect = await pullInto('direct', registry.host)
    expect(viaDirect).toBeInstanceOf(AegisError)
    expect((viaDirect as Error).message).toBe(tooMany(registry.host))
    // The direct download's verdict stands: http.ts does not ask the chain again.
    expect(registry.layerGets).toEqual(['close'])

    const viaHttp = await pullInto('http.ts', registry.host)
    expect(viaHttp).toBeInstanceOf(AegisError)
    expect((viaHttp as Error).message).toBe(tooMany(registry.host))
  })
})
