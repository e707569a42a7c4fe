/**
 * Capability tokens: what an instance may ask of the guest API (Aegis's claims), sealed with
 * AES-256-GCM under a host key that never enters a guest, so a guest can neither read, forge nor
 * alter one. Each instance's supervisor holds its own token and gives it to the harness (the
 * harness sends it with every tunnel connection); the supervisor accepts a connection only with
 * the token it holds, unexpired. A child's claims are the intersection of its parent's and what
 * it asked for, with spawn_depth one lower.
 */
import {createCipheriv, createDecipheriv, randomBytes} from 'node:crypto'
import {mkdirSync, openSync, readFileSync, writeSync, closeSync} from 'node:fs'
import path from 'node:path'
import {AegisError} from '../errors.js'
import type {Capabilities} from '../kit/manifest.generated.js'
import {parseDuration} from '../kit/units.js'

/** The claims sealed in a token. A limit left out is no limit (the parent's, when it has one, still applies). */
export interface CapabilityClaims {
  /** The instance the token was made for. */
  sub: string
  /** Differs for every start of that name: a token of an earlier `sub` is not this one's. */
  jti: string
  iat: number
  exp: number
  spawn: boolean
  spawn_depth: number
  max_children: number
  /** Kits a child may be of; `self` is this instance's own kit. */
  allowed_kits: string[]
  allowed_profiles?: string[]
  allowed_images: string[]
  max_memory_mb?: number
  max_vcpus?: number
  allowed_secrets: string[]
  max_expose_ports?: number
}

const DEFAULT_TTL_MS = 24 * 3600 * 1000
const KEY_BYTES = 32

/** Claims of a top-level instance: its profile's `capabilities`, lowered by `run --cap`. */
export function claimsOf(
  sub: string,
  declared: Capabilities | undefined,
  lowered: Record<string, string> = {},
  now = Date.now(),
): CapabilityClaims {
  const ttlMs = declared?.ttl === undefined ? DEFAULT_TTL_MS : (parseDuration(declared.ttl) ?? DEFAULT_TTL_MS)
  const claims: CapabilityClaims = {
    sub,
    jti: randomBytes(12).toString('base64url'),
    iat: Math.floor(now / 1000),
    exp: Math.floor((now + ttlMs) / 1000),
    spawn: declared?.spawn ?? false,
    spawn_depth: declared?.spawn_depth ?? (declared?.spawn ? 1 : 0),
    max_children: declared?.max_children ?? (declared?.spawn ? 1 : 0),
    allowed_kits: declared?.allowed_kits ?? ['self'],
    ...(declared?.allowed_profiles ? {allowed_profiles: declared.allowed_profiles} : {}),
    allowed_images: declared?.allowed_images ?? [],
    ...(declared?.max_memory_mb === undefined ? {} : {max_memory_mb: declared.max_memory_mb}),
    ...(declared?.max_vcpus === undefined ? {} : {max_vcpus: declared.max_vcpus}),
    allowed_secrets: declared?.allowed_secrets ?? [],
    ...(declared?.max_expose_ports === undefined ? {} : {max_expose_ports: declared.max_expose_ports}),
  }
  for (const [claim, value] of Object.entries(lowered)) lowerClaim(claims, claim, value)
  return claims
}

/** `run --cap CLAIM=VALUE`: lowers one claim; asking for more than the profile gives is an error. */
export function parseCapFlag(text: string): [string, string] {
  const match = /^([a-z_]+)=(.*)$/.exec(text)
  if (!match) throw new AegisError(`--cap ${text}: expected CLAIM=VALUE`, {hint: 'e.g. --cap max_children=1'})
  return [match[1]!, match[2]!]
}

const NUMERIC = ['spawn_depth', 'max_children', 'max_memory_mb', 'max_vcpus', 'max_expose_ports'] as const
const LISTS = ['allowed_kits', 'allowed_profiles', 'allowed_images', 'allowed_secrets'] as const

