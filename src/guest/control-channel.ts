/**
 * The host half of the control channel to the guest harness (images/guest/control.c): after the
 * run spec (spec.ts), binary frames both ways over the virtio-serial port's unix socket,
 *
 *   u32 BE length of the rest | u8 type | u32 BE stream id | payload (at most 64 KiB)
 *
 * multiplexing the harness's reports and the host's signal requests (EVENT, stream 0), activity
 * samples (HEARTBEAT), exec sessions (even stream ids, chosen here: EXEC_OPEN, STDIN, STDOUT,
 * STDERR, EXIT, SIGNAL, RESIZE) and tunnel connections from 127.0.0.1:7777 in the guest (odd ids,
 * chosen by the guest: TUNNEL_OPEN, DATA). Every stream has per-direction credit: a side sends at
 * most STREAM_WINDOW data bytes the other has not acknowledged with WINDOW, and acknowledges what
 * its reader has taken, so a slow reader holds up its own stream only. CLOSE ends a stream at once
 * (from the host: the exec'd process group is killed, the tunnel connection reset).
 *
 * A harness older than this channel writes report lines ("AEGIS_READY\n") instead of frames; a
 * frame's first byte is always 0, so the first byte received tells which (`legacy`): such a guest
 * still runs and stops, without exec, heartbeats or the tunnel.
 */
import {Duplex, Readable, Writable} from 'node:stream'
import type net from 'node:net'

import {AegisError} from '../errors.js'
import {awaitedLater} from '../undo-stack.js'
import {checkSpecValue, ENV_NAME, encodeRecords} from './spec.js'

export const FRAME_TYPE = {
  EVENT: 0x01,
  HEARTBEAT: 0x02,
  WINDOW: 0x03,
  CLOSE: 0x04,
  EXEC_OPEN: 0x10,
  STDIN: 0x11,
  STDOUT: 0x12,
  STDERR: 0x13,
  EXIT: 0x14,
  SIGNAL: 0x15,
  RESIZE: 0x16,
  TUNNEL_OPEN: 0x20,
  DATA: 0x21,
} as const

export const FRAME_HEADER = 9
export const FRAME_MAX_PAYLOAD = 64 * 1024
/** Data bytes a side may send on a stream before the other acknowledges them (both directions). */
export const STREAM_WINDOW = 256 * 1024
/** The guest port the harness's tunnel listens on (127.0.0.1 inside the guest). */
export const TUNNEL_PORT = 7777

export interface Frame {
  type: number
  stream: number
  payload: Buffer
}

export function encodeFrame(type: number, stream: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  if (payload.length > FRAME_MAX_PAYLOAD) throw new Error(`frame payload of ${payload.length} bytes`)
  const header = Buffer.alloc(FRAME_HEADER)
  header.writeUInt32BE(5 + payload.length, 0)
  header.writeUInt8(type, 4)
  header.writeUInt32BE(stream, 5)
  return Buffer.concat([header, payload])
}

/** Splits a byte stream into frames; throws on a length no harness sends. */
export class FrameDecoder {
  private buffered: Buffer = Buffer.alloc(0)

  push(chunk: Buffer): Frame[] {
    this.buffered = this.buffered.length === 0 ? chunk : Buffer.concat([this.buffered, chunk])
    const frames: Frame[] = []
    let at = 0
    while (this.buffered.length - at >= 4) {
      const length = this.buffered.readUInt32BE(at)
      if (length < 5 || length > 5 + FRAME_MAX_PAYLOAD) throw new Error(`bad frame length ${length}`)
      if (this.buffered.length - at < 4 + length) break
      frames.push({
        type: this.buffered.readUInt8(at + 4),
        stream: this.buffered.readUInt32BE(at + 5),
        payload: Buffer.from(this.buffered.subarray(at + FRAME_HEADER, at + 4 + length)),
      })
      at += 4 + length
    }
    this.buffered = this.buffered.subarray(at)
    return frames
  }
}

