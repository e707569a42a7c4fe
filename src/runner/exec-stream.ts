/**
 * `aegis-kit exec` through the instance's supervisor: the supervisor side (serveExec) and the
 * client (openExec), over the supervisor API's unix socket.
 *
 * The request: `POST /v1/exec` with `Connection: Upgrade`, `Upgrade: aegis-exec` and the exec
 * request as base64url JSON in the `aegis-exec-request` header ({command, env?, workdir?, user?,
 * tty?}, lifecycle's ExecRequest). The supervisor wakes a paused VM and starts the process; then it
 * answers `101 Switching Protocols` and the socket carries frames both ways, or it answers a plain
 * HTTP error with a JSON body {error} and closes.
 *
 * A frame: 1 byte type, 4 bytes big-endian payload length, the payload.
 *   client -> supervisor   0x01 stdin bytes   0x02 stdin EOF (empty)
 *                          0x03 resize (2 x uint16 BE: rows, cols)   0x04 signal (ASCII name, "INT")
 *   supervisor -> client   0x11 stdout bytes  0x12 stderr bytes
 *                          0x13 exit (int32 BE exit code), last    0x14 error (UTF-8 message), last
 * The client closing the socket before the exit frame kills the process group. Nothing of the
 * stream is logged or written anywhere by the supervisor: exec output goes only to the user.
 */
import http from 'node:http'
import type {Duplex, Readable, Writable} from 'node:stream'
import type {ExecRequest, ExecSession} from '../guest/index.js'
import {AegisError, messageOf} from '../errors.js'

export const EXEC_ROUTE = '/v1/exec'
export const EXEC_HEADER = 'aegis-exec-request'
export const Frame = {
  stdin: 0x01,
  stdinEnd: 0x02,
  resize: 0x03,
  signal: 0x04,
  stdout: 0x11,
  stderr: 0x12,
  exit: 0x13,
  error: 0x14,
} as const

export function frame(type: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const head = Buffer.alloc(5)
  head.writeUInt8(type, 0)
  head.writeUInt32BE(payload.length, 1)
  return Buffer.concat([head, payload])
}

const MAX_FRAME = 16 * 1024 * 1024

/** Splits a byte stream into frames; calls `onFrame` for each whole one. */
export function frameReader(onFrame: (type: number, payload: Buffer) => void): (chunk: Buffer) => void {
  let pending: Buffer = Buffer.alloc(0)
  return (chunk) => {
    pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk])
    while (pending.length >= 5) {
      const length = pending.readUInt32BE(1)
      if (length > MAX_FRAME) throw new Error(`exec frame of ${length} bytes`)
      if (pending.length < 5 + length) break
      const type = pending.readUInt8(0)
      const payload = pending.subarray(5, 5 + length)
      pending = pending.subarray(5 + length)
      onFrame(type, payload)
    }
  }
}

/** The request as checked from the header: the shapes ExecRequest allows, nothing else. */
export function parseExecRequest(header: string | string[] | undefined): ExecRequest {
  if (typeof header !== 'string') throw new Error(`no ${EXEC_HEADER} header`)
  const value = JSON.parse(Buffer.from(header, 'base64url').toString('utf8')) as Record<string, unknown>
  const command = value.command
  if (!Array.isArray(command) || command.length === 0 || !command.every((arg) => typeof arg === 'string'))
    throw new Error('command must be a non-empty array of strings')
  const request: ExecRequest = {command: command as string[]}
  if (value.env !== undefined) {
    if (typeof value.env !== 'object' || value.env === null) throw new Error('env must be an object')
    const env: Record<string, string> = {}
    for (const [name, v] of Object.entries(value.env)) {
      if (typeof v !== 'string') throw new Error(`env ${name} must be a string`)
      env[name] = v
    }
    request.env = env
  }
  if (value.workdir !== undefined) {
    if (typeof value.workdir !== 'string') throw new Error('workdir must be a string')
    request.workdir = value.workdir
  }
  const isId = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 0 && n < 2 ** 32
  if (value.user !== undefined) {
    const user = value.user as {uid?: unknown; gid?: unknown}
    if (!isId(user.uid) || !isId(user.gid)) throw new Error('user must be {uid, gid}, whole numbers')
    request.user = {uid: user.uid, gid: user.gid}
  }
  if (value.tty !== undefined) {
    const tty = value.tty as {rows?: unknown; cols?: unknown}
    const size = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n > 0 && n < 65_536
    if (!size(tty.rows) || !size(tty.cols)) throw new Error('tty must be {rows, cols}')
    request.tty = {rows: tty.rows, cols: tty.cols}
  }
  return request
}

