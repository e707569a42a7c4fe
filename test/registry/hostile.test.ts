/**
 * The registry client against hostile registries (issue 11, observation 5): faults the real
 * docker-registry cannot produce, so each test runs a small node:http server that misbehaves on
 * purpose (a Bearer realm on another host over plain HTTP, ...).
 */
import {randomBytes} from 'node:crypto'
import {mkdtemp, readFile, readdir, rm} from 'node:fs/promises'
import {createServer, type IncomingMessage, type Server, type ServerResponse} from 'node:http'
import {createServer as createHttpsServer} from 'node:https'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'
import {Readable} from 'node:stream'
import {AegisError} from '../../src/errors.js'
import {pullKit} from '../../src/kit-artifact/pull.js'
import {MediaType} from '../../src/oci/media-types.js'
import type {ImageIndex, ImageManifest} from '../../src/oci/types.js'
import {pullImage} from '../../src/registry/push-pull.js'
import {LocalStore} from '../../src/store/local-store.js'
import {createSandbox} from '../cli-images/helpers.js'
import {selfSignedCertificate} from '../helpers/registry.js'
import {LayoutStore} from './layout-store.js'
import {RegistryClient} from '../../src/registry/auth.js'
import {RegistryError} from '../../src/registry/registry-error.js'
import {RemoteRepository} from '../../src/registry/repository.js'
import {sha256Digest} from '../../src/registry/verify.js'

const CREDENTIAL = {username: 'victim', password: 'stored-secret'}
const fastRetry = {maxAttempts: 2, minDelayMs: 20, maxDelayMs: 50}

interface TestServer {
  /** `host:port` */
  host: string
  /** Every request seen: method, path and headers. */
  seen: Array<{method: string; path: string; headers: IncomingMessage['headers']}>
  close(): Promise<void>
}

const servers: TestServer[] = []
afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()))
})

