// Connects to a running OpenClaw gateway's WebSocket the way its Control UI does in a browser:
// an Origin header, a fresh Ed25519 device identity signing the server's challenge (the v3 device
// payload of OpenClaw's gateway client), and the gateway token in the `connect` frame's
// auth.token, or none, and the build id of the Control UI the gateway serves (the gateway refuses a
// Control UI of another build: "protocol mismatch: Control UI updated"). Prints, per attempt, the
// gateway's answer to `connect` as JSON lines.
//
// Run by Node 24 (the runtime OpenClaw requires), not by vitest: Node 20 has no global WebSocket,
// and Node 24 runs this file directly (type stripping), so it uses erasable TypeScript only.
//   node openclaw-control-ui-connect.ts '{"url": "ws://127.0.0.1:PORT/", "attempts": [{"origin": "...", "token": "..."}]}'
import crypto from 'node:crypto'

export interface Attempt {
  origin: string
  /** The gateway token to send, or none. */
  token?: string
}

export interface Outcome {
  /** The `connect` response frame's ok. */
  ok: boolean
  /** hello-ok's payload type, when ok. */
  helloType?: string
  /** The server's version from hello-ok. */
  serverVersion?: string
  /** The error's detail code when refused (AUTH_TOKEN_MISSING, AUTH_TOKEN_MISMATCH, …). */
  code?: string
  message?: string
}

interface Frame {
  type: string
  event?: string
  id?: string
  ok?: boolean
  payload?: {nonce?: string; type?: string; server?: {version?: string}}
  error?: {code?: string; message?: string; details?: {code?: string}}
}

interface MinimalWebSocket {
  onmessage: ((event: {data: unknown}) => void) | null
  onclose: ((event: {code: number; reason: string}) => void) | null
  onerror: ((event: unknown) => void) | null
  send(data: string): void
  close(): void
}

type WebSocketConstructor = new (url: string, options: {headers: Record<string, string>}) => MinimalWebSocket

const CLIENT = {id: 'openclaw-control-ui', version: 'aegis-kit-test', platform: 'linux', mode: 'webchat'}
const SCOPES = ['operator.read']

/**
 * A served file's text. A connection the gateway closes mid-request (seen once in CI, cause not
 * known; a restart of the gateway closes every connection) is retried a few times, said on stderr.
 */
async function fetchText(url: string): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await (await fetch(url)).text()
    } catch (error) {
      if (attempt === 5) throw error
      const cause = (error as {cause?: {message?: string}}).cause?.message ?? String(error)
      console.error(`GET ${url} failed (${cause}); retrying in 2 s`)
      await new Promise((resolve) => setTimeout(resolve, 2000))
    }
  }
}

/**
 * The build id the served Control UI sends in `connect`, read as a browser meets it: from the
 * page's module scripts and the modules they import, until one holds the compiled `buildId`.
 */
async function servedControlUiBuildId(pageUrl: string): Promise<string> {
  const page = await fetchText(pageUrl)
  const queue = [...page.matchAll(/<script[^>]*\ssrc="([^"]+\.js)"/g)].map((match) => new URL(match[1]!, pageUrl).href)
  const seen = new Set(queue)
  for (let fetched = 0; queue.length > 0 && fetched < 300; fetched++) {
    const moduleUrl = queue.shift()!
    const source = await fetchText(moduleUrl)
    const buildId = /buildId:`([^`]+)`/.exec(source)?.[1]
    if (buildId) return buildId
    for (const match of source.matchAll(/(?:from|import\()\s*"(\.\/[^"]+\.js)"/g)) {
      const next = new URL(match[1]!, moduleUrl).href
      if (!seen.has(next)) {
        seen.add(next)
        queue.push(next)
      }
    }
  }
  throw new Error(`no Control UI build id in the modules served at ${pageUrl}`)
}

function connect(url: string, buildId: string, attempt: Attempt): Promise<Outcome> {
  const WebSocketClass = (globalThis as {WebSocket?: WebSocketConstructor}).WebSocket
  if (!WebSocketClass) throw new Error(`no global WebSocket in Node ${process.version}: run this with Node 22 or newer`)
  const {publicKey, privateKey} = crypto.generateKeyPairSync('ed25519')
  const rawPublicKey = publicKey.export({type: 'spki', format: 'der'}).subarray(-32)
  const deviceId = crypto.createHash('sha256').update(rawPublicKey).digest('hex')
  return new Promise((resolve, reject) => {
    const socket = new WebSocketClass(url, {headers: {origin: attempt.origin}})
    const timer = setTimeout(() => {
      reject(new Error(`no answer to connect from ${url} within 20 s`))
      socket.close()
    }, 20_000)
    const finish = (outcome: Outcome) => {
      clearTimeout(timer)
      resolve(outcome)
      socket.close()
    }
    socket.onerror = () => {}
    socket.onclose = (event) => finish({ok: false, code: `closed ${event.code}`, message: event.reason})
    socket.onmessage = (event) => {
      const frame = JSON.parse(String(event.data)) as Frame
      if (frame.type === 'event' && frame.event === 'connect.challenge') {
        const nonce = frame.payload?.nonce ?? ''
        const signedAt = Date.now()
        const payload = [
          'v3',
          deviceId,
          CLIENT.id,
          CLIENT.mode,
          'operator',
          SCOPES.join(','),
          String(signedAt),
          attempt.token ?? '',
          nonce,
          CLIENT.platform,
          '',
        ].join('|')
        const signature = crypto.sign(null, Buffer.from(payload), privateKey).toString('base64url')
        socket.send(
          JSON.stringify({
            type: 'req',
            id: 'connect-1',
            method: 'connect',
            params: {
              minProtocol: 4,
              maxProtocol: 4,
              client: {...CLIENT, buildId},
              role: 'operator',
              scopes: SCOPES,
              ...(attempt.token === undefined ? {} : {auth: {token: attempt.token}}),
              device: {id: deviceId, publicKey: rawPublicKey.toString('base64url'), signature, signedAt, nonce},
            },
          }),
        )
      } else if (frame.type === 'res' && frame.id === 'connect-1') {
        finish(
          frame.ok
            ? {ok: true, helloType: frame.payload?.type, serverVersion: frame.payload?.server?.version}
            : {ok: false, code: frame.error?.details?.code ?? frame.error?.code, message: frame.error?.message},
        )
      }
    }
  })
}

const request = JSON.parse(process.argv[2] ?? '{}') as {url: string; attempts: Attempt[]}
const buildId = await servedControlUiBuildId(request.url.replace(/^ws/, 'http'))
for (const attempt of request.attempts) console.log(JSON.stringify(await connect(request.url, buildId, attempt)))