function httpError(socket: Duplex, status: number, message: string): void {
  const body = `${JSON.stringify({error: message})}\n`
  socket.end(
    `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\ncontent-type: application/json\r\n` +
      `content-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`,
  )
}

/** The supervisor side: an upgrade request on the API socket, served until the process exits. */
export async function serveExec(
  start: (request: ExecRequest) => Promise<ExecSession>,
  request: http.IncomingMessage,
  socket: Duplex,
  head: Buffer,
): Promise<void> {
  const session = await startSession(start, request, socket)
  if (session === undefined) return
  socket.write('HTTP/1.1 101 Switching Protocols\r\nupgrade: aegis-exec\r\nconnection: Upgrade\r\n\r\n')
  await relaySession(session, socket, head)
}

/** The checked request's process, started; undefined once the client has been answered with an HTTP error. */
async function startSession(
  start: (request: ExecRequest) => Promise<ExecSession>,
  request: http.IncomingMessage,
  socket: Duplex,
): Promise<ExecSession | undefined> {
  if (request.method !== 'POST' || request.url !== EXEC_ROUTE || request.headers.upgrade !== 'aegis-exec') {
    httpError(socket, 404, `no route ${request.method} ${request.url} (upgrade)`)
    return undefined
  }
  let execRequest: ExecRequest
  try {
    execRequest = parseExecRequest(request.headers[EXEC_HEADER])
  } catch (error) {
    httpError(socket, 400, messageOf(error))
    return undefined
  }
  try {
    return await start(execRequest)
  } catch (error) {
    httpError(socket, 500, messageOf(error))
    return undefined
  }
}

/** Frames both ways until the process exits (its exit or error frame, last) or the client goes. */
async function relaySession(session: ExecSession, socket: Duplex, head: Buffer): Promise<void> {
  let finished = false
  const outputs: Readable[] = [session.stdout, session.stderr]
  const send = (type: number, payload: Buffer): void => {
    if (finished || socket.destroyed) return
    if (!socket.write(frame(type, payload))) {
      for (const output of outputs) output.pause()
      socket.once('drain', () => {
        for (const output of outputs) output.resume()
      })
    }
  }
  session.stdout.on('data', (chunk: Buffer) => send(Frame.stdout, Buffer.from(chunk)))
  session.stderr.on('data', (chunk: Buffer) => send(Frame.stderr, Buffer.from(chunk)))
  const read = clientFrameReader(session, socket)
  const onData = (chunk: Buffer): void => {
    try {
      read(chunk)
    } catch {
      socket.destroy()
    }
  }
  if (head.length > 0) onData(head)
  socket.on('data', onData)
  socket.on('error', () => {})
  socket.on('close', () => {
    if (!finished) {
      finished = true
      session.close()
    }
  })
  try {
    const {exitCode} = await session.exit
    const code = Buffer.alloc(4)
    code.writeInt32BE(exitCode, 0)
    send(Frame.exit, code)
  } catch (error) {
    send(Frame.error, Buffer.from(messageOf(error), 'utf8'))
  }
  finished = true
  socket.end()
}

/** The client's frames applied to the process: stdin (the socket paused while stdin is full), resize, signal. */
function clientFrameReader(session: ExecSession, socket: Duplex): (chunk: Buffer) => void {
  const stdin: Writable = session.stdin
  stdin.on('error', () => {}) // a process that exits before reading its stdin
  return frameReader((type, payload) => {
    if (type === Frame.stdin) {
      if (!stdin.write(payload)) {
        socket.pause()
        stdin.once('drain', () => socket.resume())
      }
    } else if (type === Frame.stdinEnd) stdin.end()
    else if (type === Frame.resize && payload.length === 4)
      session.resize(payload.readUInt16BE(0), payload.readUInt16BE(2))
    else if (type === Frame.signal) session.signal(payload.toString('ascii'))
  })
}

