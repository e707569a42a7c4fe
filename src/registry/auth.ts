/**
 * Registry authentication (oras-go's `registry/remote/auth`): answer `WWW-Authenticate`
 * challenges with Basic credentials or a Bearer token for the request's scopes, and remember
 * per host which scheme worked and which tokens are still valid, so later requests skip the 401.
 */
import {AegisError} from '../errors.js'
import type {Credential, CredentialSource} from './credentials.js'
import type {HttpResult, RegistryRequest} from './http.js'
import {RegistryError, errorFromResponse, redactUrl} from './registry-error.js'
import {DEFAULT_RETRY_POLICY, hasCode, sendWithRetry, type RetryPolicy} from './retry.js'

export interface Challenge {
  /** Lowercased: `basic`, `bearer`. */
  scheme: string
  params: Record<string, string>
}

/** Parses a `WWW-Authenticate` value, which may hold several challenges. */
export function parseChallenges(header: string): Challenge[] {
  const challenges: Challenge[] = []
  const token = /\s*([!#$%&'*+.^_`|~\w-]+)/y
  let i = 0
  let current: Challenge | undefined
  while (i < header.length) {
    token.lastIndex = i
    const name = token.exec(header)
    if (!name) {
      i++ // Skip stray separators.
      continue
    }
    i = token.lastIndex
    const afterName = header.slice(i).match(/^\s*=\s*/)
    if (afterName && current && !header.slice(i + afterName[0].length).startsWith('=')) {
      i += afterName[0].length
      let value: string
      if (header[i] === '"') {
        value = ''
        for (i++; i < header.length && header[i] !== '"'; i++) value += header[i] === '\\' ? header[++i] : header[i]
        i++
      } else {
        const end = header.slice(i).search(/[\s,]/)
        value = end === -1 ? header.slice(i) : header.slice(i, i + end)
        i += value.length
      }
      current.params[name[1]!.toLowerCase()] = value ?? ''
    } else {
      current = {scheme: name[1]!.toLowerCase(), params: {}}
      challenges.push(current)
    }
    const separator = header.slice(i).match(/^\s*,?\s*/)
    i += separator ? separator[0].length : 0
  }
  return challenges
}

/** `repository:<name>:<actions>` scopes, merged so each resource appears once with sorted actions. */
export function mergeScopes(...lists: string[][]): string[] {
  const byResource = new Map<string, Set<string>>()
  for (const scope of lists.flat()) {
    const lastColon = scope.lastIndexOf(':')
    if (lastColon === -1) continue
    const resource = scope.slice(0, lastColon)
    const actions = byResource.get(resource) ?? new Set<string>()
    for (const action of scope.slice(lastColon + 1).split(',')) if (action) actions.add(action)
    byResource.set(resource, actions)
  }
  return [...byResource].map(([resource, actions]) => `${resource}:${[...actions].sort().join(',')}`).sort()
}

export function repositoryScope(repository: string, ...actions: Array<'pull' | 'push' | 'delete' | '*'>): string {
  return `repository:${repository}:${actions.join(',')}`
}

interface CachedToken {
  token: string
  expiresAt: number
}

interface HostAuth {
  /** The registry API's hostname, the one host besides TLS endpoints its credentials may go to. */
  hostname: string
  scheme?: 'basic' | 'bearer'
  realm?: string
  service?: string
  tokens: Map<string, CachedToken>
  pending: Map<string, Promise<string>>
  /** OAuth2 refresh token: the credential's identity token, or one the token service offered. */
  refreshToken?: string
  credential?: Promise<Credential | undefined>
  /** An insecure registry that answered TLS with plain HTTP: talk HTTP to it from now on. */
  plainHttp?: boolean
}

/** What OpenSSL reports when the other side is not speaking TLS at all (e.g. a plain HTTP server). */
const NOT_TLS = /^(?:ERR_SSL_WRONG_VERSION_NUMBER|ERR_SSL_PACKET_LENGTH_TOO_LONG|ERR_SSL_HTTP_REQUEST|EPROTO)$/

export interface RegistryClientOptions {
  /** Looks up credentials per registry host; none means anonymous. */
  credentials?: CredentialSource
  retry?: Partial<RetryPolicy>
  userAgent?: string
  /** OAuth2 client_id sent to token services. */
  clientId?: string
}

const EXPIRY_MARGIN_MS = 10_000

/**
 * What a token request takes from the registry request it serves: its TLS leniency (`insecure`,
 * as in docker and skopeo) and where its status lines go.
 */
type TokenRequestTraits = Pick<RegistryRequest, 'insecure' | 'notify'>

/**
 * The authenticating HTTP client the repositories share: one per process keeps the token cache
 * and connections warm across repositories on the same registry.
 */
export class RegistryClient {
  readonly retryPolicy: RetryPolicy
  private readonly hosts = new Map<string, HostAuth>()
  private readonly credentials?: CredentialSource
  private readonly userAgent: string
  private readonly clientId: string

  constructor(options: RegistryClientOptions = {}) {
    this.credentials = options.credentials
    this.retryPolicy = {...DEFAULT_RETRY_POLICY, ...options.retry}
    this.userAgent = options.userAgent ?? 'aegis-kit'
    this.clientId = options.clientId ?? 'aegis-kit'
  }

  /**
   * Sends `request` for a registry (`registry` names it for credential lookup), authenticating
   * for `scopes`. Resolves with the response, which may be an error status for the caller to report.
   */
  async send(request: RegistryRequest, registry: string, scopes: string[]): Promise<HttpResult> {
    const host = this.hostAuth(request.url.host)
    if (host.plainHttp && request.url.protocol === 'https:')
      request = {...request, url: withProtocol(request.url, 'http:')}
    try {
      return await this.sendAuthenticated(request, host, registry, scopes)
    } catch (error) {
      // --insecure means what docker and skopeo make of it: HTTPS without certificate checks,
      // falling back to plain HTTP when the registry does not speak TLS.
      if (!request.insecure || request.url.protocol !== 'https:' || !hasCode(error, NOT_TLS)) throw error
      host.plainHttp = true
      return this.sendAuthenticated({...request, url: withProtocol(request.url, 'http:')}, host, registry, scopes)
    }
  }

  /**
   * `request` as `send` would first send it (user agent, plain HTTP when the host needs it, the
   * cached Authorization), without sending it: for a download done elsewhere (direct-download.ts),
   * which hands any answer but 200 back to `send` (a 401 there gets a fresh token).
   */
  async authorize(request: RegistryRequest, registry: string, scopes: string[]): Promise<RegistryRequest> {
    const host = this.hostAuth(request.url.host)
    const url = host.plainHttp && request.url.protocol === 'https:' ? withProtocol(request.url, 'http:') : request.url
    const authorization = await this.cachedAuthorization(host, registry, scopes, request)
    const headers = {'user-agent': this.userAgent, ...request.headers}
    return {...request, url, headers: authorization ? {...headers, authorization} : headers}
  }

  private async sendAuthenticated(
    request: RegistryRequest,
    host: HostAuth,
    registry: string,
    scopes: string[],
  ): Promise<HttpResult> {
    const headers = {'user-agent': this.userAgent, ...request.headers}
    const authorization = await this.cachedAuthorization(host, registry, scopes, request)
    const first = await sendWithRetry(
      {...request, headers: authorization ? {...headers, authorization} : headers},
      this.retryPolicy,
    )
    if (first.response.status !== 401) return first

    const challenge = parseChallenges(first.response.header('www-authenticate') ?? '').find(
      (c) => c.scheme === 'bearer' || c.scheme === 'basic',
    )
    if (!challenge) return first
    let retryAuthorization: string | undefined
    if (challenge.scheme === 'basic') {
      host.scheme = 'basic'
      retryAuthorization = basicAuthorization(await this.credentialFor(host, registry))
      if (!retryAuthorization || retryAuthorization === authorization) return first
    } else {
      if (!challenge.params.realm) return first
      host.scheme = 'bearer'
      host.realm = challenge.params.realm
      host.service = challenge.params.service
      const wanted = mergeScopes(scopes, challenge.params.scope ? challenge.params.scope.split(' ') : [])
      retryAuthorization = `Bearer ${await this.fetchToken(host, registry, wanted, request)}`
    }
    first.response.discard()
    const second = await sendWithRetry(
      {...request, headers: {...headers, authorization: retryAuthorization}},
      this.retryPolicy,
    )
    return {...second, attempts: first.attempts + second.attempts}
  }

  private hostAuth(apiHost: string): HostAuth {
    let host = this.hosts.get(apiHost)
    if (!host) {
      host = {hostname: new URL(`http://${apiHost}`).hostname, tokens: new Map(), pending: new Map()}
      this.hosts.set(apiHost, host)
    }
    return host
  }

  private credentialFor(host: HostAuth, registry: string): Promise<Credential | undefined> {
    host.credential ??= this.credentials ? this.credentials(registry) : Promise.resolve(undefined)
    return host.credential
  }

  /** The Authorization header from what the host asked for before, without a round trip when possible. */
  private async cachedAuthorization(
    host: HostAuth,
    registry: string,
    scopes: string[],
    from: TokenRequestTraits,
  ): Promise<string | undefined> {
    if (host.scheme === 'basic') return basicAuthorization(await this.credentialFor(host, registry))
    if (host.scheme !== 'bearer') return undefined
    const wanted = mergeScopes(scopes)
    const cached = host.tokens.get(wanted.join(' ')) ?? findCoveringToken(host.tokens, wanted)
    if (cached && cached.expiresAt > Date.now()) return `Bearer ${cached.token}`
    return `Bearer ${await this.fetchToken(host, registry, mergeScopes(scopes), from)}`
  }

  /** A token for `scopes`; concurrent requests for the same scopes share one token request. */
  private fetchToken(host: HostAuth, registry: string, scopes: string[], from: TokenRequestTraits): Promise<string> {
    const key = scopes.join(' ')
    let pending = host.pending.get(key)
    if (!pending) {
      pending = this.requestToken(host, registry, scopes, from).finally(() => host.pending.delete(key))
      host.pending.set(key, pending)
    }
    return pending
  }

  private async requestToken(
    host: HostAuth,
    registry: string,
    scopes: string[],
    from: TokenRequestTraits,
  ): Promise<string> {
    const {insecure, notify} = from
    const stored = await this.credentialFor(host, registry)
    if (stored?.registryToken) return stored.registryToken
    const realm = new URL(host.realm!)
    // The registry names the realm: one on another host over plain HTTP would expose the stored
    // credentials to anyone on the way (or be the registry's way of collecting them), so it is asked anonymously.
    const withheld = stored !== undefined && realm.protocol !== 'https:' && realm.hostname !== host.hostname
    const credential = withheld ? undefined : stored
    host.refreshToken ??= credential?.identityToken
    const what = `Authentication to ${registry} failed${credential?.username ? ` for user ${credential.username}` : ''}`
    let request: RegistryRequest = {
      ...(host.refreshToken
        ? this.refreshTokenRequest(realm, host, scopes, host.refreshToken)
        : this.getTokenRequest(realm, host, scopes, credential)),
      insecure,
      notify,
    }
    let {response, attempts} = await sendWithRetry(request, this.retryPolicy)
    if (!response.ok && request.method === 'POST' && credential?.username && response.status < 500) {
      // The refresh token was refused or the service has no OAuth2 POST: fall back to the password.
      response.discard()
      host.refreshToken = undefined
      request = {...this.getTokenRequest(realm, host, scopes, credential), insecure, notify}
      ;({response, attempts} = await sendWithRetry(request, this.retryPolicy))
    }
    if (!response.ok) {
      const error = await errorFromResponse(request.method, request.url, response, {what, attempts})
      if (!withheld) throw error
      const hint = `The credentials for ${registry} were not sent to its token service ${realm.host}: another host over plain HTTP only gets them over HTTPS.`
      throw new RegistryError(error.message, {
        method: error.method,
        url: error.url,
        status: error.status,
        code: error.code,
        hint,
      })
    }
    let body: {token?: unknown; access_token?: unknown; expires_in?: unknown; refresh_token?: unknown}
    try {
      body = await response.json<typeof body>(1024 * 1024)
    } catch {
      throw new AegisError(`${what}: the token service at ${redactUrl(realm)} did not answer with JSON.`)
    }
    const token = typeof body.token === 'string' && body.token ? body.token : body.access_token
    if (typeof token !== 'string' || !token) {
      throw new AegisError(`${what}: the token service at ${redactUrl(realm)} answered without a token.`)
    }
    if (typeof body.refresh_token === 'string' && body.refresh_token) host.refreshToken = body.refresh_token
    // distribution-spec: tokens without expires_in last 60 seconds.
    const lifetime = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in * 1000 : 60_000
    host.tokens.set(scopes.join(' '), {token, expiresAt: Date.now() + Math.max(0, lifetime - EXPIRY_MARGIN_MS)})
    return token
  }

  private getTokenRequest(
    realm: URL,
    host: HostAuth,
    scopes: string[],
    credential: Credential | undefined,
  ): RegistryRequest {
    const url = new URL(realm)
    if (host.service) url.searchParams.set('service', host.service)
    for (const scope of scopes) url.searchParams.append('scope', scope)
    const basic = basicAuthorization(credential)
    const headers: Record<string, string> = {'user-agent': this.userAgent}
    if (basic) {
      // Ask for a refresh token, so later scopes are a POST instead of resending the password.
      url.searchParams.set('client_id', this.clientId)
      url.searchParams.set('offline_token', 'true')
      headers.authorization = basic
    }
    return {method: 'GET', url, headers}
  }

  private refreshTokenRequest(realm: URL, host: HostAuth, scopes: string[], refreshToken: string): RegistryRequest {
    const form = new URLSearchParams({
      grant_type: 'refresh_token',
      refresh_token: refreshToken,
      client_id: this.clientId,
    })
    if (host.service) form.set('service', host.service)
    if (scopes.length > 0) form.set('scope', scopes.join(' '))
    return {
      method: 'POST',
      url: realm,
      headers: {'user-agent': this.userAgent, 'content-type': 'application/x-www-form-urlencoded'},
      body: form.toString(),
    }
  }
}

function withProtocol(url: URL, protocol: 'http:' | 'https:'): URL {
  const copy = new URL(url)
  copy.protocol = protocol
  return copy
}

/** A cached token granted for at least `wanted` (e.g. a pull,push token serves a pull). */
function findCoveringToken(tokens: Map<string, CachedToken>, wanted: string[]): CachedToken | undefined {
  const now = Date.now()
  for (const [key, token] of tokens) {
    if (token.expiresAt <= now) continue
    const granted = key.split(' ')
    if (wanted.every((scope) => mergeScopes(granted, [scope]).join(' ') === key)) return token
  }
  return undefined
}

function basicAuthorization(credential: Credential | undefined): string | undefined {
  if (!credential?.username || credential.password === undefined) return undefined
  return `Basic ${Buffer.from(`${credential.username}:${credential.password}`).toString('base64')}`
}