/** A plain-HTTP server on `address` (any 127.x.y.z is loopback) answering with `handle`. */
async function serve(
  address: string,
  handle: (request: IncomingMessage, response: ServerResponse) => void,
): Promise<TestServer> {
  const seen: TestServer['seen'] = []
  const server: Server = createServer((request, response) => {
    seen.push({method: request.method ?? '', path: request.url ?? '', headers: request.headers})
    handle(request, response)
  })
  await new Promise<void>((resolve) => server.listen(0, address, resolve))
  const port = (server.address() as {port: number}).port
  const testServer: TestServer = {
    host: `${address}:${port}`,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
  servers.push(testServer)
  return testServer
}

/** A small image manifest (one layer of `layerSize` bytes, as its descriptor claims), its bytes and digest. */
function manifestBytes(manifest: ImageManifest): {bytes: Buffer; digest: string} {
  const bytes = Buffer.from(JSON.stringify(manifest))
  return {bytes, digest: sha256Digest(bytes)}
}

const EMPTY_CONFIG = {mediaType: MediaType.Empty, digest: sha256Digest(Buffer.from('{}')), size: 2}
const GIB = 1024 ** 3

interface Content {
  mediaType: string
  bytes: Buffer
}

/**
 * A registry serving `manifests` (by tag or digest) and `blobs` (by digest), HEAD and GET, on
 * 127.0.0.1; `blob` may answer a blob request itself (returning true), as a hostile registry would.
 */
async function fakeRegistry(options: {
  manifests: Record<string, Content>
  blobs?: Record<string, Buffer>
  blob?: (digest: string, request: IncomingMessage, response: ServerResponse) => boolean
  /** Answers any request first when it returns true. */
  intercept?: (request: IncomingMessage, response: ServerResponse) => boolean
}): Promise<TestServer> {
  const byDigest = new Map(Object.values(options.manifests).map((content) => [sha256Digest(content.bytes), content]))
  return serve('127.0.0.1', (request, response) => {
    if (options.intercept?.(request, response)) return
    const [, kind, reference] = /^\/v2\/.+\/(manifests|blobs)\/([^/?]+)$/.exec(request.url ?? '') ?? []
    const head = request.method === 'HEAD'
    if (kind === 'manifests') {
      const content = options.manifests[reference!] ?? byDigest.get(reference!)
      if (content) {
        response.writeHead(200, {
          'content-type': content.mediaType,
          'content-length': content.bytes.length,
          'docker-content-digest': sha256Digest(content.bytes),
        })
        response.end(head ? undefined : content.bytes)
        return
      }
    } else if (kind === 'blobs') {
      if (options.blob?.(reference!, request, response)) return
      const bytes = options.blobs?.[reference!] ?? (reference === EMPTY_CONFIG.digest ? Buffer.from('{}') : undefined)
      if (bytes) {
        response.writeHead(200, {
          'content-type': 'application/octet-stream',
          'content-length': bytes.length,
          'docker-content-digest': reference,
        })
        response.end(head ? undefined : bytes)
        return
      }
    }
    response
      .writeHead(404, {'content-type': 'application/json'})
      .end('{"errors":[{"code":"NOT_FOUND","message":"unknown"}]}')
  })
}

/** Answers a blob GET with `size` zero bytes, as fast as the client reads them. */
function streamZeros(response: ServerResponse, size: number): void {
  response.writeHead(200, {'content-type': 'application/octet-stream', 'content-length': size})
  const chunk = Buffer.alloc(1024 * 1024)
  Readable.from(
    (function* () {
      for (let sent = 0; sent < size; sent += chunk.length) yield chunk.subarray(0, Math.min(chunk.length, size - sent))
    })(),
  ).pipe(response)
}

const blobGets = (server: TestServer) =>
  server.seen
    .filter((r) => r.method === 'GET' && r.path.includes('/blobs/'))
    .map((r) => r.path.replace(/.*\/blobs\//, ''))

describe('a Bearer realm on another host', () => {
  /**
   * A registry on 127.0.0.1 whose challenge sends the token request to `realm` (a token server
   * on 127.0.0.2: another host, plain HTTP); the registry accepts the token it gets.
   */
  async function registryWithRealm(realmHost: string): Promise<TestServer> {
    const {bytes} = manifestBytes({
      schemaVersion: 2,
      mediaType: MediaType.ImageManifest,
      config: EMPTY_CONFIG,
      layers: [],
    })
    return serve('127.0.0.1', (request, response) => {
      if (request.headers.authorization !== 'Bearer granted') {
        response.writeHead(401, {
          'www-authenticate': `Bearer realm="http://${realmHost}/token",service="hostile"`,
          'content-type': 'application/json',
        })
        response.end('{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}')
        return
      }
      response.writeHead(200, {'content-type': MediaType.ImageManifest, 'content-length': bytes.length})
      response.end(bytes)
    })
  }

  async function tokenServer(address: string): Promise<TestServer> {
    return serve(address, (_request, response) => {
      response.writeHead(200, {'content-type': 'application/json'})
      response.end('{"token":"granted"}')
    })
  }

  const client = () => new RegistryClient({credentials: async () => CREDENTIAL, retry: fastRetry})

  it("over plain HTTP does not receive the registry's stored credentials", async () => {
    const realm = await tokenServer('127.0.0.2')
    const registry = await registryWithRealm(realm.host)
    await new RemoteRepository(`${registry.host}/kits/hello:1`, {client: client()}).fetchManifest('1')
    expect(realm.seen).toHaveLength(1)
    expect(realm.seen[0]!.headers.authorization).toBeUndefined()
    expect(realm.seen[0]!.path).not.toContain('offline_token')
  })

  it('over plain HTTP that refuses an anonymous token request: the error says the credentials were withheld', async () => {
    const realm = await serve('127.0.0.2', (_request, response) => {
      response
        .writeHead(401, {'content-type': 'application/json'})
        .end('{"errors":[{"code":"UNAUTHORIZED","message":"who are you"}]}')
    })
    const registry = await registryWithRealm(realm.host)
    const error = await new RemoteRepository(`${registry.host}/kits/hello:1`, {client: client()})
      .fetchManifest('1')
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    expect(error).toBeInstanceOf(RegistryError)
    expect((error as RegistryError).hint).toMatch(/not sent to its token service 127\.0\.0\.2:\d+/)
    expect(realm.seen[0]!.headers.authorization).toBeUndefined()
  })

  it("over HTTPS (as Docker Hub's auth.docker.io) receives them", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'aegis-hostile-tls-'))
    try {
      selfSignedCertificate(join(dir, 'key.pem'), join(dir, 'cert.pem'), {subject: '127.0.0.2', ip: '127.0.0.2'})
      let authorization: string | undefined
      const realm = createHttpsServer(
        {key: await readFile(join(dir, 'key.pem')), cert: await readFile(join(dir, 'cert.pem'))},
        (request, response) => {
          authorization = request.headers.authorization
          response.writeHead(200, {'content-type': 'application/json'}).end('{"token":"granted"}')
        },
      )
      await new Promise<void>((resolve) => realm.listen(0, '127.0.0.2', resolve))
      try {
        const port = (realm.address() as {port: number}).port
        const {bytes} = manifestBytes({
          schemaVersion: 2,
          mediaType: MediaType.ImageManifest,
          config: EMPTY_CONFIG,
          layers: [],
        })
        const registry = await serve('127.0.0.1', (request, response) => {
          if (request.headers.authorization !== 'Bearer granted') {
            response
              .writeHead(401, {'www-authenticate': `Bearer realm="https://127.0.0.2:${port}/token",service="hostile"`})
              .end()
            return
          }
          response.writeHead(200, {'content-type': MediaType.ImageManifest}).end(bytes)
        })
        // insecure: the token service gets the registry's TLS leniency, and its certificate is self-signed.
        await new RemoteRepository(`${registry.host}/kits/hello:1`, {client: client(), insecure: true}).fetchManifest(
          '1',
        )
        expect(authorization).toBe(
          `Basic ${Buffer.from(`${CREDENTIAL.username}:${CREDENTIAL.password}`).toString('base64')}`,
        )
      } finally {
        realm.closeAllConnections()
        await new Promise((resolve) => realm.close(resolve))
      }
    } finally {
      await rm(dir, {recursive: true, force: true})
    }
  })

  it("on the registry's own host over plain HTTP (a loopback test registry) still receives them", async () => {
    const realm = await tokenServer('127.0.0.1')
    const registry = await registryWithRealm(realm.host)
    await new RemoteRepository(`${registry.host}/kits/hello:1`, {client: client()}).fetchManifest('1')
    expect(realm.seen[0]!.headers.authorization).toBe(
      `Basic ${Buffer.from(`${CREDENTIAL.username}:${CREDENTIAL.password}`).toString('base64')}`,
    )
  })
})

