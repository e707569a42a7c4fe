/**
 * The instance's exposed ports, owned by its supervisor rather than by gvproxy: the supervisor
 * listens on each host port for the instance's whole life, across pauses and reboots of its VM.
 * A connection is held (not read) until `reach` has made the guest port reachable, waking a
 * paused VM or booting a stopped one, and is then spliced to the unix socket gvproxy forwards
 * that guest port from. So the first connection to a sleeping instance is answered, not refused.
 */
import net from 'node:net'
import {listenOnHostPort} from '../guest/gvproxy.js'
import {messageOf} from '../errors.js'
import type {ExposeMapping} from './options.js'

export interface RelayTarget {
  /**
   * The unix socket that reaches `guestPort` now; called for each connection, before a byte of it
   * is read. May take a while (a cold boot): the client waits.
   */
  reach(mapping: ExposeMapping): Promise<string>
  /** A connection could not be relayed (the VM could not be woken, the guest refused it). */
  onError?(mapping: ExposeMapping, error: unknown): void
  /**
   * Bytes from the client on a relayed connection: activity, and reason enough to wake a VM that
   * paused while the connection stayed open. Called for every chunk: keep it cheap.
   */
  onTraffic?(mapping: ExposeMapping): void
}

export interface PortRelay {
  /** Connections being relayed now. */
  open(): number
  /** Listens on one more host port (a port exposed at run time), for the rest of the relay's life. */
  add(mapping: ExposeMapping): Promise<void>
  close(): Promise<void>
}

/** Listens on every mapping's host port (all or none: a taken port fails the whole relay). */
export async function startPortRelay(mappings: ExposeMapping[], target: RelayTarget): Promise<PortRelay> {
  const servers: net.Server[] = []
  const sockets = new Set<net.Socket>()
  const close = async () => {
    for (const socket of sockets) socket.destroy()
    await Promise.all(servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))))
  }
  const add = async (mapping: ExposeMapping) => {
    // Half-open both ways: a client that shuts its side down still gets the whole answer.
    const server = net.createServer({pauseOnConnect: true, allowHalfOpen: true}, (client) => {
      sockets.add(client)
      client.once('close', () => sockets.delete(client))
      relayConnection(client, mapping, target, sockets)
    })
    servers.push(await listenOnHostPort(mapping, server))
  }
  try {
    for (const mapping of mappings) await add(mapping)
  } catch (error) {
    await close()
    throw error
  }
  return {open: () => sockets.size, add, close}
}

/** A port on 127.0.0.1 nothing listens on now (a relay takes it a moment later). */
export function freeHostPort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const address = server.address()
      server.close(() =>
        typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no port')),
      )
    })
  })
}

function relayConnection(
  client: net.Socket,
  mapping: ExposeMapping,
  target: RelayTarget,
  sockets: Set<net.Socket>,
): void {
  client.on('error', () => client.destroy())
  target.reach(mapping).then(
    (socketPath) => {
      if (client.destroyed) return
      const upstream = net.createConnection({path: socketPath, allowHalfOpen: true})
      sockets.add(upstream)
      upstream.once('close', () => {
        sockets.delete(upstream)
        client.destroy()
      })
      client.once('close', () => upstream.destroy())
      upstream.on('error', (error) => {
        target.onError?.(mapping, error)
        upstream.destroy()
      })
      upstream.once('connect', () => {
        if (target.onTraffic) client.on('data', () => target.onTraffic?.(mapping))
        client.pipe(upstream)
        upstream.pipe(client)
        client.resume()
      })
    },
    (error: unknown) => {
      target.onError?.(mapping, new Error(messageOf(error)))
      client.destroy()
    },
  )
}