function lowerClaim(claims: CapabilityClaims, claim: string, value: string): void {
  const refuse = (why: string) =>
    new AegisError(`--cap ${claim}=${value}: ${why}`, {
      hint: 'run flags may only lower what the profile declares (profiles.NAME.capabilities)',
    })
  if (claim === 'spawn') {
    if (value !== 'false' && value !== 'true') throw refuse('spawn is true or false')
    if (value === 'true' && !claims.spawn) throw refuse('the profile does not allow spawning')
    claims.spawn = value === 'true'
    return
  }
  if ((NUMERIC as readonly string[]).includes(claim)) {
    const n = Number(value)
    if (!/^\d+$/.test(value)) throw refuse('expected a whole number')
    const key = claim as (typeof NUMERIC)[number]
    const current = claims[key]
    if (current !== undefined && n > current) throw refuse(`the profile allows at most ${current}`)
    claims[key] = n
    return
  }
  if ((LISTS as readonly string[]).includes(claim)) {
    const key = claim as (typeof LISTS)[number]
    const asked = value === '' ? [] : value.split(',').map((item) => item.trim())
    const current = claims[key]
    const beyond = current === undefined ? [] : asked.filter((item) => !current.includes(item))
    if (beyond.length > 0) throw refuse(`${beyond.join(', ')} is not in the profile's ${claim}`)
    claims[key] = asked
    return
  }
  if (claim === 'ttl') {
    const ms = parseDuration(value)
    if (ms === undefined) throw refuse('expected a duration, e.g. 1h')
    const exp = claims.iat + Math.floor(ms / 1000)
    if (exp > claims.exp) throw refuse(`the profile's token lasts until ${new Date(claims.exp * 1000).toISOString()}`)
    claims.exp = exp
    return
  }
  throw refuse(`no such claim (claims: spawn, ${[...NUMERIC, ...LISTS, 'ttl'].join(', ')})`)
}

/** What a child asked for: its request's `capabilities` or its profile's, as declared. */
export function childClaims(
  parent: CapabilityClaims,
  sub: string,
  asked: Capabilities | undefined,
  now = Date.now(),
): CapabilityClaims {
  const own = claimsOf(sub, asked, {}, now)
  const depth = Math.min(parent.spawn_depth - 1, own.spawn_depth)
  const lowest = (a: number | undefined, b: number | undefined) =>
    a === undefined ? b : b === undefined ? a : Math.min(a, b)
  const both = (a: string[] | undefined, b: string[] | undefined) =>
    a === undefined ? b : b === undefined ? a : a.filter((item) => b.includes(item))
  const maxMemory = lowest(parent.max_memory_mb, own.max_memory_mb)
  const maxVcpus = lowest(parent.max_vcpus, own.max_vcpus)
  const maxExpose = lowest(parent.max_expose_ports, own.max_expose_ports)
  const profiles = both(parent.allowed_profiles, own.allowed_profiles)
  return {
    sub,
    jti: own.jti,
    iat: own.iat,
    exp: Math.min(parent.exp, own.exp),
    // Kept apart from the depth, so a refusal names the limit that applies (spawn_depth here).
    spawn: parent.spawn && own.spawn,
    spawn_depth: Math.max(depth, 0),
    max_children: Math.min(parent.max_children, own.max_children),
    allowed_kits: both(parent.allowed_kits, own.allowed_kits) ?? [],
    ...(profiles === undefined ? {} : {allowed_profiles: profiles}),
    allowed_images: both(parent.allowed_images, own.allowed_images) ?? [],
    ...(maxMemory === undefined ? {} : {max_memory_mb: maxMemory}),
    ...(maxVcpus === undefined ? {} : {max_vcpus: maxVcpus}),
    allowed_secrets: both(parent.allowed_secrets, own.allowed_secrets) ?? [],
    ...(maxExpose === undefined ? {} : {max_expose_ports: maxExpose}),
  }
}

/** A child request, as far as the claims limit it. */
export interface SpawnAsk {
  kit: string
  profile?: string
  imageRef?: string
  memoryMb: number
  vcpus: number
  secrets: string[]
  exposes: number
}

