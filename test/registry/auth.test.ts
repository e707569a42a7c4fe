/**
 * Authentication against real registries: htpasswd Basic auth and token auth (a JWT issuer in
 * test/helpers/registry.ts), credentials from a docker config and a credential helper, and no
 * secret in any error.
 */
import {chmod, mkdir, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {createServer} from 'node:http'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {AegisError} from '../../src/errors.js'
import type {ImageManifest} from '../../src/oci/types.js'
import {RegistryClient} from '../../src/registry/auth.js'
import {DockerCredentials} from '../../src/registry/credentials.js'
import {pullImage, pushImage} from '../../src/registry/push-pull.js'
import {RegistryError} from '../../src/registry/registry-error.js'
import {RemoteRepository} from '../../src/registry/repository.js'
import {LocalStore} from '../../src/store/local-store.js'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'
import {makeImage, skopeoRawManifest, startFaultProxy} from './fixtures.js'
import {LayoutStore} from './layout-store.js'

let basic: TestRegistry
let token: TestRegistry
let work: string
let image: LayoutStore
let largeImage: LayoutStore
const fastRetry = {maxAttempts: 2, minDelayMs: 20, maxDelayMs: 50}

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'aegis-auth-test-'))
  ;[basic, token, image] = await Promise.all([
    startRegistry({auth: 'basic'}),
    startRegistry({auth: 'token'}),
    makeImage(join(work, 'image'), {layers: 2, layerSize: 32 * 1024}),
  ])
  largeImage = await makeImage(join(work, 'large-image'), {layers: 1, layerSize: 5 * 1024 * 1024})
})

afterAll(async () => {
  await Promise.all([basic?.stop(), token?.stop()])
  await rm(work, {recursive: true, force: true})
})

/** A docker config dir holding `config`, and the DockerCredentials reading it. */
async function dockerConfig(
  name: string,
  config: unknown,
  extraEnv: NodeJS.ProcessEnv = {},
): Promise<DockerCredentials> {
  const dir = join(work, name)
  await mkdir(dir, {recursive: true})
  await writeFile(join(dir, 'config.json'), JSON.stringify(config))
  return new DockerCredentials({env: {...process.env, DOCKER_CONFIG: dir, ...extraEnv}})
}

function authEntry(registry: TestRegistry, password = registry.credentials!.password) {
  return {
    auths: {[registry.host]: {auth: Buffer.from(`${registry.credentials!.username}:${password}`).toString('base64')}},
  }
}

/** Every string an error exposes: message, hint, stack and the whole cause chain. */
function everythingIn(error: unknown): string {
  const parts: string[] = []
  for (let e: unknown = error, depth = 0; e !== undefined && depth < 10; depth++) {
    if (e instanceof Error) {
      parts.push(e.message, e.stack ?? '', (e as AegisError).hint ?? '', JSON.stringify(e))
      e = e.cause
    } else {
      parts.push(String(e))
      e = undefined
    }
  }
  return parts.join('\n')
}

function expectNoSecret(error: unknown, secret: string): void {
  const text = everythingIn(error)
  expect(text).not.toContain(secret)
  expect(text).not.toContain(encodeURIComponent(secret))
  expect(text).not.toContain(Buffer.from(secret).toString('base64').slice(0, 12))
}

