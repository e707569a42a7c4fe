/** What the supervisor's and the guest's APIs share: a JSON object body read with a limit, a JSON reply. */
import type http from 'node:http'

const MAX_BODY = 64 * 1024

/** The request's body as a JSON object (an empty body is `{}`); throws on anything else. */
export async function readJsonObject(request: http.IncomingMessage): Promise<Record<string, unknown>> {
  let text = ''
  for await (const chunk of request) {
    text += String(chunk)
    if (text.length > MAX_BODY) throw new Error(`request body over ${MAX_BODY} bytes`)
  }
  let value: unknown
  try {
    value = JSON.parse(text || '{}')
  } catch {
    throw new Error('the request body is not JSON')
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('expected a JSON object')
  return value as Record<string, unknown>
}

export function replyJson(response: http.ServerResponse, status: number, body: unknown): void {
  response.writeHead(status, {'content-type': 'application/json'})
  response.end(`${JSON.stringify(body)}\n`)
}

/** A lease's ttl_ms, checked: a whole number of milliseconds from 1 to a day. */
function leaseTtl(value: unknown): number | undefined {
  return typeof value === 'number' && Number.isInteger(value) && value > 0 && value <= MAX_LEASE_MS ? value : undefined
}

/** A lease longer than a day is a mistake, not a plan (Aegis's tokens last a day too). */
export const MAX_LEASE_MS = 24 * 3600_000

/** A lease request's body (`{ttl_ms, reason?}`, Aegis's keepalive shape), or the error to answer with. */
export async function readLeaseRequest(
  request: http.IncomingMessage,
): Promise<{ttlMs: number; reason?: string} | {error: string}> {
  const body = await readJsonObject(request)
  const ttlMs = leaseTtl(body.ttl_ms)
  if (ttlMs === undefined) return {error: `ttl_ms must be a whole number of milliseconds from 1 to ${MAX_LEASE_MS}`}
  // A reason is for people reading `ps` and the log: a line, not a document.
  const reason = typeof body.reason === 'string' ? body.reason.slice(0, 200) : undefined
  return reason ? {ttlMs, reason} : {ttlMs}
}
