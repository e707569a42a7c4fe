// Capability tokens and claims (src/runner/capabilities.ts), and the guest API's check of the
// token a connection carries. A guest presenting another instance's token cannot be caused with
// a real VM (its harness sends only its own, and no token ever leaves the host), so the guest
// API is served here on a real socket with the token a compromised harness would send.
import {mkdtempSync} from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {
  type CapabilityClaims,
  CapabilityKey,
  childClaims,
  claimsOf,
  refuseSpawn,
  refuseToken,
} from '../../src/runner/capabilities.js'
import type {Children} from '../../src/runner/children.js'
import {guestApi, type RuntimePorts} from '../../src/runner/guest-api.js'
import type {InstanceLifecycle} from '../../src/runner/lifecycle.js'
import type {ExposeMapping} from '../../src/runner/options.js'

const dataDir = () => mkdtempSync(path.join(tmpdir(), 'aegis-kit-caps-'))

const bot = {
  spawn: true,
  spawn_depth: 2,
  max_children: 2,
  allowed_profiles: ['work'],
  max_memory_mb: 2048,
  max_vcpus: 2,
  allowed_secrets: ['A', 'B'],
  max_expose_ports: 1,
}

describe('tokens', () => {
  it("opens only its own host's tokens, untampered, and names whose a token is", () => {
    const key = CapabilityKey.forDataDir(dataDir())
    const a = claimsOf('a', bot)
    const b = claimsOf('b', bot)
    const tokenA = key.seal(a)
    expect(key.open(tokenA)).toEqual(a)
    expect(refuseToken(key, tokenA, a)).toBeUndefined()
    expect(refuseToken(key, tokenA, b)).toBe('token: made for instance a, not b')
    // Another start of the same name is another token.
    expect(refuseToken(key, tokenA, claimsOf('a', bot))).toBe('token: made for an earlier start of a')
    const flipped = Buffer.from(tokenA, 'base64url')
    flipped[flipped.length - 1]! ^= 1
    expect(refuseToken(key, flipped.toString('base64url'), a)).toBe('token: not a capability token of this host')
    const otherHost = CapabilityKey.forDataDir(dataDir())
    expect(refuseToken(otherHost, tokenA, a)).toBe('token: not a capability token of this host')
    expect(refuseToken(key, '', a)).toBe('token: the request carried no capability token')
    const expired = claimsOf('a', {...bot, ttl: '1s'}, {}, Date.now() - 5000)
    expect(refuseToken(key, key.seal(expired), expired)).toMatch(/^exp: the token expired at /)
  })

  it('keeps one key per data directory (0600), made once', async () => {
    const dir = dataDir()
    const first = CapabilityKey.forDataDir(dir)
    const token = first.seal(claimsOf('x', bot))
    expect(CapabilityKey.forDataDir(dir).open(token)?.sub).toBe('x')
    const {statSync} = await import('node:fs')
    expect(statSync(path.join(dir, 'capability.key')).mode & 0o777).toBe(0o600)
  })
})

describe('claims', () => {
  it("a child's are the intersection of its parent's and what it asked for, spawn_depth one lower", () => {
    const parent = claimsOf('bot', bot)
    const child = childClaims(parent, 'bot.work', {
      spawn: true,
      spawn_depth: 5,
      max_children: 9,
      max_memory_mb: 4096,
      allowed_secrets: ['B', 'C'],
    })
    expect(child).toMatchObject({
      sub: 'bot.work',
      spawn: true,
      spawn_depth: 1,
      max_children: 2,
      max_memory_mb: 2048,
      max_vcpus: 2,
      allowed_secrets: ['B'],
      allowed_profiles: ['work'],
      max_expose_ports: 1,
    })
    expect(child.exp).toBeLessThanOrEqual(parent.exp)
    // Asking for nothing gives nothing.
    expect(childClaims(parent, 'bot.quiet', undefined)).toMatchObject({spawn: false, max_children: 0})
  })

  it('refuses a request over each limit, naming it', () => {
    const claims = claimsOf('bot', bot)
    const ask = {kit: 'self', profile: 'work', memoryMb: 512, vcpus: 1, secrets: ['A'], exposes: 1}
    expect(refuseSpawn(claims, ask, 0)).toBeUndefined()
    expect(refuseSpawn(claims, ask, 2)).toMatch(/^max_children: /)
    expect(refuseSpawn(claims, {...ask, memoryMb: 4096}, 0)).toMatch(/^max_memory_mb: /)
    expect(refuseSpawn(claims, {...ask, kit: 'openclaw'}, 0)).toMatch(/^allowed_kits: /)
    expect(refuseSpawn(claimsOf('plain', undefined), ask, 0)).toMatch(/^spawn: /)
    expect(refuseSpawn(claimsOf('flat', {...bot, spawn_depth: 0}), ask, 0)).toMatch(/^spawn_depth: /)
  })

  it('run --cap lowers a claim and never raises one', () => {
    expect(claimsOf('bot', bot, {max_children: '1', allowed_secrets: 'A'})).toMatchObject({
      max_children: 1,
      allowed_secrets: ['A'],
    })
    expect(() => claimsOf('bot', bot, {max_children: '3'})).toThrow('the profile allows at most 2')
    expect(() => claimsOf('bot', bot, {allowed_secrets: 'A,Z'})).toThrow("Z is not in the profile's allowed_secrets")
    expect(() => claimsOf('plain', undefined, {spawn: 'true'})).toThrow('the profile does not allow spawning')
    expect(() => claimsOf('bot', bot, {ttl: '48h'})).toThrow("the profile's token lasts until")
    expect(() => claimsOf('bot', bot, {nonsense: '1'})).toThrow('no such claim')
  })
})

