/**
 * Sends a FileBody over plain HTTP with sendfile(2): a `busybox cat` child, whose stdin is the
 * file and whose stdout is the request's socket, moves the bytes inside the kernel. Node has no
 * sendfile: its own path (sendFile in http.ts) reads every byte into a buffer and writes it to the
 * socket, 0.8 s of CPU per GB, which is wall time on a machine that also runs the registry
 * (docs/performance.md, "Pushes through sendfile"). Go clients send files this way on their own.
 *
 * The costs, and why each is safe:
 * - libuv makes a child's stdin and stdout blocking, and the socket's file description is shared,
 *   so the socket stays blocking in this process too. The request therefore has a connection of
 *   its own (no keep-alive agent) and says `Connection: close`: the socket is never reused,
 *   nothing more is written to it, and the response ends when the server closes it.
 * - The child's writes do not go through Node's socket, so Node's idle timer sees no traffic: the
 *   file offset of the child (its fdinfo) is read every PROGRESS_MS, reported as progress, and
 *   re-arms the socket's idle timer when it moved. busybox sends 16 MiB per sendfile call and the
 *   offset moves when a call returns, so progress comes in 16 MiB steps, and an upload slower
 *   than 16 MiB per idle timeout (56 KiB/s at the default 300 s) is given up as idle. A child
 *   given up is killed with the request.
 * - TLS cannot be sent this way: HTTPS uploads keep the buffered path.
 * - The child opens the file afresh (its own offset from 0), so a retry sends the whole body again.
 */
import {type ChildProcess, spawn} from 'node:child_process'
import {closeSync, fstatSync, openSync, readFileSync} from 'node:fs'
import type {ClientRequest} from 'node:http'
import type {Socket} from 'node:net'
import {findOnPath} from '../exec.js'
import type {FileBody} from './http.js'

const PROGRESS_MS = 250

/**
 * The busybox that will send `body` to `url`, or undefined when it must take the buffered path:
 * HTTPS, no busybox on PATH (scripts/setup installs busybox-static), or a file that is not
 * exactly the body (cat sends the whole file).
 */
export function zeroCopySender(body: FileBody, url: URL): string | undefined {
  if (url.protocol !== 'http:') return undefined
  const busybox = findOnPath('busybox')
  if (busybox === undefined) return undefined
  try {
    const stat = fstatSync(body.fd)
    return stat.isFile() && stat.size === body.size ? busybox : undefined
  } catch {
    return undefined
  }
}

/**
 * Sends `body` on `request` (whose headers say `Connection: close`) through `busybox cat`, then
 * ends the request; `fallback` sends it the buffered way if the child cannot start. Stops
 * (killing the child) when the request closes; a child that fails before the registry answered
 * fails the request.
 */
export function sendFileZeroCopy(
  busybox: string,
  body: FileBody,
  request: ClientRequest,
  idleMs: number,
  fallback: () => void,
): void {
  const send = new ZeroCopySend(busybox, body, request, idleMs, fallback)
  request.on('close', () => send.stop())
  // A registry accepts an upload only once it has read the whole body, and its answer can come in
  // before the child's exit is seen (or the request's close kills a child not yet reaped): the
  // answer, not the exit, reports the last bytes.
  request.once('response', (response) => {
    const status = response.statusCode ?? 0
    if (status >= 200 && status < 300) send.delivered()
  })
  request.flushHeaders()
  request.once('socket', (socket) => {
    // ClientRequest writes its head to the socket right after emitting 'socket'; the empty write
    // behind it calls back once the head has gone out, and only then may the child write.
    setImmediate(() => {
      const go = () => socket.write('', () => (request.destroyed ? send.stop() : send.start(socket)))
      if (socket.connecting) socket.once('connect', go)
      else go()
    })
  })
}

/** One body's child: started once the request's head is out, watched, stopped with the request. */
class ZeroCopySend {
  private child: ChildProcess | undefined
  private poll: NodeJS.Timeout | undefined
  private closed = false
  private reported = 0
  private stderr = ''

  constructor(
    private readonly busybox: string,
    private readonly body: FileBody,
    private readonly request: ClientRequest,
    private readonly idleMs: number,
    private readonly fallback: () => void,
  ) {}

  start(socket: Socket): void {
    const socketFd = descriptorOf(socket)
    let input: number
    try {
      if (socketFd === undefined) throw new Error('no descriptor')
      input = openSync(`/proc/self/fd/${this.body.fd}`, 'r') // its own offset, from 0
    } catch {
      this.handOver()
      return
    }
    let child: ChildProcess
    try {
      child = spawn(this.busybox, ['cat'], {stdio: [input, socketFd, 'pipe']})
    } finally {
      closeSync(input) // the child has its own copy
    }
    this.child = child
    child.stderr?.on('data', (chunk: Buffer) => {
      if (this.stderr.length < 1024) this.stderr += chunk.toString('utf8')
    })
    this.poll = setInterval(() => this.report(childInputPosition(child.pid), socket), PROGRESS_MS)
    this.poll.unref()
    child.on('error', () => {
      // Not started (busybox gone since zeroCopySender looked): nothing was sent yet.
      this.child = undefined
      clearInterval(this.poll)
      this.handOver()
    })
    child.on('exit', (code, signal) => this.exited(child, socket, code, signal))
  }

  /** The registry has the whole body: every byte is reported, whatever the child's state. */
  delivered(): void {
    this.report(this.body.size)
  }

  /** Kills the child if it still runs, and closes the file. */
  stop(): void {
    clearInterval(this.poll)
    const child = this.child
    if (child && child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    this.closeBody()
  }

  private exited(child: ChildProcess, socket: Socket, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.child !== child) return // it never started: the fallback sends the body
    clearInterval(this.poll)
    this.closeBody()
    if (this.request.destroyed) return
    if (code === 0) {
      this.report(this.body.size, socket)
      this.request.end()
      return
    }
    const why = this.stderr.trim().split('\n').at(-1) || (signal ? `killed by ${signal}` : `exit status ${code}`)
    this.request.destroy(new Error(`sending the blob failed: ${why}`))
  }

  private report(position: number | undefined, socket?: Socket): void {
    if (position === undefined || position <= this.reported) return
    this.body.onBytes?.(position - this.reported)
    this.reported = position
    socket?.setTimeout(this.idleMs) // the bytes moved: the connection is not idle
  }

  /** The buffered path sends the body instead, and closes the file when its last read is done. */
  private handOver(): void {
    this.closed = true
    this.fallback()
  }

  private closeBody(): void {
    if (this.closed) return
    this.closed = true
    this.body.close()
  }
}

/** The descriptor under a connected TCP socket: `_handle.fd`, set by libuv on Unix, not in Node's types. */
function descriptorOf(socket: Socket): number | undefined {
  const fd = (socket as Socket & {_handle?: {fd?: unknown}})._handle?.fd
  return typeof fd === 'number' && fd >= 0 ? fd : undefined
}

/** How far the child has read its stdin (the file), from /proc; undefined once it is gone. */
function childInputPosition(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined
  try {
    const match = /^pos:\s*(\d+)/m.exec(readFileSync(`/proc/${pid}/fdinfo/0`, 'utf8'))
    return match ? Number(match[1]) : undefined
  } catch {
    return undefined
  }
}
