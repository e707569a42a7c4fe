/**
 * The guest API: what a workload asks of its host on http://127.0.0.1:7777 inside its VM (plain
 * HTTP + JSON, usable with curl or busybox), with Aegis's shapes so a kit written for Aegis works
 * here. The harness tunnels each connection over the control channel (guest/control-channel.ts)
 * with the instance's capability token, which is checked before any request is served
 * (capabilities.ts); this serves it with node:http. docs/guest-api.md has every route.
 *
 *   GET    /v1/self                       this instance and its claims
 *   POST   /v1/self/keepalive             {ttl_ms, reason?}: no pause for idleness until then
 *   DELETE /v1/self/keepalive
 *   POST   /v1/self/expose               {port, public_port?, protocol?}: a guest port on a host port, now
 *   POST   /v1/instances                  spawn a child (children.ts)
 *   GET    /v1/instances                  this instance's children
 *   GET    /v1/instances/{id}
 *   POST   /v1/instances/{id}/stop
 *   DELETE /v1/instances/{id}             stop and remove
 *   POST   /v1/instances/{id}/exec        {command[], env?, workdir?}: NDJSON lines of output, then the exit code
 *   GET    /v1/instances/{id}/logs        ?tail=N&follow=1: the child's console log as text
 */
import http from 'node:http'
import type {Duplex} from 'node:stream'
import {AegisError, messageOf} from '../errors.js'
import {type CapabilityClaims, type CapabilityKey, refuseToken} from './capabilities.js'
import {type Answer, type Children, describeChild} from './children.js'
import {openExec} from './exec-stream.js'
import type {InstanceRegistry} from './instances.js'
import {readJsonObject, readLeaseRequest, replyJson} from './json-http.js'
import type {InstanceLifecycle} from './lifecycle.js'
import {followLog} from './logs.js'
import type {ExposeMapping} from './options.js'

/** The guest's lease: one per instance, each keepalive replaces it (Aegis's self keepalive). */
export const GUEST_LEASE = 'guest'

export interface GuestApiContext {
  name: string
  lifecycle: InstanceLifecycle
  claims: CapabilityClaims
  key: CapabilityKey
  children: Children
  registry: InstanceRegistry | undefined
  /** The instance's exposed ports; undefined when its network cannot add one while it runs. */
  ports: RuntimePorts | undefined
  /** A line in the instance's log. */
  log: (message: string) => void
}

/** An instance's exposed ports: those it started with, and those its guest asked for since. */
export interface RuntimePorts {
  /** Every exposed port now. */
  all(): ExposeMapping[]
  /** Those exposed at run time (what max_expose_ports counts). */
  addedAtRunTime(): ExposeMapping[]
  /** Listens on `hostPort` (a free one when undefined) for `guestPort`, not exposed yet, and records it for ps. */
  expose(guestPort: number, hostPort: number | undefined): Promise<ExposeMapping>
}

export function guestApi(context: GuestApiContext): {serve(stream: Duplex, token: string): void; close(): void} {
  const refusals = new WeakMap<object, string>()
  const server = http.createServer((request, response) => {
    const refused = refusals.get(request.socket)
    if (refused !== undefined) {
      replyJson(response, 403, {error: refused, limit: refused.split(':')[0]})
      return
    }
    handle(context, request, response).then(
      (answer) => {
        if (answer) replyJson(response, answer.status, answer.body)
      },
      (error: unknown) => {
        if (!response.headersSent) replyJson(response, 400, {error: messageOf(error)})
        else response.end()
      },
    )
  })
  return {
    serve: (stream, token) => {
      const refused = refuseToken(context.key, token, context.claims)
      if (refused !== undefined) {
        refusals.set(stream, refused)
        context.log(`refused a guest API connection: ${refused}`)
      }
      server.emit('connection', stream)
    },
    close: () => server.close(),
  }
}

/** One request and its response, for the routes that stream their answer themselves. */
interface Exchange {
  request: http.IncomingMessage
  response: http.ServerResponse
  url: URL
}

