/**
 * Errors from talking to a registry: what was asked (method, URL without credentials), what came
 * back (status, the registry's error code and message) and what to do next.
 */
import {AegisError, isAegisError, messageOf} from '../errors.js'
import {printable} from '../printable.js'
import type {RegistryResponse} from './http.js'

export const RESUME_HINT = 'Re-run the same command to resume: content already at the destination is skipped.'

/** "Push of a to b failed: …", keeping the cause's hint and always saying that a re-run resumes. */
export function transferFailed(what: string, error: unknown): AegisError {
  const message = `${what} failed: ${messageOf(error)}`
  const hint = isAegisError(error) ? error.hint : undefined
  const resume = hint === undefined ? RESUME_HINT : hint.includes(RESUME_HINT) ? hint : `${hint} ${RESUME_HINT}`
  return new AegisError(message, {hint: resume, cause: error, exitCode: isAegisError(error) ? error.exitCode : 1})
}

export class RegistryError extends AegisError {
  readonly method: string
  readonly url: string
  readonly status?: number
  /** First error code from the registry's JSON body, e.g. `MANIFEST_UNKNOWN`. */
  readonly code?: string

  constructor(
    message: string,
    details: {method: string; url: string; status?: number; code?: string; hint?: string; cause?: unknown},
  ) {
    super(message, {hint: details.hint, cause: details.cause})
    this.name = 'RegistryError'
    this.method = details.method
    this.url = details.url
    this.status = details.status
    this.code = details.code
  }
}

const SECRET_PARAMS = /^(?:_state|access_token|token|refresh_token|password|secret|sig|signature|x-amz-.*|x-goog-.*)$/i

/** The URL without user info and with secret-looking query values hidden. */
export function redactUrl(url: string | URL): string {
  const parsed = new URL(String(url))
  parsed.username = ''
  parsed.password = ''
  for (const key of [...parsed.searchParams.keys()]) {
    if (SECRET_PARAMS.test(key)) parsed.searchParams.set(key, '…')
  }
  return parsed.toString()
}

interface RegistryErrorBody {
  errors?: Array<{code?: unknown; message?: unknown}>
  // OAuth2 token endpoints answer with these instead.
  error?: unknown
  error_description?: unknown
}

/**
 * `CODE: message` pairs from a distribution-spec (or OAuth2) JSON error body, made printable: the
 * registry may be hostile, and its words end up on the user's terminal.
 */
export function describeErrorBody(text: string): {code?: string; text?: string} {
  let body: RegistryErrorBody
  try {
    body = JSON.parse(text) as RegistryErrorBody
  } catch {
    return {}
  }
  if (Array.isArray(body.errors) && body.errors.length > 0) {
    const parts = body.errors.map((e) => [e.code, e.message].filter((p) => typeof p === 'string' && p).join(': '))
    const first = body.errors[0]?.code
    return {
      code: typeof first === 'string' ? printable(first) : undefined,
      text: printable(parts.filter(Boolean).join('; ')),
    }
  }
  if (typeof body.error === 'string') {
    const description = typeof body.error_description === 'string' ? `: ${body.error_description}` : ''
    return {code: printable(body.error), text: printable(`${body.error}${description}`)}
  }
  return {}
}

function hintForStatus(status: number, url: URL): string | undefined {
  const {host} = url
  // What an HTTPS-only server answers a plain HTTP request with (loopback registries get HTTP by default).
  if (status === 400 && url.protocol === 'http:')
    return `If ${host} speaks HTTPS, pass --insecure (HTTPS without certificate checks).`
  if (status === 401) return `Log in with \`aegis-kit login ${host}\`, or check the credentials stored for ${host}.`
  if (status === 403)
    return `The credentials for ${host} are not allowed to do this; check the repository's permissions.`
  if (status === 408 || status === 429 || status >= 500) return RESUME_HINT
  return undefined
}

/** A RegistryError for a response that was not what the operation needed. Reads (and so consumes) the body. */
export async function errorFromResponse(
  method: string,
  url: string | URL,
  response: RegistryResponse,
  options: {what?: string; attempts?: number} = {},
): Promise<RegistryError> {
  let bodyText = ''
  try {
    if (method === 'HEAD') response.discard()
    else bodyText = (await response.text(64 * 1024)).slice(0, 64 * 1024)
  } catch {
    // The body is only decoration for the message.
  }
  const {code, text} = describeErrorBody(bodyText)
  const safeUrl = redactUrl(url)
  const status = `${response.status}${response.statusText ? ` ${response.statusText}` : ''}`
  const attempts = options.attempts && options.attempts > 1 ? ` after ${options.attempts} attempts` : ''
  const prefix = options.what ? `${options.what}: ` : ''
  const message = `${prefix}${method} ${safeUrl} failed with ${status}${attempts}${text ? ` (${text})` : ''}`
  return new RegistryError(message, {
    method,
    url: safeUrl,
    status: response.status,
    code,
    hint:
      // The registry hashed an upload and it did not match: the source's copy of the blob is bad.
      code === 'DIGEST_INVALID'
        ? 'The registry hashed what was sent and it does not match the digest: the source has corrupt content for it (for the local store: remove the image, prune, import or pull it again).'
        : hintForStatus(response.status, new URL(String(url))),
  })
}