export interface ExecClient {
  /** Bytes for the process's stdin. */
  write(data: Buffer): void
  endStdin(): void
  resize(rows: number, cols: number): void
  signal(name: string): void
  /** The exit code once the process has exited and all its output has been delivered. */
  readonly exit: Promise<number>
  close(): void
}

/** Where the client hands the process's output, as it arrives. */
export interface ExecOutput {
  stdout: (data: Buffer) => void
  stderr: (data: Buffer) => void
}

/** The client: opens an exec session through the supervisor at `socketPath`. */
export function openExec(
  socketPath: string,
  name: string,
  request: ExecRequest,
  output: ExecOutput,
): Promise<ExecClient> {
  return new Promise((resolve, reject) => {
    const header = Buffer.from(JSON.stringify(request), 'utf8').toString('base64url')
    const http1 = http.request({
      socketPath,
      method: 'POST',
      path: EXEC_ROUTE,
      headers: {connection: 'Upgrade', upgrade: 'aegis-exec', [EXEC_HEADER]: header},
    })
    http1.once('error', (error) =>
      reject(
        new AegisError(`cannot reach the supervisor of ${name}: ${messageOf(error)}`, {
          hint: `is it running? aegis-kit ps; its log: aegis-kit logs ${name}`,
        }),
      ),
    )
    http1.once('response', (response) => rejectRefusal(name, response, reject))
    http1.once('upgrade', (_response, socket, head) => resolve(execClient(name, socket, head, output)))
    http1.end()
  })
}

/** A plain HTTP answer instead of the upgrade: the supervisor's {error}, read whole, as the rejection. */
function rejectRefusal(name: string, response: http.IncomingMessage, reject: (error: AegisError) => void): void {
  let text = ''
  response.setEncoding('utf8').on('data', (chunk: string) => (text += chunk))
  response.on('end', () => {
    let message = `HTTP ${response.statusCode}`
    try {
      message = (JSON.parse(text) as {error?: string}).error ?? message
    } catch {}
    reject(new AegisError(`${name}: ${message}`))
  })
}

/** The session on the upgraded socket: frames out for the process, its output and exit read as they come. */
function execClient(name: string, socket: Duplex, head: Buffer, output: ExecOutput): ExecClient {
  const exit = execExit(name, socket, head, output)
  const send = (type: number, payload?: Buffer): void => {
    if (!socket.destroyed) socket.write(frame(type, payload))
  }
  return {
    write: (data) => send(Frame.stdin, data),
    endStdin: () => send(Frame.stdinEnd),
    resize: (rows, cols) => {
      const size = Buffer.alloc(4)
      size.writeUInt16BE(Math.min(Math.max(rows, 1), 65_535), 0)
      size.writeUInt16BE(Math.min(Math.max(cols, 1), 65_535), 2)
      send(Frame.resize, size)
    },
    signal: (signal) => send(Frame.signal, Buffer.from(signal, 'ascii')),
    exit,
    close: () => socket.destroy(),
  }
}

/** The exit code from the supervisor's frames, after the output before it has been handed to `output`. */
function execExit(name: string, socket: Duplex, head: Buffer, output: ExecOutput): Promise<number> {
  let settled = false
  return new Promise<number>((resolveExit, rejectExit) => {
    const read = frameReader((type, payload) => {
      if (type === Frame.stdout) output.stdout(payload)
      else if (type === Frame.stderr) output.stderr(payload)
      else if (type === Frame.exit) {
        settled = true
        resolveExit(payload.readInt32BE(0))
      } else if (type === Frame.error) {
        settled = true
        rejectExit(new AegisError(`${name}: ${payload.toString('utf8')}`))
      }
    })
    if (head.length > 0) read(head)
    socket.on('data', read)
    socket.on('error', () => {})
    socket.on('close', () => {
      if (!settled) rejectExit(new AegisError(`${name}: the supervisor closed the exec session (did it stop?)`))
    })
  })
}