describe('sizes checked before a download starts', () => {
  let work: string
  beforeAll(async () => {
    work = await mkdtemp(join(tmpdir(), 'aegis-hostile-'))
  })
  afterAll(async () => {
    await rm(work, {recursive: true, force: true})
  })

  it('refuses a kit layer whose descriptor says 1 GiB (the kit limit is 256 MiB) without downloading it', async () => {
    const layer = {mediaType: MediaType.KitLayer, digest: `sha256:${'ab'.repeat(32)}`, size: GIB}
    const kit = manifestBytes({
      schemaVersion: 2,
      mediaType: MediaType.ImageManifest,
      artifactType: MediaType.KitArtifact,
      config: EMPTY_CONFIG,
      layers: [layer],
    })
    const registry = await fakeRegistry({
      manifests: {'0.1.0': {mediaType: MediaType.ImageManifest, bytes: kit.bytes}},
      blob: (digest, _request, response) => digest === layer.digest && (streamZeros(response, GIB), true),
    })
    const store = new LocalStore(join(work, 'kit-store'))
    const error = await pullKit(
      store,
      new RemoteRepository(`${registry.host}/kits/big:0.1.0`, {client: new RegistryClient({retry: fastRetry})}),
      {localReference: 'big:0.1.0'},
    ).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(blobGets(registry)).not.toContain(layer.digest)
    expect(error).toBeInstanceOf(AegisError)
    expect((error as Error).message).toMatch(
      /kit layer sha256:(ab)+ is 1073741824 bytes: more than .* a kit may have \(256 MiB unpacked\)/,
    )
    await expect(store.resolve('big:0.1.0')).rejects.toThrow()
  }, 120_000)

  const tooLarge: Array<[string, (ImageManifest | ImageIndex) & {mediaType: string}, RegExp]> = [
    [
      'an image config of 100 MiB',
      {
        schemaVersion: 2,
        mediaType: MediaType.ImageManifest,
        config: {mediaType: MediaType.ImageConfig, digest: `sha256:${'cd'.repeat(32)}`, size: 100 * 1024 * 1024},
        layers: [],
      },
      /config sha256:(cd)+, which is 104857600 bytes: more than the 16777216 a config may have/,
    ],
    [
      'a layer of 100 TiB',
      {
        schemaVersion: 2,
        mediaType: MediaType.ImageManifest,
        config: EMPTY_CONFIG,
        layers: [{mediaType: MediaType.LayerTarGzip, digest: `sha256:${'ef'.repeat(32)}`, size: 100 * 1024 ** 4}],
      },
      /layer sha256:(ef)+, which is 109951162777600 bytes: more than/,
    ],
    [
      'a layer of a negative size',
      {
        schemaVersion: 2,
        mediaType: MediaType.ImageManifest,
        config: EMPTY_CONFIG,
        layers: [{mediaType: MediaType.LayerTarGzip, digest: `sha256:${'ef'.repeat(32)}`, size: -1}],
      },
      /layer sha256:(ef)+, which has size -1, not a byte count/,
    ],
    [
      'a manifest of 5 MiB in an index',
      {
        schemaVersion: 2,
        mediaType: MediaType.ImageIndex,
        manifests: [{mediaType: MediaType.ImageManifest, digest: `sha256:${'12'.repeat(32)}`, size: 5 * 1024 * 1024}],
      },
      /manifest sha256:(12)+, which is 5242880 bytes: more than the 4194304 a manifest may have/,
    ],
  ]
  it.each(tooLarge)('refuses %s before any blob or child manifest is fetched', async (_what, manifest, message) => {
    const {bytes} = manifestBytes(manifest as ImageManifest)
    const registry = await fakeRegistry({manifests: {'1': {mediaType: manifest.mediaType, bytes}}})
    const store = await LayoutStore.create(join(work, `store-${Math.random().toString(36).slice(2)}`))
    const error = await pullImage(
      new RemoteRepository(`${registry.host}/big/app:1`, {client: new RegistryClient({retry: fastRetry})}),
      store,
      {localReference: 'x'},
    ).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(AegisError)
    expect((error as Error).message).toMatch(message)
    expect(blobGets(registry)).toEqual([])
    expect(registry.seen.filter((r) => r.method === 'GET' && r.path.includes('/manifests/sha256:12'))).toEqual([])
  })
})