/** An activity sample from the guest: cumulative counters (compute deltas), and when it arrived. */
export interface HeartbeatSample {
  /** ESTABLISHED TCP connections in the guest now, both ends of the tunnel's own left out. */
  tcpEstablished: number
  /** CPU time every process but the harness has used since boot, in ms (10 ms resolution). */
  cpuMs: number
  /** Bytes received and sent by the guest's NICs (not lo) since boot. */
  netBytes: number
  /** Date.now() on the host when the sample arrived. */
  atMs: number
}

export interface ExecRequest {
  /** argv; argv[0] is looked up on the workload's PATH (or the PATH in `env`). */
  command: string[]
  /** Added to the workload's environment (which holds its secrets), replacing names it has. */
  env?: Record<string, string>
  /** Default: the workload's. */
  workdir?: string
  /** Numeric ids. Default: the workload's user and groups. */
  user?: {uid: number; gid: number; groups?: number[]}
  /** A pseudo-terminal of this size (stdout carries everything, stderr ends at once). Default: pipes. */
  tty?: {rows: number; cols: number}
}

export interface ExecSession {
  /** The process's stdin: end() it to send EOF (on a tty, a ^D). */
  readonly stdin: Writable
  readonly stdout: Readable
  readonly stderr: Readable
  /** The terminal's size (TIOCSWINSZ: the process gets SIGWINCH); ignored without a tty. */
  resize(rows: number, cols: number): void
  /** A signal to the process group: "TERM", "INT", "KILL", "HUP", "QUIT", "USR1", "USR2", "WINCH", "STOP", "CONT". */
  signal(name: string): void
  /** Kills the process group and forgets the session (`exit` rejects). */
  close(): void
  /** The exit code, or 128+N for signal N, once stdout and stderr have ended. Rejects when the VM stops first. */
  readonly exit: Promise<{exitCode: number}>
}

/** Encodes an exec request as the harness's EXEC_OPEN records. */
export function encodeExecRequest(request: ExecRequest): Buffer {
  if (request.command.length === 0)
    throw new AegisError('exec needs a command', {hint: 'give the command to run in the instance'})
  const records: string[] = []
  for (const arg of request.command) records.push(`arg ${checkSpecValue('a command argument', arg)}`)
  for (const [name, value] of Object.entries(request.env ?? {})) {
    if (!ENV_NAME.test(name))
      throw new AegisError(`bad environment variable name ${JSON.stringify(name)}`, {
        hint: 'use letters, digits and _ only',
      })
    records.push(`env ${name}=${checkSpecValue(`environment variable ${name}`, value)}`)
  }
  if (request.workdir !== undefined) records.push(`workdir ${checkSpecValue('the workdir', request.workdir)}`)
  if (request.user) {
    records.push(`user ${request.user.uid}:${request.user.gid}`)
    for (const group of request.user.groups ?? []) records.push(`group ${group}`)
  }
  if (request.tty) records.push(`tty ${request.tty.rows}:${request.tty.cols}`)
  const bytes = encodeRecords(records)
  if (bytes.length > FRAME_MAX_PAYLOAD)
    throw new AegisError(`the exec request is ${bytes.length} bytes; at most ${FRAME_MAX_PAYLOAD} fit`, {
      hint: 'pass less on the command line or in the environment',
    })
  return bytes
}

/** Sends data frames on one stream within the credit the other side granted. */
class CreditedSender {
  private credit = STREAM_WINDOW
  private waiting: {data: Buffer; done: (error?: Error | null) => void} | undefined

  constructor(
    private readonly send: (payload: Buffer) => void,
    private readonly isOpen: () => boolean,
  ) {}

  write(data: Buffer, done: (error?: Error | null) => void): void {
    this.waiting = {data, done}
    this.pump()
  }

  grant(bytes: number): void {
    this.credit += bytes
    this.pump()
  }

  /** The stream is gone: a waiting write completes (its bytes are moot). */
  abandon(): void {
    const waiting = this.waiting
    this.waiting = undefined
    waiting?.done()
  }

