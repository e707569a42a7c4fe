/**
 * gvproxy (containers/gvisor-tap-vsock) as a NetworkBackend: one gvproxy per VM, its
 * control API on a private unix socket in the VM's run dir, host ports exposed through
 * that API on 127.0.0.1 only.
 *
 *   QEMU -netdev stream ──▶ net.sock (the filter, gvproxy-filter.ts) ──▶ qemu.sock (gvproxy)
 *
 * The filter between QEMU and gvproxy is what keeps the guest from opening host ports
 * through gvproxy's API (which gvproxy also serves at 192.168.127.1:80) and from reaching
 * the host's loopback services through 192.168.127.254 (gvproxy NATs it to 127.0.0.1),
 * except the `host:port` pairs the kit declares in `networking.internal_hosts`. Debian's
 * gvproxy (0.8.1) cannot turn either off itself. Egress and gvproxy's DNS (which also
 * answers host.containers.internal → .254) pass unless the kit denies egress
 * (`networking.egress: deny`): then the filter drops both, and the guest's /etc/hosts carries
 * host.containers.internal so that declared host services keep their name.
 *
 * A hostname in internal_hosts (`coordinator.internal:9000`) is the name the guest uses for a
 * service on the host's loopback, as a kit written for the Aegis platform names its session
 * coordinator: the harness writes it into the guest's /etc/hosts as 192.168.127.254, and that
 * port is allowed. The name is not looked up on the host: it need not exist there, and a host
 * resolver's answer cannot send the guest anywhere else. /etc/hosts rather than a zone in
 * gvproxy's DNS: a zone answers for every name under it, and the guest's resolver reads
 * /etc/hosts first anyway.
 *
 * Install gvproxy with scripts/install-gvproxy (Debian 13's package, on Debian 12).
 */

import {existsSync} from 'node:fs'
import {mkdir, readFile} from 'node:fs/promises'
import http from 'node:http'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {AegisError, messageOf} from '../errors.js'
import type {ChildProcessGroup} from './child-processes.js'
import {startFrameFilter, type FrameFilter, type GuestPacketPolicy} from './gvproxy-filter.js'
import {GUEST_MAC, GUEST_NETWORK, type AttachedNetwork, type NetworkBackend, type PortForward} from './network.js'
import {HOST_NAME} from './spec.js'

/** gvproxy's fixed address for the host's 127.0.0.1. */
export const GVPROXY_HOST_LOOPBACK = '192.168.127.254'
/** Names gvproxy's DNS answers with GVPROXY_HOST_LOOPBACK. */
const HOST_LOOPBACK_NAMES = new Set([
  '127.0.0.1',
  'localhost',
  'host.containers.internal',
  'host.docker.internal',
  GVPROXY_HOST_LOOPBACK,
])
/** Where podman's packages put gvproxy; AEGIS_KIT_HELPER_DIRS (colon-separated) replaces the list. */
const SEARCH_DIRS = ['/usr/libexec/podman', '/usr/lib/podman', '/usr/local/libexec/podman']
const INSTALL_HINT =
  "run scripts/install-gvproxy (on Debian 12 it installs Debian 13's gvproxy package), or install podman's gvproxy; run `aegis-kit doctor` to check the rest"

