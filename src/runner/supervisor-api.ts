/**
 * How other aegis-kit commands reach a running instance's supervisor: plain HTTP + JSON on a unix
 * socket in the instance's directory (mode 0600, like the state file), served by the process that
 * owns the VM for as long as it runs. `pause`, `resume`, `keepalive` and `ps` use it.
 *
 *   GET    /v1/status             the instance's life (lifecycle.ts LifeStatus)
 *   POST   /v1/pause              paused now; woken by the next connection or resume
 *   POST   /v1/resume
 *   POST   /v1/keepalive          {ttl_ms, reason?}: the host's lease, replacing the previous one
 *   DELETE /v1/keepalive          ends the host's lease
 *   POST   /v1/exec               an HTTP Upgrade to an exec session's frames (exec-stream.ts)
 */
import {createHash} from 'node:crypto'
import {chmod, rm} from 'node:fs/promises'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'
import type {Duplex} from 'node:stream'
import {AegisError, messageOf} from '../errors.js'
import {serveExec} from './exec-stream.js'
import type {InstanceRegistry} from './instances.js'
import {readLeaseRequest, replyJson} from './json-http.js'
import type {InstanceLifecycle, LifeStatus} from './lifecycle.js'

/** A unix socket path holds at most 107 bytes: a deep data directory gets one in the temp directory. */
export function supervisorSocketPath(instanceDir: string): string {
  const inDir = path.join(instanceDir, 'api.sock')
  if (Buffer.byteLength(inDir) <= 107) return inDir
  const key = createHash('sha256').update(instanceDir).digest('hex').slice(0, 16)
  return path.join(os.tmpdir(), `aegis-kit-${key}.sock`)
}

/** The lease `aegis-kit keepalive` holds: one per instance, each call replaces it. */
export const HOST_LEASE = 'host'

export async function serveSupervisorApi(
  socketPath: string,
  lifecycle: InstanceLifecycle,
): Promise<{socketPath: string; close(): Promise<void>}> {
  const server = http.createServer((request, response) => {
    handle(lifecycle, request).then(
      ({status, body}) => replyJson(response, status, body),
      (error: unknown) => replyJson(response, 500, {error: messageOf(error)}),
    )
  })
  server.on('upgrade', (request: http.IncomingMessage, socket: Duplex, head: Buffer) => {
    serveExec((exec) => lifecycle.exec(exec), request, socket, head).catch(() => socket.destroy())
  })
  await rm(socketPath, {force: true}) // a dead supervisor's
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(socketPath, resolve))
  await chmod(socketPath, 0o600)
  return {
    socketPath,
    close: async () => {
      await new Promise<void>((resolve) => server.close(() => resolve()))
      await rm(socketPath, {force: true})
    },
  }
}

async function handle(
  lifecycle: InstanceLifecycle,
  request: http.IncomingMessage,
): Promise<{status: number; body: unknown}> {
  const route = `${request.method} ${request.url}`
  switch (route) {
    case 'GET /v1/status':
      return {status: 200, body: lifecycle.status()}
    case 'POST /v1/pause':
      await lifecycle.pause('on request (aegis-kit pause)')
      return {status: 200, body: lifecycle.status()}
    case 'POST /v1/resume':
      await lifecycle.wake('a request (aegis-kit resume)')
      return {status: 200, body: lifecycle.status()}
    case 'POST /v1/restart':
      // The workload gets SIGTERM and the grace `stop` gives; the reply comes once the new VM serves.
      await lifecycle.restart(10_000)
      return {status: 200, body: lifecycle.status()}
    case 'POST /v1/keepalive': {
      const asked = await readLeaseRequest(request)
      if ('error' in asked) return {status: 400, body: asked}
      lifecycle.keepalive({id: HOST_LEASE, holder: 'host', ...asked})
      return {status: 200, body: lifecycle.status()}
    }
    case 'DELETE /v1/keepalive':
      lifecycle.release(HOST_LEASE)
      return {status: 200, body: lifecycle.status()}
    default:
      return {status: 404, body: {error: `no route ${route}`}}
  }
}

/** A request to an instance's supervisor; an AegisError when it cannot be reached or refuses. */
export async function callSupervisor(
  socketPath: string,
  name: string,
  method: 'GET' | 'POST' | 'DELETE',
  route: string,
  body?: unknown,
  timeoutMs = 30_000,
): Promise<LifeStatus> {
  const payload = body === undefined ? undefined : JSON.stringify(body)
  const {status, text} = await new Promise<{status: number; text: string}>((resolve, reject) => {
    const request = http.request(
      {
        socketPath,
        method,
        path: route,
        timeout: timeoutMs,
        headers: payload ? {'content-type': 'application/json'} : {},
      },
      (response) => {
        let received = ''
        response.setEncoding('utf8').on('data', (chunk: string) => (received += chunk))
        response.on('end', () => resolve({status: response.statusCode ?? 0, text: received}))
      },
    )
    request.on('timeout', () => request.destroy(new Error(`no answer within ${timeoutMs / 1000} s`)))
    request.once('error', reject)
    request.end(payload)
  }).catch((error: unknown) => {
    throw new AegisError(`cannot reach the supervisor of ${name}: ${messageOf(error)}`, {
      hint: `is it running? aegis-kit ps; its log: aegis-kit logs ${name}`,
    })
  })
  const answer = JSON.parse(text || '{}') as LifeStatus & {error?: string}
  if (status !== 200) throw new AegisError(`${name}: ${answer.error ?? `HTTP ${status}`}`)
  return answer
}

/** The API socket of the running instance `name`, or an error saying why there is none. */
export async function supervisorSocketOf(registry: InstanceRegistry, name: string): Promise<string> {
  const entry = await registry.get(name)
  if (!entry.alive)
    throw new AegisError(`${name} is not running`, {hint: `start it again: aegis-kit run ... --name ${name}`})
  if (entry.apiSocket === undefined)
    throw new AegisError(`${name} has not finished starting (or was started by an older aegis-kit)`, {
      hint: `wait for it (aegis-kit ps), or restart it: aegis-kit stop ${name}`,
    })
  return entry.apiSocket
}
