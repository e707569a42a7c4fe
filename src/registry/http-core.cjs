// @ts-check
/**
 * The HTTP rules every registry exchange follows, in http.ts and in the direct download of large
 * blobs (blob-download.cjs) alike: keep-alive agents, the idle timeout's error, and which
 * redirects are followed how far. One copy, so the two paths cannot disagree on a redirect chain
 * or a stalled connection. Plain CommonJS that loads only node:http (and node:https on the first
 * https: URL).
 * Type-checked by tsc (allowJs + checkJs), which emits it to dist/.
 */
const http = require('node:http')

/** Redirects followed for one request; one more is an error, on both paths. */
const MAX_REDIRECTS = 10

/** The error code of a request redirected more than MAX_REDIRECTS times (direct-download.ts turns it into an AegisError). */
const TOO_MANY_REDIRECTS = 'ETOOMANYREDIRECTS'

/**
 * A request as far as redirects change it.
 * @typedef {object} RedirectableRequest
 * @property {string} method
 * @property {URL} url
 * @property {Record<string, string>} headers
 */

/**
 * What to do with an answer: keep it (`final`), send again elsewhere (`follow`, with the body
 * dropped when `dropBody`), or give up (`too-many`, with the message both paths report).
 * @typedef {{kind: 'final'} | {kind: 'follow', request: RedirectableRequest, dropBody: boolean} | {kind: 'too-many', message: string}} RedirectStep
 */

/**
 * @param {number} status
 * @returns {boolean}
 */
function isRedirect(status) {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308
}

/**
 * The step after an answer of `status` with `location`, `redirects` redirects in. Authorization
 * never goes to another origin (a registry's storage redirect must not receive its credentials);
 * a 303, and a 301 or 302 to a POST, continue as a GET without a body, as browsers do.
 * @param {RedirectableRequest} request
 * @param {number} status
 * @param {string | null | undefined} location
 * @param {number} redirects
 * @returns {RedirectStep}
 */
function redirectStep(request, status, location, redirects) {
  if (!isRedirect(status) || location === null || location === undefined) return {kind: 'final'}
  const {method, url} = request
  if (redirects >= MAX_REDIRECTS)
    return {
      kind: 'too-many',
      message: `${method} ${url.origin}${url.pathname} redirected more than ${MAX_REDIRECTS} times.`,
    }
  const next = new URL(location, url)
  let headers = next.origin === url.origin ? request.headers : withoutHeaders(request.headers, /^authorization$/i)
  const toGet = status === 303 || ((status === 301 || status === 302) && method === 'POST')
  if (toGet) headers = withoutHeaders(headers, /^content-(type|length)$/i)
  return {kind: 'follow', request: {method: toGet ? 'GET' : method, url: next, headers}, dropBody: toGet}
}

/**
 * @param {Record<string, string>} headers
 * @param {RegExp} name
 * @returns {Record<string, string>}
 */
function withoutHeaders(headers, name) {
  return Object.fromEntries(Object.entries(headers).filter(([key]) => !name.test(key)))
}

/**
 * The error that ends a connection silent for `idleMs`: ETIMEDOUT, so the retry policy treats it
 * as a dropped connection.
 * @param {number} idleMs
 * @returns {Error & {code: string}}
 */
function idleTimeoutError(idleMs) {
  return Object.assign(new Error(`no data for ${idleMs / 1000} s`), {code: 'ETIMEDOUT'})
}

/**
 * A keep-alive agent per kind of connection (plain, verified TLS, unverified TLS for
 * `--insecure`), made on first use.
 * @returns {(url: URL, insecure: boolean) => import('node:http').Agent}
 */
function keepAliveAgents() {
  /** @type {{http?: import('node:http').Agent, https?: import('node:https').Agent, insecure?: import('node:https').Agent}} */
  const agents = {}
  return (url, insecure) => {
    if (url.protocol === 'http:') return (agents.http ??= new http.Agent({keepAlive: true}))
    // Required here, not at the top: TLS adds to a command's start, and a plain-HTTP registry never needs it.
    const https = /** @type {typeof import('node:https')} */ (require('node:https'))
    if (insecure) return (agents.insecure ??= new https.Agent({keepAlive: true, rejectUnauthorized: false}))
    return (agents.https ??= new https.Agent({keepAlive: true}))
  }
}

module.exports = {MAX_REDIRECTS, TOO_MANY_REDIRECTS, idleTimeoutError, isRedirect, keepAliveAgents, redirectStep}