/** Answers a request; undefined when the route answered itself (a stream). */
async function handle(
  context: GuestApiContext,
  request: http.IncomingMessage,
  response: http.ServerResponse,
): Promise<Answer | undefined> {
  const url = new URL(request.url ?? '/', 'http://guest')
  const route = `${request.method} ${url.pathname}`
  const {lifecycle, children} = context
  switch (route) {
    case 'GET /v1/self':
      return {status: 200, body: await self(context)}
    case 'POST /v1/self/keepalive': {
      const asked = await readLeaseRequest(request)
      if ('error' in asked) return {status: 400, body: asked}
      const lease = lifecycle.keepalive({id: GUEST_LEASE, holder: 'guest', ...asked})
      return {status: 200, body: {ttl_ms: asked.ttlMs, expires_at: new Date(lease.expiresAt).toISOString()}}
    }
    case 'DELETE /v1/self/keepalive':
      lifecycle.release(GUEST_LEASE)
      return {status: 200, body: {}}
    case 'POST /v1/self/expose':
      return exposeSelf(context, await readJsonObject(request))
    case 'POST /v1/instances':
      return children.spawn(await readJsonObject(request))
    case 'GET /v1/instances':
      return {status: 200, body: {instances: (await children.list()).map(describeChild)}}
  }
  const match = /^\/v1\/instances\/([^/]+)(\/stop|\/exec|\/logs)?$/.exec(url.pathname)
  if (match) {
    const id = decodeURIComponent(match[1]!)
    switch (`${request.method} ${match[2] ?? ''}`) {
      case 'GET ': {
        const entry = await children.find(id)
        return entry
          ? {status: 200, body: describeChild(entry)}
          : {status: 404, body: {error: `no child instance ${id}`}}
      }
      case 'DELETE ':
        return children.remove(id)
      case 'POST /stop':
        return children.stop(id)
      case 'POST /exec':
        return execInChild(context, id, {request, response, url})
      case 'GET /logs':
        return logsOfChild(context, id, {request, response, url})
    }
  }
  return {status: 404, body: {error: `no route ${route} (see docs/guest-api.md)`}}
}

/**
 * Aegis's self expose: `{port (or guest_port), public_port?, protocol?: "http" | "tcp"}` answers
 * `{guest_port, public_port, protocol, url}`. Asking again for an exposed guest port answers its
 * mapping. Ports exposed this way count against the instance's own max_expose_ports, and go when
 * the instance stops.
 */
async function exposeSelf(context: GuestApiContext, body: Record<string, unknown>): Promise<Answer> {
  const isPort = (value: unknown): value is number =>
    typeof value === 'number' && Number.isInteger(value) && value >= 1 && value <= 65535
  const guestPort = body.port ?? body.guest_port
  const publicPort = body.public_port ?? 0
  const protocol = body.protocol ?? 'http'
  if (!isPort(guestPort)) return {status: 400, body: {error: 'port: the guest port to expose, 1-65535, is required'}}
  if (publicPort !== 0 && !isPort(publicPort))
    return {status: 400, body: {error: 'public_port: a host port 1-65535, or 0 for any free one'}}
  if (protocol !== 'http' && protocol !== 'tcp') return {status: 400, body: {error: 'protocol: http or tcp'}}
  const {ports} = context
  if (!ports)
    return {status: 501, body: {error: "this instance's network cannot expose ports while it runs (gvproxy's can)"}}
  const answer = (mapping: ExposeMapping): Answer => ({
    status: 200,
    body: {
      guest_port: mapping.guestPort,
      public_port: mapping.hostPort,
      protocol,
      url: `http://127.0.0.1:${mapping.hostPort}`,
    },
  })
  // One request at a time: two at once would both pass the max_expose_ports check below.
  return oneAtATime(context, () => exposeWithin(context, ports, guestPort, publicPort, answer))
}

/** Self-expose requests of each instance, chained: the limit check and the add are one step. */
const exposeQueues = new WeakMap<GuestApiContext, Promise<unknown>>()

function oneAtATime<T>(context: GuestApiContext, work: () => Promise<T>): Promise<T> {
  const done = (exposeQueues.get(context) ?? Promise.resolve()).then(work)
  exposeQueues.set(
    context,
    done.catch(() => undefined),
  )
  return done
}

