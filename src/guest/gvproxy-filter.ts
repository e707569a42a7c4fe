/**
 * A host-side filter on the wire between QEMU and gvproxy: every Ethernet frame the guest
 * sends passes through here, and frames that would reach the host itself are dropped.
 *
 * Why: gvproxy (0.8.x, as Debian ships it) hard-codes two things a guest must not have.
 * It serves its control API (`/services/forwarder/expose`) to the guest at
 * 192.168.127.1:80, so a guest could open listening ports on the host; and it NATs
 * 192.168.127.254 to the host's 127.0.0.1, so a guest could reach every loopback-only
 * service on the host. Neither can be switched off by a flag in that version (newer ones
 * take a `-config` file). The guest is untrusted, so the filter cannot live in the guest:
 * it sits on the host, in the stream QEMU's `-netdev stream` speaks (a 4-byte big-endian
 * length, then the frame), which is the only path the guest's NIC has.
 *
 * Policy, for frames from the guest (frames to the guest pass untouched):
 * - ARP passes; IPv4 is checked; everything else (IPv6, VLAN tags...) is dropped, since
 *   gvproxy's network is IPv4-only.
 * - To the gateway (.1): DNS (UDP/TCP 53, only with egress), DHCP (UDP 67) and ICMP only; not
 *   its API on 80.
 *   And the guest's side of TCP connections gvproxy opened to the guest (port forwards
 *   come from .1): those exact port pairs, learnt from the SYNs going to the guest.
 * - To the host's loopback through .254: only the TCP/UDP ports the kit declares.
 * - To the rest of the subnet, to 127/8, 0/8, multicast, broadcast (but DHCP) and to the
 *   host's own addresses (other than declared host:port pairs): dropped.
 * - Fragments to a checked address are dropped (their ports cannot be seen).
 * - Everything else is egress: it passes when the kit allows egress (`networking.egress`, allowed
 *   unless it says `deny`) and is dropped otherwise. gvproxy's DNS counts as egress: it resolves
 *   any name through the host's resolver, so a query is itself a way out.
 * A dropped TCP SYN is answered with a RST and a dropped unicast UDP datagram with an ICMP port
 * unreachable, so the guest's connect() or DNS lookup fails at once instead of waiting for a
 * timeout.
 */

import net from 'node:net'

export interface GuestPacketPolicy {
  /** The gateway: DNS, DHCP and ICMP reach it. */
  gateway: string
  /** gvproxy's alias for the host's 127.0.0.1. */
  hostLoopbackAlias: string
  /** The guest's subnet (a /24 in gvproxy's layout), as its first three octets ("192.168.127"). */
  subnetPrefix: string
  /** Ports on the host's 127.0.0.1 the guest may reach through `hostLoopbackAlias`. */
  allowedLoopbackPorts: ReadonlySet<number>
  /** The host's own addresses (other than loopback): blocked but for `allowedHostEndpoints`. */
  hostAddresses: ReadonlySet<string>
  /** "address:port" pairs on the host's own addresses the guest may reach. */
  allowedHostEndpoints: ReadonlySet<string>
  /** Whether the guest may reach anything beyond the host (and gvproxy's DNS): `networking.egress`. */
  egress: boolean
}

/**
 * `quiet`: noise every Linux guest sends (IPv6 neighbour discovery), not worth reporting.
 * `egress`: dropped because the kit denies egress, not because it is bound for the host.
 */
export type FrameVerdict =
  | {pass: true; reason?: undefined; quiet?: undefined; egress?: undefined}
  | {pass: false; reason: string; quiet?: boolean; egress?: boolean}

const ETHERTYPE_IPV4 = 0x0800
const ETHERTYPE_ARP = 0x0806
const ETHERTYPE_IPV6 = 0x86dd
const PROTO_ICMP = 1
const PROTO_TCP = 6
const PROTO_UDP = 17
const PASS: FrameVerdict = {pass: true}

function ipv4(bytes: Buffer, offset: number): string {
  return `${bytes[offset]}.${bytes[offset + 1]}.${bytes[offset + 2]}.${bytes[offset + 3]}`
}

function protocolName(protocol: number): string {
  return protocol === PROTO_TCP
    ? 'tcp'
    : protocol === PROTO_UDP
      ? 'udp'
      : protocol === PROTO_ICMP
        ? 'icmp'
        : `ip proto ${protocol}`
}

/**
 * TCP connections gvproxy opened to the guest (a host port forward arrives from the gateway's
 * address and an ephemeral port): the guest may answer on exactly those port pairs.
 */
export class InboundFlows {
  private readonly flows = new Set<string>()
  constructor(
    private readonly gateway: string,
    private readonly limit = 8192,
  ) {}