describe('deadlines: a body trickled to keep a pull alive', () => {
  const saved = {...process.env}
  let work: string
  beforeAll(async () => {
    // Small limits, so a trickle is caught in seconds: every exchange gets 1.5 s plus its bytes at 1 MiB/s.
    process.env.AEGIS_REGISTRY_DEADLINE = '1.5'
    process.env.AEGIS_REGISTRY_MIN_RATE = String(1024 * 1024)
    work = await mkdtemp(join(tmpdir(), 'aegis-hostile-deadline-'))
  })
  afterAll(async () => {
    process.env = saved
    await rm(work, {recursive: true, force: true})
  })

  /** Sends `body`'s first `fast` bytes at once, then one byte every 100 ms (a trickle the idle timeout never sees). */
  function trickle(
    response: ServerResponse,
    body: Buffer,
    fast: number,
    headers: Record<string, string | number> = {},
  ): void {
    response.writeHead(200, {'content-type': 'application/octet-stream', 'content-length': body.length, ...headers})
    response.write(body.subarray(0, fast))
    let offset = fast
    const timer = setInterval(() => {
      if (response.destroyed || offset >= body.length) {
        clearInterval(timer)
        response.end()
        return
      }
      response.write(body.subarray(offset, ++offset))
    }, 100)
  }

  /** `promise`'s error, or 'still running' when it has not settled within `ms`. */
  async function errorWithin(promise: Promise<unknown>, ms: number): Promise<unknown> {
    return Promise.race([
      promise.then(
        () => 'succeeded',
        (e: unknown) => e,
      ),
      new Promise((resolve) => setTimeout(() => resolve('still running'), ms)),
    ])
  }

  async function trickledLayerPull(
    layerSize: number,
    fast: number,
  ): Promise<{error: unknown; store: LocalStore; seconds: number}> {
    const layerBytes = randomBytes(layerSize)
    const layer = {mediaType: MediaType.LayerTarGzip, digest: sha256Digest(layerBytes), size: layerSize}
    const image = manifestBytes({
      schemaVersion: 2,
      mediaType: MediaType.ImageManifest,
      config: EMPTY_CONFIG,
      layers: [layer],
    })
    const registry = await fakeRegistry({
      manifests: {'1': {mediaType: MediaType.ImageManifest, bytes: image.bytes}},
      blob: (digest, request, response) =>
        digest === layer.digest && request.method === 'GET' && (trickle(response, layerBytes, fast), true),
    })
    const store = new LocalStore(join(work, `store-${layerSize}`))
    const started = Date.now()
    const pull = pullImage(
      new RemoteRepository(`${registry.host}/slow/app:1`, {client: new RegistryClient({retry: fastRetry})}),
      store,
      {localReference: 'slow:1'},
    )
    const error = await errorWithin(pull, 12_000)
    return {error, store, seconds: (Date.now() - started) / 1000}
  }

  it("ends a small blob's download (main thread) at its deadline, keeping nothing", async () => {
    const {error, store, seconds} = await trickledLayerPull(64 * 1024, 1024)
    expect(error).toBeInstanceOf(AegisError)
    expect((error as Error).message).toMatch(
      /GET http:\/\/127\.0\.0\.1:\d+\/v2\/slow\/app\/blobs\/sha256:[0-9a-f]{64} did not finish within 1\.6 s/,
    )
    expect((error as AegisError).hint).toMatch(/AEGIS_REGISTRY_DEADLINE/)
    expect(seconds).toBeLessThan(6)
    await expect(store.resolve('slow:1')).rejects.toThrow()
    expect(await readdir(store.paths.tmpDir)).toEqual([])
  }, 20_000)

  it("ends a large blob's download (direct download) at its deadline, keeping nothing", async () => {
    const {error, store, seconds} = await trickledLayerPull(5 * 1024 * 1024, 1024 * 1024)
    expect(error).toBeInstanceOf(AegisError)
    expect((error as Error).message).toMatch(
      /GET http:\/\/127\.0\.0\.1:\d+\/v2\/slow\/app\/blobs\/sha256:[0-9a-f]{64} did not finish within 6\.5 s/,
    )
    expect(seconds).toBeLessThan(12)
    await expect(store.resolve('slow:1')).rejects.toThrow()
    expect(await readdir(store.paths.tmpDir)).toEqual([])
  }, 20_000)

  it('ends a manifest request at its deadline', async () => {
    const image = manifestBytes({
      schemaVersion: 2,
      mediaType: MediaType.ImageManifest,
      config: EMPTY_CONFIG,
      layers: [],
    })
    const registry = await serve('127.0.0.1', (_request, response) =>
      trickle(response, image.bytes, 10, {'content-type': MediaType.ImageManifest}),
    )
    const error = await errorWithin(
      new RemoteRepository(`${registry.host}/slow/app:1`, {
        client: new RegistryClient({retry: fastRetry}),
      }).fetchManifest('1'),
      12_000,
    )
    expect(error).toBeInstanceOf(AegisError)
    expect((error as Error).message).toMatch(
      /GET http:\/\/127\.0\.0\.1:\d+\/v2\/slow\/app\/manifests\/1 did not finish within 1\.5 s/,
    )
  }, 20_000)

  it('gives up a silent connection after AEGIS_REGISTRY_IDLE_TIMEOUT', async () => {
    process.env.AEGIS_REGISTRY_IDLE_TIMEOUT = '0.3'
    process.env.AEGIS_REGISTRY_DEADLINE = '60'
    try {
      const registry = await serve('127.0.0.1', () => undefined)
      const error = await errorWithin(
        new RemoteRepository(`${registry.host}/silent/app:1`, {
          client: new RegistryClient({retry: fastRetry}),
        }).fetchManifest('1'),
        8_000,
      )
      expect(error).toBeInstanceOf(AegisError)
      expect((error as Error).message).toMatch(/failed after 2 attempts: no data for 0\.3 s/)
    } finally {
      process.env.AEGIS_REGISTRY_DEADLINE = '1.5'
      delete process.env.AEGIS_REGISTRY_IDLE_TIMEOUT
    }
  }, 20_000)
})