  private pump(): void {
    const waiting = this.waiting
    if (!waiting) return
    if (!this.isOpen()) {
      this.abandon()
      return
    }
    while (waiting.data.length > 0 && this.credit > 0) {
      const size = Math.min(waiting.data.length, this.credit, FRAME_MAX_PAYLOAD)
      this.send(waiting.data.subarray(0, size))
      this.credit -= size
      waiting.data = waiting.data.subarray(size)
    }
    if (waiting.data.length === 0) {
      this.waiting = undefined
      waiting.done()
    }
  }
}

/** A Readable fed by data frames that acknowledges each frame once its consumer wants more. */
class CreditedReadable extends Readable {
  private owed = 0

  constructor(private readonly acknowledge: (bytes: number) => void) {
    super()
  }

  deliver(data: Buffer): void {
    if (this.destroyed || this.readableEnded) {
      this.acknowledge(data.length) // nobody reads: keep the guest from waiting
      return
    }
    if (this.push(data)) this.acknowledge(data.length)
    else this.owed += data.length
  }

  override _read(): void {
    if (this.owed === 0) return
    const owed = this.owed
    this.owed = 0
    this.acknowledge(owed)
  }
}

/** A tunnel connection as a socket-like Duplex (enough for `httpServer.emit('connection', duplex)`). */
export class TunnelStream extends Duplex {
  readonly remoteAddress = '127.0.0.1'
  readonly remotePort: number = 0
  readonly localPort = TUNNEL_PORT
  /** Set by the channel. */
  onWrite: (data: Buffer, done: (error?: Error | null) => void) => void = (_data, done) => done()
  onEnd: () => void = () => undefined
  onDestroy: () => void = () => undefined
  onRead: () => void = () => undefined

  constructor(readonly streamId: number) {
    super({allowHalfOpen: true})
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, done: (error?: Error | null) => void): void {
    this.onWrite(chunk, done)
  }

  override _final(done: (error?: Error | null) => void): void {
    this.onEnd()
    done()
  }

  override _read(): void {
    this.onRead()
  }

  override _destroy(error: Error | null, done: (error?: Error | null) => void): void {
    this.onDestroy()
    done(error)
  }

  // What net.Socket users (node:http) may call; meaningless on a tunnel.
  setTimeout(_ms: number, _callback?: () => void): this {
    return this
  }
  setNoDelay(_noDelay?: boolean): this {
    return this
  }
  setKeepAlive(_enable?: boolean, _delay?: number): this {
    return this
  }
}

interface ExecState {
  kind: 'exec'
  sender: CreditedSender
  stdout: CreditedReadable
  stderr: CreditedReadable
  settle: (outcome: {exitCode: number} | Error) => void
}

interface TunnelState {
  kind: 'tunnel'
  sender: CreditedSender
  stream: TunnelStream
  readable: {owed: number; ended: boolean}
  sentEnd: boolean
}

export interface ControlChannelEvents {
  /** A report line from the harness ("AEGIS_EXIT=0"), from frames or an old harness's lines. */
  onReport(line: string): void
}

/**
 * One VM's control channel: attach() it to the harness's connection, with the spec to send
 * first. Frames asked for before (an exec right after startVm) wait for the spec.
 */
export class ControlChannel {
  /** Undefined until the harness's first byte says which protocol it speaks. */
  private framed: boolean | undefined
  private socket: net.Socket | undefined
  private specSent = false
  private closed = false
  private readonly pending: Buffer[] = []
  private readonly whenKnown: Array<() => void> = []
  private readonly decoder = new FrameDecoder()
  private legacyText = ''
  private readonly streams = new Map<number, ExecState | TunnelState>()
  private nextExecId = 2
  private readonly heartbeatListeners = new Set<(sample: HeartbeatSample) => void>()
  private tunnelHandler: ((stream: Duplex, token: string) => void) | undefined
  private token: string | undefined

  constructor(private readonly events: ControlChannelEvents) {}