  /** Looks at a frame going to the guest and remembers a SYN from the gateway. */
  noteToGuest(frame: Buffer): void {
    const ip = 14
    if (frame.length < ip + 20 || frame.readUInt16BE(12) !== ETHERTYPE_IPV4 || frame[ip + 9] !== PROTO_TCP) return
    const tcp = ip + (frame[ip]! & 0x0f) * 4
    if (frame.length < tcp + 14 || ipv4(frame, ip + 12) !== this.gateway) return
    const flags = frame[tcp + 13]!
    if ((flags & 0x02) === 0 || (flags & 0x10) !== 0) return
    const gatewayPort = frame.readUInt16BE(tcp)
    if (gatewayPort < 1024) return // ephemeral ports only: never the API's 80 or DNS's 53
    if (this.flows.size >= this.limit) this.flows.delete(this.flows.values().next().value!)
    this.flows.add(`${frame.readUInt16BE(tcp + 2)}>${gatewayPort}`)
  }

  /** Whether guest port `from` answering gateway port `to` belongs to such a connection. */
  has(from: number, to: number): boolean {
    return this.flows.has(`${from}>${to}`)
  }
}

/** Decides whether one Ethernet frame from the guest may go on to gvproxy. */
export function judgeGuestFrame(frame: Buffer, policy: GuestPacketPolicy, inbound?: InboundFlows): FrameVerdict {
  if (frame.length < 14) return {pass: false, reason: 'runt frame'}
  const ethertype = frame.readUInt16BE(12)
  if (ethertype === ETHERTYPE_ARP) return PASS
  if (ethertype !== ETHERTYPE_IPV4)
    return {
      pass: false,
      reason: `ethertype 0x${ethertype.toString(16).padStart(4, '0')}`,
      quiet: ethertype === ETHERTYPE_IPV6,
    }

  const ip = 14
  if (frame.length < ip + 20) return {pass: false, reason: 'short IPv4 header'}
  const versionIhl = frame[ip]!
  const headerLength = (versionIhl & 0x0f) * 4
  if (versionIhl >> 4 !== 4 || headerLength < 20 || frame.length < ip + headerLength)
    return {pass: false, reason: 'bad IPv4 header'}
  const protocol = frame[ip + 9]!
  const flagsFragment = frame.readUInt16BE(ip + 6)
  const fragmented = (flagsFragment & 0x2000) !== 0 || (flagsFragment & 0x1fff) !== 0
  const destination = ipv4(frame, ip + 16)
  const octets = destination.split('.').map(Number) as [number, number, number, number]

  const l4 = ip + headerLength
  const hasPorts = protocol === PROTO_TCP || protocol === PROTO_UDP
  const port = hasPorts && !fragmented && frame.length >= l4 + 4 ? frame.readUInt16BE(l4 + 2) : undefined
  const sourcePort = port === undefined ? undefined : frame.readUInt16BE(l4)
  const what = `${protocolName(protocol)} to ${destination}${port === undefined ? '' : `:${port}`}`
  const checked = (allowed: boolean): FrameVerdict => {
    if (fragmented) return {pass: false, reason: `fragment (${what})`}
    return allowed ? PASS : {pass: false, reason: what}
  }

  if (destination === '255.255.255.255') return checked(protocol === PROTO_UDP && port === 67)
  if (destination === policy.gateway) {
    const answering = protocol === PROTO_TCP && port !== undefined && inbound?.has(sourcePort!, port) === true
    if (hasPorts && port === 53 && !policy.egress) return {pass: false, reason: what, egress: true}
    return checked(
      protocol === PROTO_ICMP || (hasPorts && port === 53) || (protocol === PROTO_UDP && port === 67) || answering,
    )
  }
  if (destination === policy.hostLoopbackAlias)
    return checked(hasPorts && port !== undefined && policy.allowedLoopbackPorts.has(port))
  if (destination.startsWith(`${policy.subnetPrefix}.`)) return {pass: false, reason: what}
  if (octets[0] === 127 || octets[0] === 0 || octets[0] >= 224) return {pass: false, reason: what}
  if (policy.hostAddresses.has(destination)) {
    return checked(hasPorts && port !== undefined && policy.allowedHostEndpoints.has(`${destination}:${port}`))
  }
  return policy.egress ? PASS : {pass: false, reason: what, egress: true}
}

function checksum(bytes: Buffer, initial = 0): number {
  let sum = initial
  for (let i = 0; i + 1 < bytes.length; i += 2) sum += bytes.readUInt16BE(i)
  if (bytes.length % 2 === 1) sum += bytes[bytes.length - 1]! << 8
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16)
  return ~sum & 0xffff
}