describe('Retry-After', () => {
  /** A registry whose first manifest GET is answered 429 with `Retry-After: retryAfter`, the next ones with the manifest. */
  async function throttling(retryAfter: string): Promise<TestServer> {
    const {bytes} = manifestBytes({
      schemaVersion: 2,
      mediaType: MediaType.ImageManifest,
      config: EMPTY_CONFIG,
      layers: [],
    })
    let answered = 0
    return serve('127.0.0.1', (_request, response) => {
      if (answered++ === 0) {
        response
          .writeHead(429, {'retry-after': retryAfter, 'content-type': 'application/json'})
          .end('{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}')
        return
      }
      response.writeHead(200, {'content-type': MediaType.ImageManifest}).end(bytes)
    })
  }

  it('says so on the status channel when a wait begins, then waits', async () => {
    const registry = await throttling('1')
    const lines: string[] = []
    const started = Date.now()
    await new RemoteRepository(`${registry.host}/busy/app:1`, {
      client: new RegistryClient({retry: fastRetry}),
      notify: (line) => lines.push(line),
    }).fetchManifest('1')
    expect(Date.now() - started).toBeGreaterThanOrEqual(950)
    expect(lines).toEqual([
      expect.stringMatching(
        /^127\.0\.0\.1:\d+ answered 429 Too Many Requests and asked to wait 1 s: retrying at \d\d:\d\d:\d\d$/,
      ),
    ])
  })

  it('refuses to wait longer than 60 s: an error saying how long the registry asked for', async () => {
    const registry = await throttling('3600')
    const started = Date.now()
    const error = await new RemoteRepository(`${registry.host}/busy/app:1`, {
      client: new RegistryClient({retry: fastRetry}),
    })
      .fetchManifest('1')
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    expect(Date.now() - started).toBeLessThan(2000)
    expect(error).toBeInstanceOf(RegistryError)
    expect((error as Error).message).toMatch(
      /^GET http:\/\/127\.0\.0\.1:\d+\/v2\/busy\/app\/manifests\/1: the registry answered 429 Too Many Requests and asked to wait 3600 s, longer than the 60 s aegis-kit waits\.$/,
    )
    expect((error as RegistryError).hint).toMatch(/later/)
    expect(registry.seen).toHaveLength(1)
  })
})