export interface GvproxyOptions {
  /** Host ports to forward to the guest; on 127.0.0.1 (only loopback host addresses are accepted). */
  forwards?: PortForward[]
  /**
   * Host services the guest may reach, as in `networking.internal_hosts`: "host:port" or a
   * bare port. 127.0.0.1, localhost and host.containers.internal mean the host's loopback,
   * which the guest reaches at 192.168.127.254:port (or host.containers.internal:port); any
   * other hostname is a name the guest gets for the host's loopback (see the top of this file);
   * another IPv4 address is one of the host's own.
   */
  allowHostLoopback?: (string | number)[]
  /**
   * Whether the guest reaches addresses beyond the host, and gvproxy's DNS (`networking.egress`);
   * default true.
   */
  egress?: boolean
  /**
   * Called for each guest packet the filter drops, with what it was ("tcp to 192.168.127.254:5432")
   * and whether it was dropped as egress the kit denies.
   */
  onBlocked?: (reason: string, egress: boolean) => void
  /** The gvproxy binary; found on PATH or where podman puts it when omitted. */
  binary?: string
  /**
   * The caller listens on the host ports itself (the instance's port relay, which wakes a paused
   * VM before it forwards a byte): gvproxy exposes each forward's guest port on a unix socket in
   * the VM's run directory instead, named by forwardSocket() while a VM is attached.
   */
  relayed?: boolean
  /**
   * Guest ports reachable from the host on a socket only (relayed mode), published on no host
   * port: what the runner asks for a healthcheck on a port the instance does not expose.
   */
  socketOnly?: number[]
}

export interface GvproxyForward {
  local: string
  remote: string
  protocol: string
}

export interface GvproxyBackend extends NetworkBackend {
  /** What gvproxy forwards now (its `GET /services/forwarder/all`); only while a VM is attached. */
  listForwards(): Promise<GvproxyForward[]>
  /** Exposes one more host port while the VM runs (127.0.0.1 only). */
  expose(forward: PortForward): Promise<void>
}

/** The gvproxy binary: on PATH, or where podman's packages put it (or AEGIS_KIT_HELPER_DIRS says). */
export function findGvproxy(): string {
  const {PATH, AEGIS_KIT_HELPER_DIRS} = process.env
  const helperDirs =
    AEGIS_KIT_HELPER_DIRS === undefined ? SEARCH_DIRS : AEGIS_KIT_HELPER_DIRS.split(':').filter(Boolean)
  for (const dir of [...(PATH ?? '').split(':').filter(Boolean), ...helperDirs]) {
    const candidate = path.join(dir, 'gvproxy')
    if (existsSync(candidate)) return candidate
  }
  const where = helperDirs.length > 0 ? `on PATH and in ${helperDirs.join(', ')}` : 'on PATH'
  throw new AegisError(`gvproxy is not installed (looked ${where})`, {hint: INSTALL_HINT})
}

/**
 * Splits `networking.internal_hosts` entries into loopback ports, endpoints on the host's own
 * addresses, and the hostnames the guest is to resolve to the host's loopback.
 */
export function parseInternalHosts(entries: (string | number)[]): {
  loopbackPorts: Set<number>
  endpoints: Set<string>
  loopbackNames: Set<string>
} {
  const loopbackPorts = new Set<number>()
  const endpoints = new Set<string>()
  const loopbackNames = new Set<string>()
  for (const entry of entries) {
    const text = String(entry).trim()
    const match = /^(?:(.+):)?(\d+)$/.exec(text)
    const port = match ? Number(match[2]) : Number.NaN
    if (!match || !Number.isInteger(port) || port < 1 || port > 65535) {
      throw new AegisError(`bad internal host ${JSON.stringify(text)}`, {
        hint: 'write host:port (e.g. 127.0.0.1:7000) or a port',
      })
    }
    const host = match[1]?.toLowerCase()
    if (host === undefined || HOST_LOOPBACK_NAMES.has(host)) {
      loopbackPorts.add(port)
    } else if (net.isIPv4(host)) {
      endpoints.add(`${host}:${port}`)
    } else if (HOST_NAME.test(host)) {
      loopbackPorts.add(port)
      loopbackNames.add(host)
    } else {
      throw new AegisError(
        `bad internal host ${JSON.stringify(text)}: ${JSON.stringify(host)} is neither an IPv4 address nor a hostname`,
        {
          hint: 'write host:port with a name of letters, digits, hyphens and dots (e.g. coordinator.internal:9000) or an IPv4 address',
        },
      )
    }
  }
  return {loopbackPorts, endpoints, loopbackNames}
}