/**
 * What tells the guest at once that a dropped frame went nowhere, as if from its destination:
 * for a TCP SYN a RST (connect() fails with "connection refused"), for a unicast UDP datagram an
 * ICMP port unreachable (a DNS lookup gives up instead of retrying for seconds). Undefined for
 * anything else.
 */
export function rejectionFor(frame: Buffer): Buffer | undefined {
  const ip = 14
  if (frame.length < ip + 20 || frame.readUInt16BE(12) !== ETHERTYPE_IPV4) return undefined
  const headerLength = (frame[ip]! & 0x0f) * 4
  if (headerLength < 20 || frame.length < ip + headerLength + 8 || (frame.readUInt16BE(ip + 6) & 0x3fff) !== 0)
    return undefined
  if (frame[ip + 9] === PROTO_TCP) return tcpReset(frame, ip + headerLength)
  if (frame[ip + 9] === PROTO_UDP) return portUnreachable(frame, headerLength)
  return undefined
}

/** An Ethernet + IPv4 reply to `frame` (swapped addresses) carrying `protocol` and `payload`. */
function replyFrame(frame: Buffer, protocol: number, payload: Buffer): Buffer {
  const ip = 14
  const reply = Buffer.alloc(ip + 20 + payload.length)
  frame.copy(reply, 0, 6, 12) // to the sender's MAC
  frame.copy(reply, 6, 0, 6) // from the MAC it addressed
  reply.writeUInt16BE(ETHERTYPE_IPV4, 12)
  reply[ip] = 0x45
  reply.writeUInt16BE(20 + payload.length, ip + 2)
  reply.writeUInt16BE(0x4000, ip + 6)
  reply[ip + 8] = 64
  reply[ip + 9] = protocol
  frame.copy(reply, ip + 12, ip + 16, ip + 20) // source: the address it tried
  frame.copy(reply, ip + 16, ip + 12, ip + 16) // destination: the guest
  reply.writeUInt16BE(checksum(reply.subarray(ip, ip + 20)), ip + 10)
  payload.copy(reply, ip + 20)
  return reply
}

function tcpReset(frame: Buffer, tcp: number): Buffer | undefined {
  if (frame.length < tcp + 20) return undefined
  const flags = frame[tcp + 13]!
  if ((flags & 0x02) === 0 || (flags & 0x10) !== 0) return undefined // SYN without ACK only
  const segment = Buffer.alloc(20)
  segment.writeUInt16BE(frame.readUInt16BE(tcp + 2), 0)
  segment.writeUInt16BE(frame.readUInt16BE(tcp), 2)
  segment.writeUInt32BE((frame.readUInt32BE(tcp + 4) + 1) >>> 0, 8)
  segment[12] = 5 << 4
  segment[13] = 0x14 // RST, ACK
  const pseudo = Buffer.alloc(12)
  frame.copy(pseudo, 0, 14 + 16, 14 + 20) // the reply's source: the address the SYN went to
  frame.copy(pseudo, 4, 14 + 12, 14 + 16)
  pseudo[9] = PROTO_TCP
  pseudo.writeUInt16BE(20, 10)
  segment.writeUInt16BE(checksum(Buffer.concat([pseudo, segment])), 16)
  return replyFrame(frame, PROTO_TCP, segment)
}

/**
 * ICMP destination unreachable, code 3 (port), quoting the datagram's IP header and first 8
 * bytes (RFC 792). Never for a broadcast or multicast datagram (the broadcast of the guest's /24,
 * gvproxy's layout, included) nor one from no address yet (RFC 1122 3.2.2): those stay silently
 * dropped.
 */
function portUnreachable(frame: Buffer, headerLength: number): Buffer | undefined {
  const ip = 14
  const fromNowhere = frame[ip + 12] === 0
  const multicastOrBroadcast = frame[ip + 16]! >= 224
  const subnetBroadcast = frame[ip + 19] === 255 && frame.compare(frame, ip + 12, ip + 15, ip + 16, ip + 19) === 0
  if (fromNowhere || multicastOrBroadcast || subnetBroadcast) return undefined
  const quoted = frame.subarray(ip, ip + headerLength + 8)
  const message = Buffer.alloc(8 + quoted.length)
  message[0] = 3 // destination unreachable
  message[1] = 3 // port unreachable
  quoted.copy(message, 8)
  message.writeUInt16BE(checksum(message), 2)
  return replyFrame(frame, PROTO_ICMP, message)
}

function framed(frame: Buffer): Buffer {
  const header = Buffer.allocUnsafe(4)
  header.writeUInt32BE(frame.length)
  return Buffer.concat([header, frame])
}

