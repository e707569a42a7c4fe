/**
 * The guest API: what a workload asks of its host on http://127.0.0.1:7777 inside its VM (plain
 * HTTP + JSON, usable with curl or busybox wget), with Aegis's shapes so a kit written for Aegis
 * works here. The harness tunnels each connection to this process over the control channel
 * (guest/control-channel.ts); this serves it with node:http. The first endpoints are the guest's
 * own lease:
 *
 *   POST   /v1/self/keepalive   {ttl_ms, reason?}: the instance is not paused for idleness until ttl_ms from now
 *   DELETE /v1/self/keepalive   ends it (the idle timeout runs from then)
 */
import http from 'node:http'
import type {Duplex} from 'node:stream'
import {messageOf} from '../errors.js'
import {readLeaseRequest, replyJson} from './json-http.js'
import type {InstanceLifecycle} from './lifecycle.js'

/** The guest's lease: one per instance, each keepalive replaces it (Aegis's self keepalive). */
export const GUEST_LEASE = 'guest'

export function guestApi(lifecycle: InstanceLifecycle): {serve(stream: Duplex): void; close(): void} {
  const server = http.createServer((request, response) => {
    handle(lifecycle, request).then(
      ({status, body}) => replyJson(response, status, body),
      (error: unknown) => replyJson(response, 400, {error: messageOf(error)}),
    )
  })
  return {
    serve: (stream) => server.emit('connection', stream),
    close: () => server.close(),
  }
}

async function handle(
  lifecycle: InstanceLifecycle,
  request: http.IncomingMessage,
): Promise<{status: number; body: unknown}> {
  const route = `${request.method} ${(request.url ?? '').split('?')[0]}`
  switch (route) {
    case 'POST /v1/self/keepalive': {
      const asked = await readLeaseRequest(request)
      if ('error' in asked) return {status: 400, body: asked}
      const lease = lifecycle.keepalive({id: GUEST_LEASE, holder: 'guest', ...asked})
      return {status: 200, body: {ttl_ms: asked.ttlMs, expires_at: new Date(lease.expiresAt).toISOString()}}
    }
    case 'DELETE /v1/self/keepalive':
      lifecycle.release(GUEST_LEASE)
      return {status: 200, body: {}}
    default:
      return {status: 404, body: {error: `no route ${route} (this aegis-kit serves /v1/self/keepalive)`}}
  }
}