  /** The harness connected: read it, and send `spec` (then whatever waits) once it is known. */
  attach(socket: net.Socket, spec: Promise<Buffer>): void {
    this.socket = socket
    // The connection breaks when QEMU exits; the VM's exit handler reports how it ended.
    socket.on('error', () => {})
    socket.on('data', (chunk: Buffer) => this.receive(chunk))
    socket.on('close', () => this.close())
    // A spec that could not be made stops the VM (handOverSpec): the guest gets nothing.
    spec.then(
      (bytes) => {
        if (this.closed) return
        socket.write(bytes)
        this.specSent = true
        this.flush()
      },
      () => undefined,
    )
  }

  /** Asks the harness to signal the workload's process group (stop: "TERM"). */
  signalWorkload(name: 'TERM' | 'INT' | 'KILL'): void {
    this.whenProtocolKnown(() => {
      if (this.framed) this.send(FRAME_TYPE.EVENT, 0, Buffer.from(`signal ${name}`))
      else if (this.specSent) this.socket?.write(`signal ${name}\n`)
    })
  }

  /**
   * Gives the harness the instance's capability token, which it keeps in its own memory and sends
   * with every tunnel connection (never to the workload). Sent once the harness speaks frames.
   */
  setToken(token: string): void {
    this.token = token
    this.whenProtocolKnown(() => {
      if (this.framed && this.token === token) this.send(FRAME_TYPE.EVENT, 0, Buffer.from(`token ${token}`))
    })
  }

  /** Asks for a heartbeat now (after a resume: the guest cannot tell it was paused). */
  requestHeartbeat(): void {
    if (this.framed) this.send(FRAME_TYPE.EVENT, 0, Buffer.from('heartbeat'))
  }

  onHeartbeat(listener: (sample: HeartbeatSample) => void): () => void {
    this.heartbeatListeners.add(listener)
    return () => this.heartbeatListeners.delete(listener)
  }

  /**
   * Each new tunnel connection goes to `handler` (the last one set), with the token the harness
   * sent with it ('' from a harness that has none); without a handler it is closed.
   */
  onTunnel(handler: (stream: Duplex, token: string) => void): void {
    this.tunnelHandler = handler
  }

  exec(request: ExecRequest): ExecSession {
    const open = encodeExecRequest(request)
    const id = this.nextExecId
    this.nextExecId += 2
    let settle!: (outcome: {exitCode: number} | Error) => void
    const exit = awaitedLater(
      new Promise<{exitCode: number}>((resolve, reject) => {
        settle = (outcome) => (outcome instanceof Error ? reject(outcome) : resolve(outcome))
      }),
    )
    const isOpen = () => this.streams.has(id) && !this.closed
    const state = this.execStreams(id, isOpen, settle)
    const session = this.execSession(id, state, isOpen, exit)
    if (this.closed) {
      this.endExec(id, state, vmGone())
      return session
    }
    this.streams.set(id, state)
    this.whenProtocolKnown(() => {
      if (this.framed || !this.streams.has(id)) return
      this.endExec(
        id,
        state,
        new AegisError("this VM's guest cannot run exec: its harness predates the control channel", {
          hint: 'boot the guest this aegis-kit assembles (drop --guest, --kernel and --initrd)',
        }),
      )
    })
    this.send(FRAME_TYPE.EXEC_OPEN, id, open)
    return session
  }

  /** An exec session's state: stdin's sender, the stdout and stderr readers, and how it settles. */
  private execStreams(
    id: number,
    isOpen: () => boolean,
    settle: (outcome: {exitCode: number} | Error) => void,
  ): ExecState {
    const acknowledge = (bytes: number) => {
      if (isOpen()) this.send(FRAME_TYPE.WINDOW, id, u32(bytes))
    }
    return {
      kind: 'exec',
      sender: new CreditedSender((payload) => this.send(FRAME_TYPE.STDIN, id, payload), isOpen),
      stdout: new CreditedReadable(acknowledge),
      stderr: new CreditedReadable(acknowledge),
      settle,
    }
  }