/** Splits QEMU's stream framing (u32 big-endian length, then the frame) into frames. */
export class FrameReader {
  private buffered: Buffer = Buffer.alloc(0)
  static readonly MAX_FRAME = 65_550

  /** Returns the complete frames in `chunk` (plus what came before); throws on a bad length. */
  push(chunk: Buffer): Buffer[] {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk])
    const frames: Buffer[] = []
    let offset = 0
    while (this.buffered.length - offset >= 4) {
      const size = this.buffered.readUInt32BE(offset)
      if (size > FrameReader.MAX_FRAME) throw new Error(`frame of ${size} bytes from the guest`)
      if (this.buffered.length - offset - 4 < size) break
      frames.push(this.buffered.subarray(offset + 4, offset + 4 + size))
      offset += 4 + size
    }
    this.buffered = this.buffered.subarray(offset)
    return frames
  }
}

export interface FrameFilter {
  /** Stops listening and cuts the connection (gvproxy sees the guest leave). */
  close(): void
}

interface FrameFilterOptions {
  listenPath: string
  /** gvproxy's QEMU socket; a promise when gvproxy is still starting (QEMU's connection waits, paused). */
  upstreamPath: string | Promise<string>
  policy: GuestPacketPolicy
  /** `egress`: dropped because the kit denies egress (FrameVerdict). */
  onBlocked?: (reason: string, egress: boolean) => void
}

/**
 * Listens on `listenPath` for QEMU's one stream connection, connects it to gvproxy's
 * `-listen-qemu` socket at `upstreamPath`, and forwards only the guest frames `policy` allows.
 */
export async function startFrameFilter(options: FrameFilterOptions): Promise<FrameFilter> {
  const sockets: net.Socket[] = []
  let closed = false
  const upstreamPath = Promise.resolve(options.upstreamPath)
  upstreamPath.catch(() => undefined) // awaited when QEMU connects; the caller reports gvproxy's failure
  const server = net.createServer({pauseOnConnect: true}, async (guest) => {
    server.close() // QEMU connects once; nobody else gets in
    sockets.push(guest)
    guest.on('error', () => guest.destroy())
    let upstreamSocket: string
    try {
      upstreamSocket = await upstreamPath
    } catch {
      guest.destroy() // gvproxy did not start: the runner reports that, and stops the VM
      return
    }
    if (closed) return
    const upstream = net.createConnection(upstreamSocket)
    sockets.push(upstream)
    filterConnection(guest, upstream, options)
  })
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(options.listenPath, resolve))
  return {
    close() {
      closed = true
      server.close()
      for (const socket of sockets) socket.destroy()
    },
  }
}

/** Relays frames between QEMU's connection (`guest`) and gvproxy's, judging each one the guest sends. */
function filterConnection(guest: net.Socket, upstream: net.Socket, options: FrameFilterOptions): void {
  const teardown = () => {
    guest.destroy()
    upstream.destroy()
  }
  guest.on('error', teardown).on('close', teardown)
  upstream.on('error', teardown).on('close', teardown)
  upstream.once('connect', () => {
    const onBadStream = (error: Error) => {
      options.onBlocked?.(`stream: ${error.message}`, false)
      teardown()
    }
    const inbound = new InboundFlows(options.policy.gateway)
    relayFrames(upstream, guest, onBadStream, (frame) => {
      inbound.noteToGuest(frame)
      return guest.write(framed(frame))
    })
    relayFrames(guest, upstream, onBadStream, (frame) => {
      const verdict = judgeGuestFrame(frame, options.policy, inbound)
      if (verdict.pass) return upstream.write(framed(frame))
      if (!verdict.quiet) options.onBlocked?.(verdict.reason, verdict.egress === true)
      const rejection = rejectionFor(frame)
      return rejection === undefined ? true : guest.write(framed(rejection))
    })
    guest.resume()
  })
}

/**
 * Cuts `from`'s stream into whole frames for `handle` (false: `to` is full), so a rejection can
 * be slipped in between two; pauses `from` until `to` drains.
 */
function relayFrames(
  from: net.Socket,
  to: net.Socket,
  onBadStream: (error: Error) => void,
  handle: (frame: Buffer) => boolean,
): void {
  const reader = new FrameReader()
  from.on('data', (chunk: Buffer) => {
    let frames: Buffer[]
    try {
      frames = reader.push(chunk)
    } catch (error) {
      onBadStream(error as Error)
      return
    }
    let writable = true
    for (const frame of frames) writable = handle(frame) && writable
    if (!writable) {
      from.pause()
      to.once('drain', () => from.resume())
    }
  })
}