function hostAddresses(): Set<string> {
  const addresses = new Set<string>()
  for (const list of Object.values(os.networkInterfaces())) {
    for (const address of list ?? []) {
      if (address.family === 'IPv4' && !address.internal) addresses.add(address.address)
    }
  }
  return addresses
}

function isLoopback(address: string): boolean {
  return net.isIPv4(address) && address.startsWith('127.')
}

function portInUse(forward: PortForward, address: string): AegisError {
  return new AegisError(`host port ${forward.hostPort} is already in use on ${address}`, {
    hint: `stop what listens there (ss -ltnp 'sport = :${forward.hostPort}') or expose another host port, e.g. --expose ${forward.hostPort + 1}:${forward.guestPort}`,
  })
}

/** Throws an AegisError naming the port when something already listens on it. */
export async function checkHostPortFree(forward: PortForward): Promise<void> {
  const server = await listenOnHostPort(forward, net.createServer())
  await new Promise<void>((resolve) => server.close(() => resolve()))
}

/** `server` listening on the forward's host port, or an AegisError that names the port and the fix. */
export async function listenOnHostPort(forward: PortForward, server: net.Server): Promise<net.Server> {
  const address = forward.hostAddress ?? '127.0.0.1'
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) => {
      if (error.code === 'EADDRINUSE') reject(portInUse(forward, address))
      else if (error.code === 'EACCES')
        reject(
          new AegisError(`not allowed to listen on host port ${forward.hostPort}`, {
            hint: 'ports below 1024 need root; expose a port of 1024 or more',
          }),
        )
      else
        reject(
          new AegisError(`cannot listen on ${address}:${forward.hostPort}: ${error.message}`, {
            hint: 'pick another host port',
          }),
        )
    })
    server.listen({port: forward.hostPort, host: address, exclusive: true}, () => resolve())
  })
  return server
}

function checkForward(forward: PortForward): void {
  const address = forward.hostAddress ?? '127.0.0.1'
  if (!isLoopback(address)) {
    throw new AegisError(
      `cannot expose port ${forward.hostPort} on ${address}: gvproxy networking exposes ports on 127.0.0.1 only`,
      {
        hint: 'drop the address (127.0.0.1 is the default), or put a reverse proxy in front of it',
      },
    )
  }
  for (const port of [forward.hostPort, forward.guestPort]) {
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      throw new AegisError(`bad port ${port}`, {hint: 'ports are 1-65535'})
  }
}

/** One request to gvproxy's API on its unix socket. */
async function apiRequest(
  socketPath: string,
  method: 'GET' | 'POST',
  urlPath: string,
  body?: unknown,
): Promise<{status: number; text: string}> {
  const payload = body === undefined ? undefined : JSON.stringify(body)
  return new Promise((resolve, reject) => {
    const request = http.request(
      {
        socketPath,
        method,
        path: urlPath,
        timeout: 5000,
        headers:
          payload === undefined
            ? {}
            : {'content-type': 'application/json', 'content-length': Buffer.byteLength(payload)},
      },
      (response) => {
        let text = ''
        response
          .setEncoding('utf8')
          .on('data', (chunk: string) => {
            text += chunk
          })
          .on('end', () => resolve({status: response.statusCode ?? 0, text}))
      },
    )
    request.on('timeout', () => request.destroy(new Error('gvproxy API timed out')))
    request.once('error', reject)
    request.end(payload)
  })
}