describe('Basic auth (htpasswd)', () => {
  it('pushes and pulls with credentials from auths[host].auth in $DOCKER_CONFIG', async () => {
    const credentials = await dockerConfig('basic-config', authEntry(basic))
    const client = new RegistryClient({credentials: credentials.source, retry: fastRetry})
    const pushed = await pushImage(image, 'test', new RemoteRepository(`${basic.host}/private/app:1`, {client}))
    const localManifest = await readFile(image.blobPath(pushed.root.digest), 'utf8')
    expect(await skopeoRawManifest(`${basic.host}/private/app:1`, basic.credentials)).toBe(localManifest)
    const store = await LayoutStore.create(join(work, 'basic-pulled'))
    const pulled = await pullImage(new RemoteRepository(`${basic.host}/private/app:1`, {client}), store, {
      localReference: 'x',
    })
    expect(pulled.root.digest).toBe(pushed.root.digest)
  })

  it('without credentials says to log in', async () => {
    const client = new RegistryClient({retry: fastRetry})
    const error = await pushImage(image, 'test', new RemoteRepository(`${basic.host}/private/app:1`, {client})).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(RegistryError)
    expect((error as RegistryError).status).toBe(401)
    expect((error as RegistryError).hint).toContain(`aegis-kit login ${basic.host}`)
  })

  it('with a wrong password fails clearly and never shows the password', async () => {
    const wrong = `Wr0ng:${basic.credentials!.password}:oops`
    const credentials = await dockerConfig('basic-wrong', authEntry(basic, wrong))
    const client = new RegistryClient({credentials: credentials.source, retry: fastRetry})
    const error = await pullImage(
      new RemoteRepository(`${basic.host}/private/app:1`, {client}),
      await LayoutStore.create(join(work, 'basic-wrong-store')),
    ).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(RegistryError)
    expect((error as Error).message).toMatch(/failed with 401/)
    expectNoSecret(error, wrong)
  })

  // A large blob into the local store takes the direct download (src/registry/direct-download.ts).
  it.each([
    ['through http.ts', 'small'],
    ['through the direct download', 'large'],
  ] as const)('never sends Authorization to a redirect on another host (%s)', async (_how, size) => {
    const source = size === 'small' ? image : largeImage
    const manifest = JSON.parse(
      await readFile(source.blobPath((await source.resolve('test')).digest), 'utf8'),
    ) as ImageManifest
    const layer = manifest.layers[0]!
    const seenAuthorization: Array<string | undefined> = []
    // The "CDN": another host name (localhost, not 127.0.0.1) serving the blob itself.
    const cdn = createServer((request, response) => {
      seenAuthorization.push(request.headers.authorization)
      void source
        .fetch(layer)
        .then((stream) => stream.pipe(response.writeHead(200, {'content-length': String(layer.size)})))
    })
    await new Promise<void>((resolve) => cdn.listen(0, '127.0.0.1', resolve))
    const cdnPort = (cdn.address() as {port: number}).port
    const proxy = await startFaultProxy(basic.url, (request) =>
      request.method === 'GET' && request.url?.endsWith(`/blobs/${layer.digest}`)
        ? {kind: 'respond', status: 307, headers: {location: `http://localhost:${cdnPort}/blob?sig=abc`}}
        : {kind: 'pass'},
    )
    try {
      const credentials = await dockerConfig('basic-redirect', {
        auths: {[proxy.host]: authEntry(basic).auths[basic.host]},
      })
      const client = new RegistryClient({credentials: credentials.source, retry: fastRetry})
      const store =
        size === 'small'
          ? await LayoutStore.create(join(work, 'redirect-pulled'))
          : new LocalStore(join(work, 'redirect-pulled-large'))
      const repository = size === 'small' ? 'private/app:1' : 'private/large:1'
      if (size === 'large')
        await pushImage(
          largeImage,
          'test',
          new RemoteRepository(`${basic.host}/${repository}`, {
            client: new RegistryClient({credentials: (await dockerConfig('basic-large', authEntry(basic))).source}),
          }),
        )
      await pullImage(new RemoteRepository(`${proxy.host}/${repository}`, {client}), store, {localReference: 'x:1'})
      expect(await store.exists(layer)).toBe(true)
      expect(seenAuthorization).toEqual([undefined])
      expect(proxy.seen.find((r) => r.path.endsWith(`/blobs/${layer.digest}`))?.headers.authorization).toMatch(
        /^Basic /,
      )
    } finally {
      await proxy.close()
      cdn.closeAllConnections()
      await new Promise((resolve) => cdn.close(resolve))
    }
  })
})