/**
 * Instance b's guest API on a real loopback socket, each connection carrying the token `presented`
 * gives then. Its lifecycle and children are empty stand-ins: the requests below never reach them.
 */
async function serveGuestApi(
  key: CapabilityKey,
  claims: CapabilityClaims,
  ports: RuntimePorts | undefined,
  presented: () => string,
  log: (line: string) => void,
): Promise<{api: ReturnType<typeof guestApi>; server: net.Server; port: number}> {
  const api = guestApi({
    name: 'b',
    lifecycle: {} as InstanceLifecycle,
    children: {} as Children,
    claims,
    key,
    registry: undefined,
    ports,
    log,
  })
  const server = net.createServer((socket) => api.serve(socket, presented()))
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {api, server, port: (server.address() as net.AddressInfo).port}
}

describe('the guest API checks the token of every connection', () => {
  it("answers 403 with the reason to a connection carrying another instance's token, and serves its own", async () => {
    const key = CapabilityKey.forDataDir(dataDir())
    const own = claimsOf('b', bot)
    const logged: string[] = []
    let presented = ''
    // Only GET /v1/self is asked below: it reads the claims and the (absent) registry, nothing else.
    const {api, server, port} = await serveGuestApi(
      key,
      own,
      undefined,
      () => presented,
      (line) => logged.push(line),
    )
    const self = () =>
      new Promise<{status: number; body: Record<string, unknown>}>((resolve, reject) => {
        http
          .get({port, host: '127.0.0.1', path: '/v1/self', agent: false}, (response) => {
            let text = ''
            response.on('data', (chunk: Buffer) => (text += chunk.toString()))
            response.on('end', () => resolve({status: response.statusCode ?? 0, body: JSON.parse(text)}))
          })
          .on('error', reject)
      })
    try {
      presented = key.seal(claimsOf('a', bot))
      expect(await self()).toEqual({
        status: 403,
        body: {error: 'token: made for instance a, not b', limit: 'token'},
      })
      expect(logged).toEqual(['refused a guest API connection: token: made for instance a, not b'])
      presented = key.seal(own)
      const served = await self()
      expect(served.status).toBe(200)
      expect(served.body.id).toBe('b')
      expect(JSON.stringify(served.body)).not.toContain(presented)
    } finally {
      api.close()
      server.close()
    }
  })

  it('two self-expose requests at once cannot pass max_expose_ports together', async () => {
    const key = CapabilityKey.forDataDir(dataDir())
    const own = claimsOf('b', {max_expose_ports: 1})
    // A stand-in for the relay (a slow add, so both requests are in flight together): the race is
    // the API's to prevent, and two requests cannot be made to overlap on purpose through a VM.
    const added: ExposeMapping[] = []
    const ports: RuntimePorts = {
      all: () => [...added],
      addedAtRunTime: () => [...added],
      async expose(guestPort, hostPort) {
        await new Promise((resolve) => setTimeout(resolve, 100))
        const mapping = {guestPort, hostPort: hostPort ?? 40000 + guestPort}
        added.push(mapping)
        return mapping
      },
    }
    const token = key.seal(own)
    const {api, server, port} = await serveGuestApi(
      key,
      own,
      ports,
      () => token,
      () => undefined,
    )
    const expose = (guestPort: number) =>
      new Promise<number>((resolve, reject) => {
        const request = http.request(
          {port, host: '127.0.0.1', method: 'POST', path: '/v1/self/expose', agent: false},
          (response) => {
            response.resume()
            response.on('end', () => resolve(response.statusCode ?? 0))
          },
        )
        request.on('error', reject)
        request.end(JSON.stringify({port: guestPort}))
      })
    try {
      expect((await Promise.all([expose(8080), expose(8081)])).sort()).toEqual([200, 403])
      expect(added).toHaveLength(1)
    } finally {
      api.close()
      server.close()
    }
  })
})