  /** What exec() hands its caller: the streams, the exit, and the requests to the process. */
  private execSession(
    id: number,
    state: ExecState,
    isOpen: () => boolean,
    exit: Promise<{exitCode: number}>,
  ): ExecSession {
    return {
      stdin: this.execStdin(id, state, isOpen),
      stdout: state.stdout,
      stderr: state.stderr,
      exit,
      resize: (rows, cols) => {
        if (!isOpen()) return
        const size = Buffer.alloc(4)
        size.writeUInt16BE(clampU16(rows), 0)
        size.writeUInt16BE(clampU16(cols), 2)
        this.send(FRAME_TYPE.RESIZE, id, size)
      },
      signal: (name) => {
        if (isOpen()) this.send(FRAME_TYPE.SIGNAL, id, Buffer.from(name.replace(/^SIG/, '')))
      },
      close: () => {
        if (!isOpen()) return
        this.send(FRAME_TYPE.CLOSE, id)
        this.endExec(id, state, new AegisError('the exec session was closed before its command exited'))
      },
    }
  }

  /** An exec session's stdin: STDIN frames within the guest's credit, an empty one for EOF. */
  private execStdin(id: number, state: ExecState, isOpen: () => boolean): Writable {
    const stdin = new Writable({
      write: (chunk: Buffer, _encoding, done) => state.sender.write(chunk, done),
      final: (done) => {
        if (isOpen()) this.send(FRAME_TYPE.STDIN, id, Buffer.alloc(0))
        done()
      },
    })
    // The caller may never look at stdin: an error there (none is raised here) must not throw.
    stdin.on('error', () => {})
    return stdin
  }

  /** The connection is gone (QEMU exited): every session and tunnel ends. */
  close(): void {
    if (this.closed) return
    this.closed = true
    for (const [id, state] of this.streams) {
      if (state.kind === 'exec') this.endExec(id, state, vmGone())
      else this.endTunnel(id, state, false)
    }
    this.pending.length = 0
    this.flushWhenKnown()
  }

  private whenProtocolKnown(action: () => void): void {
    if (this.framed !== undefined || this.closed) action()
    else this.whenKnown.push(action)
  }

  private flushWhenKnown(): void {
    for (const action of this.whenKnown.splice(0)) action()
  }

  private send(type: number, stream: number, payload?: Buffer): void {
    if (this.closed) return
    const frame = encodeFrame(type, stream, payload)
    if (this.socket && this.specSent && this.framed) this.socket.write(frame)
    else this.pending.push(frame)
  }

  private flush(): void {
    if (!this.socket || !this.specSent || !this.framed) return
    for (const frame of this.pending.splice(0)) this.socket.write(frame)
  }

  private receive(chunk: Buffer): void {
    if (this.framed === undefined && chunk.length > 0) {
      this.framed = chunk[0] === 0
      if (!this.framed) this.pending.length = 0 // frames an old harness would misread
      this.flush()
      this.flushWhenKnown()
    }
    if (!this.framed) {
      const lines = (this.legacyText + chunk.toString('utf8')).split(/\r?\n/)
      this.legacyText = lines.pop() ?? ''
      for (const line of lines) this.events.onReport(line)
      return
    }
    let frames: Frame[]
    try {
      frames = this.decoder.push(chunk)
    } catch {
      // Not a harness we understand any more: its exit still shows on the console.
      this.socket?.destroy()
      this.close()
      return
    }
    for (const frame of frames) this.dispatch(frame)
  }

  private dispatch({type, stream, payload}: Frame): void {
    if (stream === 0) {
      if (type === FRAME_TYPE.EVENT) this.events.onReport(payload.toString('utf8'))
      else if (type === FRAME_TYPE.HEARTBEAT && payload.length >= 20) {
        const sample: HeartbeatSample = {
          tcpEstablished: payload.readUInt32BE(0),
          cpuMs: Number(payload.readBigUInt64BE(4)),
          netBytes: Number(payload.readBigUInt64BE(12)),
          atMs: Date.now(),
        }
        for (const listener of this.heartbeatListeners) listener(sample)
      }
      return
    }
    if (type === FRAME_TYPE.TUNNEL_OPEN) {
      this.openTunnel(stream, payload.subarray(2).toString('latin1'))
      return
    }
    const state = this.streams.get(stream)
    if (!state) return // finished here already: frames in flight are moot
    if (type === FRAME_TYPE.WINDOW && payload.length === 4) state.sender.grant(payload.readUInt32BE(0))
    else if (state.kind === 'exec') this.execFrame(stream, state, type, payload)
    else this.tunnelFrame(stream, state, type, payload)
  }

