/**
 * Retry policy for registry requests (oras-go's `registry/remote/retry`): 408, 429 and 5xx
 * answers and dropped connections are retried with exponential backoff and jitter, honouring
 * `Retry-After`; a body is only re-sent when it can be re-created.
 */
import {setTimeout as sleep} from 'node:timers/promises'
import {isAegisError, messageOf} from '../errors.js'
import {BodyNotReplayableError, sendOnce, type HttpResult, type RegistryRequest} from './http.js'
import {RESUME_HINT, RegistryError, redactUrl} from './registry-error.js'

export interface RetryPolicy {
  /** Total tries, the first included. */
  maxAttempts: number
  /** Backoff before the second try; doubles each time, with jitter. */
  minDelayMs: number
  maxDelayMs: number
  /** A `Retry-After` longer than this is not waited for: it is an error saying how long the registry asked for. */
  maxRetryAfterMs: number
}

export const DEFAULT_RETRY_POLICY: RetryPolicy = {
  maxAttempts: 5,
  minDelayMs: 200,
  maxDelayMs: 10_000,
  maxRetryAfterMs: 60_000,
}

const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'ENETUNREACH',
  'EHOSTUNREACH',
])

/** OpenSSL's verdicts on a certificate: retrying cannot help, --insecure can. */
const CERTIFICATE_CODES =
  /^(?:DEPTH_ZERO_SELF_SIGNED_CERT|SELF_SIGNED_CERT_IN_CHAIN|UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT(?:_LOCALLY)?|CERT_\w+|ERR_TLS_CERT_ALTNAME_INVALID)$/

export function isRetriableStatus(status: number): boolean {
  return status === 408 || status === 429 || (status >= 500 && status !== 501 && status !== 505)
}

/**
 * True for a dropped or refused connection anywhere in the cause chain. Our own errors are never
 * transient: a RegistryError has already been retried.
 */
export function isTransientError(error: unknown): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (isAegisError(e)) return false
    const code = (e as Error & {code?: unknown}).code
    if (typeof code === 'string' && NETWORK_CODES.has(code)) return true
    if (/socket hang up/i.test(e.message)) return true
  }
  return false
}

/** Milliseconds from a `Retry-After` value: delay-seconds or an HTTP date. */
export function parseRetryAfter(value: string | null, now = Date.now()): number | undefined {
  if (value === null || value.trim() === '') return undefined
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000
  const date = Date.parse(value)
  return Number.isNaN(date) ? undefined : Math.max(0, date - now)
}

export function backoffDelay(attempt: number, policy: RetryPolicy): number {
  const ceiling = Math.min(policy.maxDelayMs, policy.minDelayMs * 2 ** (attempt - 1))
  return ceiling / 2 + Math.random() * (ceiling / 2)
}

/**
 * Runs `task` until it succeeds, fails with an error that is not transient (isTransientError), or
 * has been tried `policy.maxAttempts` times, waiting the policy's backoff between tries. For work
 * above a single request (a blob's whole transfer, whose source is read again): each of its
 * requests already went through sendWithRetry, Retry-After and deadlines included.
 */
export async function retryTransient<T>(
  task: (attempt: number) => Promise<T>,
  policy: RetryPolicy = DEFAULT_RETRY_POLICY,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await task(attempt)
    } catch (error) {
      if (attempt >= policy.maxAttempts || !isTransientError(error)) throw error
      await sleep(backoffDelay(attempt, policy))
    }
  }
}

/** Sends with retries. Resolves with the last response (maybe an error status); rejects on network failure. */
export async function sendWithRetry(
  request: RegistryRequest,
  policy: RetryPolicy = DEFAULT_RETRY_POLICY,
): Promise<HttpResult> {
  let lastError: unknown
  for (let attempt = 1; ; attempt++) {
    let result: HttpResult
    try {
      result = await sendOnce(request)
    } catch (error) {
      if (error instanceof BodyNotReplayableError) throw networkError(request, lastError ?? error, attempt - 1)
      const ownError = ownErrorIn(error)
      if (ownError) throw ownError
      if (!isTransientError(error) || attempt >= policy.maxAttempts) throw networkError(request, error, attempt)
      lastError = error
      await sleep(backoffDelay(attempt, policy))
      continue
    }
    const {response} = result
    if (!isRetriableStatus(response.status) || attempt >= policy.maxAttempts) return {...result, attempts: attempt}
    const retryAfter = parseRetryAfter(response.header('retry-after'))
    response.discard()
    if (retryAfter !== undefined && retryAfter > 0) {
      const answer = `answered ${response.status}${response.statusText ? ` ${response.statusText}` : ''} and asked to wait ${Math.ceil(retryAfter / 1000)} s`
      if (retryAfter > policy.maxRetryAfterMs) {
        const url = redactUrl(request.url)
        throw new RegistryError(
          `${request.method} ${url}: the registry ${answer}, longer than the ${policy.maxRetryAfterMs / 1000} s aegis-kit waits.`,
          {
            method: request.method,
            url,
            status: response.status,
            hint: `Try again later: ${request.url.host} is throttling or down for maintenance.`,
          },
        )
      }
      // Said before the wait: a registry asking for a minute must not look like a hang.
      request.notify?.(
        `${request.url.host} ${answer}: retrying at ${new Date(Date.now() + retryAfter).toTimeString().slice(0, 8)}`,
      )
    }
    await sleep(retryAfter ?? backoffDelay(attempt, policy))
  }
}

/** An AegisError thrown by our own code inside the request (e.g. a body stream failing verification). */
function ownErrorIn(error: unknown): Error | undefined {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    if (isAegisError(e)) return e
  }
  return undefined
}

function networkError(request: RegistryRequest, error: unknown, attempts: number): RegistryError {
  const reason = describeNetworkError(error)
  const tries = attempts > 1 ? ` after ${attempts} attempts` : ''
  const url = redactUrl(request.url)
  const hint = hasCode(error, CERTIFICATE_CODES)
    ? `The TLS certificate of ${request.url.host} was not accepted. If you trust this registry, pass --insecure (HTTPS without certificate checks).`
    : `Check that ${request.url.host} is up and reachable. ${RESUME_HINT}`
  return new RegistryError(`${request.method} ${url} failed${tries}: ${reason}`, {
    method: request.method,
    url,
    hint,
    cause: error,
  })
}

/** True when an error in the cause chain has a `code` matching `pattern`. */
export function hasCode(error: unknown, pattern: RegExp): boolean {
  for (let e: unknown = error, depth = 0; e instanceof Error && depth < 8; e = e.cause, depth++) {
    const code = (e as Error & {code?: unknown}).code
    if (typeof code === 'string' && pattern.test(code)) return true
  }
  return false
}

function describeNetworkError(error: unknown): string {
  const messages: string[] = []
  for (
    let e: unknown = error, depth = 0;
    e !== undefined && depth < 8;
    e = e instanceof Error ? e.cause : undefined, depth++
  ) {
    const code = e instanceof Error ? (e as Error & {code?: unknown}).code : undefined
    const text = messageOf(e)
    if (text) messages.push(typeof code === 'string' && !text.includes(code) ? `${text} (${code})` : text)
  }
  return messages.join(': ') || 'the connection failed'
}