/** Why `claims` do not allow `ask` with `children` already there (the limit's name first), or undefined. */
export function refuseSpawn(claims: CapabilityClaims, ask: SpawnAsk, children: number): string | undefined {
  if (!claims.spawn) return 'spawn: this instance may not spawn instances'
  if (claims.spawn_depth < 1) return 'spawn_depth: no generation below this instance is allowed'
  if (children >= claims.max_children)
    return `max_children: this instance has ${children} of at most ${claims.max_children} children`
  if (!claims.allowed_kits.includes(ask.kit))
    return `allowed_kits: kit ${ask.kit} is not allowed (allowed: ${claims.allowed_kits.join(', ') || 'none'})`
  if (
    ask.profile !== undefined &&
    claims.allowed_profiles !== undefined &&
    !claims.allowed_profiles.includes(ask.profile)
  )
    return `allowed_profiles: profile ${ask.profile} is not allowed (allowed: ${claims.allowed_profiles.join(', ') || 'none'})`
  if (ask.imageRef !== undefined && !claims.allowed_images.includes(ask.imageRef))
    return `allowed_images: image ${ask.imageRef} is not allowed (allowed: ${claims.allowed_images.join(', ') || 'none'})`
  if (claims.max_memory_mb !== undefined && ask.memoryMb > claims.max_memory_mb)
    return `max_memory_mb: ${ask.memoryMb} MB asked, at most ${claims.max_memory_mb}`
  if (claims.max_vcpus !== undefined && ask.vcpus > claims.max_vcpus)
    return `max_vcpus: ${ask.vcpus} asked, at most ${claims.max_vcpus}`
  const secret = ask.secrets.find((name) => !claims.allowed_secrets.includes(name))
  if (secret !== undefined) return `allowed_secrets: secret ${secret} may not be given to a child`
  if (claims.max_expose_ports !== undefined && ask.exposes > claims.max_expose_ports)
    return `max_expose_ports: ${ask.exposes} ports asked, at most ${claims.max_expose_ports}`
  return undefined
}

/** The host key tokens are sealed with: `capability.key` in the data directory, 0600, made on first use. */
export class CapabilityKey {
  private constructor(private readonly key: Buffer) {}

  static forDataDir(dataDir: string): CapabilityKey {
    const file = path.join(dataDir, 'capability.key')
    try {
      const key = readFileSync(file)
      if (key.length === KEY_BYTES) return new CapabilityKey(key)
    } catch {
      // not made yet
    }
    mkdirSync(dataDir, {recursive: true})
    const key = randomBytes(KEY_BYTES)
    try {
      const fd = openSync(file, 'wx', 0o600)
      writeSync(fd, key)
      closeSync(fd)
      return new CapabilityKey(key)
    } catch {
      // Another process made it first: use that one.
      return new CapabilityKey(readFileSync(file))
    }
  }

  seal(claims: CapabilityClaims): string {
    const iv = randomBytes(12)
    const cipher = createCipheriv('aes-256-gcm', this.key, iv)
    const body = Buffer.concat([cipher.update(JSON.stringify(claims), 'utf8'), cipher.final()])
    return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')
  }

  /** The claims of a token sealed with this key, or undefined for anything else. */
  open(token: string): CapabilityClaims | undefined {
    try {
      const bytes = Buffer.from(token, 'base64url')
      if (bytes.length < 29) return undefined
      const decipher = createDecipheriv('aes-256-gcm', this.key, bytes.subarray(0, 12))
      decipher.setAuthTag(bytes.subarray(12, 28))
      const text = Buffer.concat([decipher.update(bytes.subarray(28)), decipher.final()]).toString('utf8')
      return JSON.parse(text) as CapabilityClaims
    } catch {
      return undefined
    }
  }
}

/** Why `token` is not the one `holder` was given (or has expired), or undefined when it is. */
export function refuseToken(
  key: CapabilityKey,
  token: string,
  holder: CapabilityClaims,
  now = Date.now(),
): string | undefined {
  if (token === '') return 'token: the request carried no capability token'
  const claims = key.open(token)
  if (claims === undefined) return 'token: not a capability token of this host'
  if (claims.sub !== holder.sub) return `token: made for instance ${claims.sub}, not ${holder.sub}`
  if (claims.jti !== holder.jti) return `token: made for an earlier start of ${holder.sub}`
  if (claims.exp * 1000 <= now) return `exp: the token expired at ${new Date(claims.exp * 1000).toISOString()}`
  return undefined
}