async function exposeThrough(apiSocket: string, forward: PortForward, socketPath?: string): Promise<void> {
  const local = socketPath ?? `${forward.hostAddress ?? '127.0.0.1'}:${forward.hostPort}`
  const response = await apiRequest(
    apiSocket,
    'POST',
    '/services/forwarder/expose',
    socketPath === undefined
      ? {local, remote: `${GUEST_NETWORK.address}:${forward.guestPort}`, protocol: 'tcp'}
      : // gvproxy's unix forwards take the remote as a URL.
        {local, remote: `tcp://${GUEST_NETWORK.address}:${forward.guestPort}`, protocol: 'unix'},
  )
  if (response.status === 200) return
  if (/address already in use/i.test(response.text)) throw portInUse(forward, forward.hostAddress ?? '127.0.0.1')
  throw new AegisError(`gvproxy could not expose ${local}: ${response.text.trim() || `HTTP ${response.status}`}`, {
    hint: 'pick another host port',
  })
}

async function listThrough(apiSocket: string): Promise<GvproxyForward[]> {
  const response = await apiRequest(apiSocket, 'GET', '/services/forwarder/all')
  if (response.status !== 200) throw new Error(`gvproxy API: HTTP ${response.status} ${response.text.trim()}`)
  return JSON.parse(response.text) as GvproxyForward[]
}

async function logTail(logFile: string): Promise<string> {
  // gvproxy may die before writing its log: the caller falls back to its stderr.
  const text = await readFile(logFile, 'utf8').catch(() => '')
  return text.trim().split('\n').slice(-3).join('\n')
}

/** Starts gvproxy in `dir` and resolves once its API answers. */
async function startGvproxy(
  processes: ChildProcessGroup,
  binary: string,
  dir: string,
): Promise<{apiSocket: string; qemuSocket: string}> {
  const apiSocket = path.join(dir, 'api.sock')
  const qemuSocket = path.join(dir, 'qemu.sock')
  const logFile = path.join(dir, 'gvproxy.log')
  const child = processes.spawn(
    binary,
    [
      '-listen-qemu',
      `unix://${qemuSocket}`,
      '-listen',
      `unix://${apiSocket}`,
      '-ssh-port',
      '-1',
      '-pid-file',
      path.join(dir, 'gvproxy.pid'),
      '-log-file',
      logFile,
    ],
    {stdio: ['ignore', 'ignore', 'pipe']},
  )
  let errors = ''
  child.stderr?.setEncoding('utf8').on('data', (text: string) => {
    errors = (errors + text).slice(-4096)
  })
  let exited: string | undefined
  child.once('exit', (code, signal) => {
    exited = signal ? `killed by ${signal}` : `exited with code ${code}`
  })
  child.once('error', (error) => {
    exited = error.message
  })
  const deadline = Date.now() + 10_000
  for (;;) {
    if (exited !== undefined) {
      const why = (await logTail(logFile)) || errors.trim() || exited
      throw new AegisError(`gvproxy did not start: ${why}`, {
        hint: `check that ${binary} is gvproxy 0.7 or newer; ${INSTALL_HINT}`,
      })
    }
    if (existsSync(apiSocket) && existsSync(qemuSocket)) {
      try {
        await listThrough(apiSocket)
        return {apiSocket, qemuSocket}
      } catch {
        // Not serving yet.
      }
    }
    if (Date.now() > deadline)
      throw new AegisError(`gvproxy did not answer on ${apiSocket} within 10 s`, {
        hint: 'a heavily loaded host slows it down: retry',
      })
    await sleep(10)
  }
}

/** The forwards are sane and free, and gvproxy is installed: returns its path. */
async function checkGvproxy(forwards: PortForward[], binary: string | undefined, relayed: boolean): Promise<string> {
  for (const forward of forwards) checkForward(forward)
  const seen = new Set<number>()
  for (const forward of forwards) {
    if (seen.has(forward.hostPort))
      throw new AegisError(`host port ${forward.hostPort} is exposed twice`, {
        hint: 'give each --expose its own host port',
      })
    seen.add(forward.hostPort)
  }
  const found = binary ?? findGvproxy()
  // Relayed host ports are the caller's to listen on (and it may already).
  if (!relayed) await Promise.all(forwards.map((forward) => checkHostPortFree(forward)))
  return found
}