describe('token auth (JWT issuer)', () => {
  it('gets a token with Basic credentials once, then refreshes with the OAuth2 refresh token', async () => {
    const credentials = await dockerConfig('token-config', authEntry(token))
    const client = new RegistryClient({credentials: credentials.source, retry: fastRetry})
    const requests = token.tokenServer!.requests
    const pushed = await pushImage(image, 'test', new RemoteRepository(`${token.host}/team/app:1`, {client}))
    const afterFirstPush = requests.length
    expect(requests.filter((r) => r.method === 'GET' && r.basic).length).toBe(1)
    expect(requests[0]!.scopes).toContain('repository:team/app:pull,push')

    // Same repository again: cached tokens, no token requests at all.
    await pushImage(image, 'test', new RemoteRepository(`${token.host}/team/app:1`, {client}))
    expect(requests.length).toBe(afterFirstPush)

    // Another repository needs another scope: the refresh token is used, not the password.
    const store = await LayoutStore.create(join(work, 'token-pulled'))
    await pushImage(image, 'test', new RemoteRepository(`${token.host}/team/other:1`, {client}))
    await pullImage(new RemoteRepository(`${token.host}/team/other:1`, {client}), store, {localReference: 'x'})
    const refreshes = requests.slice(afterFirstPush)
    expect(refreshes.length).toBeGreaterThan(0)
    expect(refreshes.every((r) => r.method === 'POST' && r.grantType === 'refresh_token' && !r.basic)).toBe(true)
    expect((await store.resolve('x')).digest).toBe(pushed.root.digest)
    expect(await skopeoRawManifest(`${token.host}/team/other:1`, token.credentials)).toContain('"layers"')
  })

  it('uses a docker-credential-<name> helper named in credHelpers, with the host on stdin', async () => {
    const bin = join(work, 'helper-bin')
    await mkdir(bin, {recursive: true})
    const {username, password} = token.credentials!
    const helper = join(bin, 'docker-credential-aegistest')
    await writeFile(
      helper,
      [
        '#!/bin/sh',
        `[ "$1" = get ] || exit 1`,
        'read host',
        `[ "$host" = "${token.host}" ] || { echo "credentials not found in native keychain"; exit 1; }`,
        `printf '%s' '${JSON.stringify({ServerURL: token.host, Username: username, Secret: password})}'`,
        '',
      ].join('\n'),
    )
    await chmod(helper, 0o755)
    const credentials = await dockerConfig(
      'helper-config',
      {credHelpers: {[token.host]: 'aegistest'}},
      {PATH: `${bin}:${process.env.PATH}`},
    )
    expect(await credentials.get(token.host)).toEqual({username, password})
    const client = new RegistryClient({credentials: credentials.source, retry: fastRetry})
    const pushed = await pushImage(image, 'test', new RemoteRepository(`${token.host}/helper/app:1`, {client}))
    expect((await new RemoteRepository(`${token.host}/helper/app`, {client}).resolve('1')).digest).toBe(
      pushed.root.digest,
    )
  })

  it('with a wrong password names the user and the status but not the password', async () => {
    const wrong = `N0t-${token.credentials!.password}`
    const credentials = await dockerConfig('token-wrong', authEntry(token, wrong))
    const client = new RegistryClient({credentials: credentials.source, retry: fastRetry})
    const error = await pushImage(image, 'test', new RemoteRepository(`${token.host}/team/app:2`, {client})).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(RegistryError)
    expect((error as Error).message).toMatch(
      new RegExp(
        `Authentication to ${token.host} failed for user ${token.credentials!.username}: GET .*/token.* failed with 401`,
      ),
    )
    expect((error as RegistryError).code).toBe('UNAUTHORIZED')
    expectNoSecret(error, wrong)
  })

  it('anonymously is refused with a 401 that says to log in', async () => {
    const client = new RegistryClient({retry: fastRetry})
    const error = await new RemoteRepository(`${token.host}/team/app`, {client}).resolve('1').then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(RegistryError)
    expect((error as RegistryError).status).toBe(401)
    expect((error as RegistryError).hint).toMatch(/login/)
  })
})