  private execFrame(id: number, state: ExecState, type: number, payload: Buffer): void {
    if (type === FRAME_TYPE.STDOUT || type === FRAME_TYPE.STDERR) {
      const output = type === FRAME_TYPE.STDOUT ? state.stdout : state.stderr
      if (payload.length === 0) output.push(null)
      else output.deliver(payload)
    } else if (type === FRAME_TYPE.EXIT && payload.length === 4) {
      this.endExec(id, state, {exitCode: payload.readInt32BE(0)})
    }
  }

  private endExec(id: number, state: ExecState, outcome: {exitCode: number} | Error): void {
    this.streams.delete(id)
    state.sender.abandon()
    for (const output of [state.stdout, state.stderr]) if (!output.readableEnded) output.push(null)
    state.settle(outcome)
  }

  private openTunnel(id: number, token: string): void {
    const handler = this.tunnelHandler
    if (!handler || this.streams.has(id)) {
      this.send(FRAME_TYPE.CLOSE, id)
      return
    }
    const stream = new TunnelStream(id)
    const isOpen = () => this.streams.get(id) === state && !this.closed
    const state: TunnelState = {
      kind: 'tunnel',
      sender: new CreditedSender((payload) => this.send(FRAME_TYPE.DATA, id, payload), isOpen),
      stream,
      readable: {owed: 0, ended: false},
      sentEnd: false,
    }
    stream.onWrite = (data, done) => state.sender.write(data, done)
    stream.onEnd = () => {
      if (!isOpen() || state.sentEnd) return
      state.sentEnd = true
      this.send(FRAME_TYPE.DATA, id, Buffer.alloc(0))
      if (state.readable.ended) this.streams.delete(id) // both directions ended: the guest closes too
    }
    stream.onRead = () => {
      if (!isOpen() || state.readable.owed === 0) return
      const owed = state.readable.owed
      state.readable.owed = 0
      this.send(FRAME_TYPE.WINDOW, id, u32(owed))
    }
    stream.onDestroy = () => {
      if (!isOpen()) return
      this.endTunnel(id, state, true)
    }
    this.streams.set(id, state)
    handler(stream, token)
  }

  private tunnelFrame(id: number, state: TunnelState, type: number, payload: Buffer): void {
    if (type === FRAME_TYPE.DATA) {
      if (payload.length === 0) {
        state.readable.ended = true
        state.stream.push(null)
        if (state.sentEnd) this.streams.delete(id)
      } else if (state.stream.destroyed) {
        this.send(FRAME_TYPE.WINDOW, id, u32(payload.length))
      } else if (state.stream.push(payload)) {
        this.send(FRAME_TYPE.WINDOW, id, u32(payload.length))
      } else {
        state.readable.owed += payload.length
      }
    } else if (type === FRAME_TYPE.CLOSE) {
      this.endTunnel(id, state, false)
    }
  }

  /** Ends a tunnel connection; `tellGuest`: the host side let go first (a reset for the guest's client). */
  private endTunnel(id: number, state: TunnelState, tellGuest: boolean): void {
    this.streams.delete(id)
    if (tellGuest) this.send(FRAME_TYPE.CLOSE, id)
    state.sender.abandon()
    if (!state.stream.destroyed) state.stream.destroy()
  }
}

function u32(value: number): Buffer {
  const bytes = Buffer.alloc(4)
  bytes.writeUInt32BE(value, 0)
  return bytes
}

function clampU16(value: number): number {
  return Math.max(0, Math.min(0xffff, Math.trunc(value)))
}

function vmGone(): AegisError {
  return new AegisError("the VM stopped before the exec'd command exited", {
    hint: 'the instance stopped or was stopped; start it again and retry',
  })
}