async function exposeWithin(
  context: GuestApiContext,
  ports: RuntimePorts,
  guestPort: number,
  publicPort: number,
  answer: (mapping: ExposeMapping) => Answer,
): Promise<Answer> {
  const {claims} = context
  const existing = ports.all().find((mapping) => mapping.guestPort === guestPort)
  if (existing) {
    if (publicPort !== 0 && publicPort !== existing.hostPort)
      return {status: 409, body: {error: `guest port ${guestPort} is already exposed on ${existing.hostPort}`}}
    return answer(existing)
  }
  const added = ports.addedAtRunTime().length
  if (claims.max_expose_ports !== undefined && added >= claims.max_expose_ports)
    return {
      status: 403,
      body: {
        error: `max_expose_ports: this instance has exposed ${added} of at most ${claims.max_expose_ports} ports at run time`,
        limit: 'max_expose_ports',
      },
    }
  try {
    const mapping = await ports.expose(guestPort, publicPort === 0 ? undefined : publicPort)
    context.log(`exposed guest port ${guestPort} on 127.0.0.1:${mapping.hostPort} (asked by the guest)`)
    return answer(mapping)
  } catch (error) {
    // A taken host port is the caller's to change; anything else is the host's failure.
    if (error instanceof AegisError) return {status: 409, body: {error: messageOf(error)}}
    throw error
  }
}

async function self(context: GuestApiContext): Promise<Record<string, unknown>> {
  const entry = await context.registry?.read(context.name)
  const {jti: _jti, ...claims} = context.claims
  return {
    id: context.name,
    ...(entry ? {...describeChild(entry), id: context.name} : {}),
    ...(entry?.parent ? {parent: entry.parent} : {}),
    capabilities: claims,
  }
}

/** Runs a command in a child through its supervisor: one JSON line per output chunk, then `{"exit_code": N}`. */
async function execInChild(context: GuestApiContext, id: string, exchange: Exchange): Promise<Answer | undefined> {
  const {request, response} = exchange
  const entry = await context.children.find(id)
  if (!entry) return {status: 404, body: {error: `no child instance ${id}`}}
  if (!entry.alive || entry.apiSocket === undefined) return {status: 409, body: {error: `${id} is not running`}}
  const body = await readJsonObject(request)
  const command = body.command
  if (!Array.isArray(command) || command.length === 0 || !command.every((arg) => typeof arg === 'string'))
    return {status: 400, body: {error: 'command must be a non-empty array of strings'}}
  const env = body.env as Record<string, string> | undefined
  const workdir = typeof body.workdir === 'string' ? body.workdir : undefined
  response.writeHead(200, {'content-type': 'application/x-ndjson'})
  const line = (value: unknown) => response.write(`${JSON.stringify(value)}\n`)
  try {
    const session = await openExec(
      entry.apiSocket,
      id,
      {command: command as string[], ...(env ? {env} : {}), ...(workdir ? {workdir} : {})},
      {
        stdout: (data) => line({stdout: data.toString('utf8')}),
        stderr: (data) => line({stderr: data.toString('utf8')}),
      },
    )
    session.endStdin()
    request.socket.once('close', () => session.close())
    line({exit_code: await session.exit})
  } catch (error) {
    line({error: messageOf(error)})
  }
  response.end()
  return undefined
}

/** The child's console log as text: `tail` lines to start with, and with `follow` until it ends or the client goes. */
async function logsOfChild(context: GuestApiContext, id: string, exchange: Exchange): Promise<Answer | undefined> {
  const {request, response, url} = exchange
  const entry = await context.children.find(id)
  if (!entry || context.registry === undefined) return {status: 404, body: {error: `no child instance ${id}`}}
  const tailText = url.searchParams.get('tail')
  const tail = tailText === null ? undefined : Number(tailText)
  if (tail !== undefined && (!Number.isInteger(tail) || tail < 0))
    return {status: 400, body: {error: 'tail must be a whole number of lines'}}
  const follow = ['1', 'true'].includes(url.searchParams.get('follow') ?? '')
  const gone = new AbortController()
  request.socket.once('close', () => gone.abort())
  response.writeHead(200, {'content-type': 'text/plain; charset=utf-8'})
  try {
    await followLog(context.registry, id, {
      follow,
      ...(tail === undefined ? {} : {tail}),
      signal: gone.signal,
      write: (text) => response.write(text),
    })
  } catch (error) {
    response.write(`aegis-kit: ${messageOf(error)}\n`)
  }
  response.end()
  return undefined
}
