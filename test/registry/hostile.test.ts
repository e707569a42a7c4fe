/**
 * The registry client against hostile registries (issue 11, observation 5): faults the real
 * docker-registry cannot produce, so each test runs a small node:http server that misbehaves on
 * purpose (a Bearer realm on another host over plain HTTP, ...).
 */
import {execFileSync} from 'node:child_process'
import {mkdtemp, readFile, rm} from 'node:fs/promises'
import {createServer, type IncomingMessage, type Server, type ServerResponse} from 'node:http'
import {createServer as createHttpsServer} from 'node:https'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterEach, describe, expect, it} from 'vitest'
import {MediaType, type ImageManifest} from '../../src/oci/types.js'
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
async function serve(address: string, handle: (request: IncomingMessage, response: ServerResponse) => void): Promise<TestServer> {
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
    close: () => new Promise<void>((resolve) => {
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

describe('a Bearer realm on another host', () => {
  /**
   * A registry on 127.0.0.1 whose challenge sends the token request to `realm` (a token server
   * on 127.0.0.2: another host, plain HTTP); the registry accepts the token it gets.
   */
  async function registryWithRealm(realmHost: string): Promise<TestServer> {
    const {bytes} = manifestBytes({schemaVersion: 2, mediaType: MediaType.ImageManifest, config: EMPTY_CONFIG, layers: []})
    return serve('127.0.0.1', (request, response) => {
      if (request.headers.authorization !== 'Bearer granted') {
        response.writeHead(401, {'www-authenticate': `Bearer realm="http://${realmHost}/token",service="hostile"`, 'content-type': 'application/json'})
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

  it('over plain HTTP does not receive the registry\'s stored credentials', async () => {
    const realm = await tokenServer('127.0.0.2')
    const registry = await registryWithRealm(realm.host)
    await new RemoteRepository(`${registry.host}/kits/hello:1`, {client: client()}).fetchManifest('1')
    expect(realm.seen).toHaveLength(1)
    expect(realm.seen[0]!.headers.authorization).toBeUndefined()
    expect(realm.seen[0]!.path).not.toContain('offline_token')
  })

  it('over plain HTTP that refuses an anonymous token request: the error says the credentials were withheld', async () => {
    const realm = await serve('127.0.0.2', (_request, response) => {
      response.writeHead(401, {'content-type': 'application/json'}).end('{"errors":[{"code":"UNAUTHORIZED","message":"who are you"}]}')
    })
    const registry = await registryWithRealm(realm.host)
    const error = await new RemoteRepository(`${registry.host}/kits/hello:1`, {client: client()}).fetchManifest('1').then(() => undefined, (e: unknown) => e)
    expect(error).toBeInstanceOf(RegistryError)
    expect((error as RegistryError).hint).toMatch(/not sent to its token service 127\.0\.0\.2:\d+/)
    expect(realm.seen[0]!.headers.authorization).toBeUndefined()
  })

  it('over HTTPS (as Docker Hub\'s auth.docker.io) receives them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'aegis-hostile-tls-'))
    try {
      execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=127.0.0.2', '-addext', 'subjectAltName=IP:127.0.0.2'], {stdio: 'ignore'})
      let authorization: string | undefined
      const realm = createHttpsServer({key: await readFile(join(dir, 'key.pem')), cert: await readFile(join(dir, 'cert.pem'))}, (request, response) => {
        authorization = request.headers.authorization
        response.writeHead(200, {'content-type': 'application/json'}).end('{"token":"granted"}')
      })
      await new Promise<void>((resolve) => realm.listen(0, '127.0.0.2', resolve))
      try {
        const port = (realm.address() as {port: number}).port
        const {bytes} = manifestBytes({schemaVersion: 2, mediaType: MediaType.ImageManifest, config: EMPTY_CONFIG, layers: []})
        const registry = await serve('127.0.0.1', (request, response) => {
          if (request.headers.authorization !== 'Bearer granted') {
            response.writeHead(401, {'www-authenticate': `Bearer realm="https://127.0.0.2:${port}/token",service="hostile"`}).end()
            return
          }
          response.writeHead(200, {'content-type': MediaType.ImageManifest}).end(bytes)
        })
        // insecure: the token service gets the registry's TLS leniency, and its certificate is self-signed.
        await new RemoteRepository(`${registry.host}/kits/hello:1`, {client: client(), insecure: true}).fetchManifest('1')
        expect(authorization).toBe(`Basic ${Buffer.from(`${CREDENTIAL.username}:${CREDENTIAL.password}`).toString('base64')}`)
      } finally {
        realm.closeAllConnections()
        await new Promise((resolve) => realm.close(resolve))
      }
    } finally {
      await rm(dir, {recursive: true, force: true})
    }
  })

  it('on the registry\'s own host over plain HTTP (a loopback test registry) still receives them', async () => {
    const realm = await tokenServer('127.0.0.1')
    const registry = await registryWithRealm(realm.host)
    await new RemoteRepository(`${registry.host}/kits/hello:1`, {client: client()}).fetchManifest('1')
    expect(realm.seen[0]!.headers.authorization).toBe(`Basic ${Buffer.from(`${CREDENTIAL.username}:${CREDENTIAL.password}`).toString('base64')}`)
  })
})