interface AttachedState {
  apiSocket?: string
  /** The attached VM's gvproxy directory, where the forwards' sockets go. */
  dir?: string
  /** Guest port → the unix socket gvproxy forwards it from (relayed forwards only). */
  forwardSockets: Map<number, string>
  /** Sockets being made for ports exposed at run time (two connections ask at once). */
  opening: Map<number, Promise<string>>
}

/** gvproxy networking: see the top of this file. */
export function gvproxyNetwork(options: GvproxyOptions = {}): GvproxyBackend {
  const forwards = options.forwards ?? []
  const internal = parseInternalHosts(options.allowHostLoopback ?? [])
  const relayed = options.relayed ?? false
  /** gvproxy's API (and the relayed forwards' sockets) while a VM is attached and its forwards are exposed. */
  const state: AttachedState = {forwardSockets: new Map(), opening: new Map()}

  const attachedApi = (): string => {
    if (state.apiSocket === undefined) throw new Error('gvproxy is not running: attach the backend to a VM first')
    return state.apiSocket
  }

  return {
    async check() {
      await checkGvproxy(forwards, options.binary, relayed)
    },
    async attach(context): Promise<AttachedNetwork> {
      // Before anything starts, so the error is about the port and not a half-booted VM.
      const binary = await checkGvproxy(forwards, options.binary, relayed)
      return attachGvproxy(context, binary, {
        forwards,
        internal,
        egress: options.egress ?? true,
        onBlocked: options.onBlocked,
        state,
        relayed,
        socketOnly: options.socketOnly ?? [],
      })
    },
    ...(relayed
      ? {
          forwardSocket: (guestPort: number) => state.forwardSockets.get(guestPort),
          openForwardSocket: (guestPort: number) => openForwardSocket(state, guestPort),
        }
      : {}),
    async listForwards() {
      return listThrough(attachedApi())
    },
    async expose(forward) {
      checkForward(forward)
      await checkHostPortFree(forward)
      await exposeThrough(attachedApi(), forward)
    },
  }
}

/** A relayed forward's socket for a guest port exposed after the VM started (kept until it stops). */
async function openForwardSocket(state: AttachedState, guestPort: number): Promise<string> {
  const known = state.forwardSockets.get(guestPort) ?? (await state.opening.get(guestPort))
  if (known !== undefined) return known
  const {apiSocket, dir} = state
  if (apiSocket === undefined || dir === undefined) throw new Error('gvproxy is not running: the VM is not up')
  const socketPath = path.join(dir, `port-${guestPort}.sock`)
  const opened = exposeThrough(apiSocket, {hostPort: 0, guestPort}, socketPath).then(() => {
    // Only into the VM's state it was made for (a reboot meanwhile has its own).
    if (state.dir === dir) state.forwardSockets.set(guestPort, socketPath)
    return socketPath
  })
  state.opening.set(guestPort, opened)
  try {
    return await opened
  } finally {
    if (state.opening.get(guestPort) === opened) state.opening.delete(guestPort)
  }
}

/** What gvproxyNetwork() hands attachGvproxy() for one VM. */
interface GvproxyAttachOptions {
  forwards: PortForward[]
  internal: ReturnType<typeof parseInternalHosts>
  egress: boolean
  onBlocked: ((reason: string, egress: boolean) => void) | undefined
  state: AttachedState
  relayed: boolean
  socketOnly: number[]
}

/**
 * Starts gvproxy and the frame filter in front of it for one VM. QEMU connects to the filter,
 * which reaches gvproxy once it is up: the VM boots meanwhile, and `ready` says when the
 * forwards are exposed.
 */