describe('Retry-After in the CLI', () => {
  it('images pull and pull print the wait on stderr when it begins', async () => {
    const config = Buffer.from(
      JSON.stringify({architecture: 'amd64', os: 'linux', rootfs: {type: 'layers', diff_ids: []}}),
    )
    const configDesc = {mediaType: MediaType.ImageConfig, digest: sha256Digest(config), size: config.length}
    const image = manifestBytes({schemaVersion: 2, mediaType: MediaType.ImageManifest, config: configDesc, layers: []})
    let throttled = false
    const registry = await fakeRegistry({
      manifests: {'1': {mediaType: MediaType.ImageManifest, bytes: image.bytes}},
      blobs: {[configDesc.digest]: config},
      intercept: (_request, response) => {
        if (throttled) return false
        throttled = true
        response
          .writeHead(429, {'retry-after': '1', 'content-type': 'application/json'})
          .end('{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}')
        return true
      },
    })
    const sandbox = await createSandbox()
    try {
      const result = await sandbox.run(['images', 'pull', `${registry.host}/busy/app:1`, '--plain-http'])
      expect(result.exitCode).toBe(0)
      expect(result.stderr).toMatch(
        /^127\.0\.0\.1:\d+ answered 429 Too Many Requests and asked to wait 1 s: retrying at \d\d:\d\d:\d\d$/m,
      )
      // A kit pull says so too (this image is no kit, so the pull then fails: the line came first).
      throttled = false
      const kitPull = await sandbox.run(['pull', `${registry.host}/busy/app:1`, '--plain-http'])
      expect(kitPull.stderr).toMatch(
        /^127\.0\.0\.1:\d+ answered 429 Too Many Requests and asked to wait 1 s: retrying at \d\d:\d\d:\d\d$/m,
      )
    } finally {
      await sandbox.cleanup()
    }
  }, 60_000)
})