async function attachGvproxy(
  {runDir, processes}: {runDir: string; processes: ChildProcessGroup},
  binary: string,
  options: GvproxyAttachOptions,
): Promise<AttachedNetwork> {
  const {internal, egress, state} = options
  const dir = path.join(runDir, 'gvproxy')
  await mkdir(dir, {mode: 0o700})
  const started = startGvproxy(processes, binary, dir)
  started.catch(() => undefined) // `ready` carries the failure

  const listenPath = path.join(dir, 'net.sock')
  const filter = await listenForGuestFrames(listenPath, started, guestPacketPolicy(internal, egress), options.onBlocked)
  const ready = exposeForwards(started, dir, options)
  ready.catch(() => filter.close())
  return {
    ready,
    qemuArgs: [
      '-netdev',
      `stream,id=net0,server=off,addr.type=unix,addr.path=${listenPath}`,
      '-device',
      `virtio-net-device,netdev=net0,mac=${GUEST_MAC}`,
    ],
    guest: {
      ...GUEST_NETWORK,
      hosts: guestHostNames(internal, egress).map((name) => ({name, address: GVPROXY_HOST_LOOPBACK})),
    },
    async detach() {
      state.apiSocket = undefined
      state.dir = undefined
      state.forwardSockets = new Map()
      state.opening = new Map()
      filter.close()
    },
  }
}

/**
 * The names the guest's /etc/hosts gives the host's loopback: the kit's internal_hosts names, and
 * without egress (no gvproxy DNS to answer it) host.containers.internal.
 */
function guestHostNames(internal: ReturnType<typeof parseInternalHosts>, egress: boolean): string[] {
  return [...internal.loopbackNames, ...(egress ? [] : ['host.containers.internal'])]
}

/** What the filter lets the guest reach on the host and beyond: see the top of this file. */
function guestPacketPolicy(internal: ReturnType<typeof parseInternalHosts>, egress: boolean): GuestPacketPolicy {
  return {
    gateway: GUEST_NETWORK.gateway,
    hostLoopbackAlias: GVPROXY_HOST_LOOPBACK,
    subnetPrefix: GUEST_NETWORK.address.split('.').slice(0, 3).join('.'),
    allowedLoopbackPorts: internal.loopbackPorts,
    hostAddresses: hostAddresses(),
    allowedHostEndpoints: internal.endpoints,
    egress,
  }
}

/** The frame filter on `listenPath`, for QEMU to connect to, passing what `policy` allows on to gvproxy. */
async function listenForGuestFrames(
  listenPath: string,
  started: Promise<{qemuSocket: string}>,
  policy: GuestPacketPolicy,
  onBlocked: ((reason: string, egress: boolean) => void) | undefined,
): Promise<FrameFilter> {
  try {
    return await startFrameFilter({
      listenPath,
      upstreamPath: started.then(({qemuSocket}) => qemuSocket),
      policy,
      onBlocked,
    })
  } catch (error) {
    throw new AegisError(`cannot listen on ${listenPath}: ${messageOf(error)}`, {
      hint: 'check the run directory is writable',
    })
  }
}

/**
 * Once gvproxy answers: exposes the forwards (relayed ones and the socket-only ports on sockets in
 * `dir`), then records the attached VM in the backend's state.
 */
async function exposeForwards(
  started: Promise<{apiSocket: string}>,
  dir: string,
  options: GvproxyAttachOptions,
): Promise<void> {
  const {state} = options
  const {apiSocket} = await started
  const sockets = new Map<number, string>()
  for (const forward of options.forwards) {
    const socketPath = options.relayed ? path.join(dir, `port-${forward.guestPort}.sock`) : undefined
    await exposeThrough(apiSocket, forward, socketPath)
    if (socketPath !== undefined) sockets.set(forward.guestPort, socketPath)
  }
  for (const guestPort of options.relayed ? options.socketOnly : []) {
    if (sockets.has(guestPort)) continue
    const socketPath = path.join(dir, `port-${guestPort}.sock`)
    await exposeThrough(apiSocket, {hostPort: 0, guestPort}, socketPath)
    sockets.set(guestPort, socketPath)
  }
  state.apiSocket = apiSocket
  state.dir = dir
  state.forwardSockets = sockets
  state.opening = new Map()
}
