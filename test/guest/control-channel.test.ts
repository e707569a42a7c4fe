/**
 * The host half of the control channel against a scripted harness on a unix socket: the frame
 * codec, the spec first, exec sessions, credit, the tunnel as a Duplex an HTTP server serves, an
 * old harness's report lines. The real harness is exercised in vm.test.ts.
 */
import http from 'node:http'
import {mkdtempSync, rmSync} from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

import {afterAll, describe, expect, it} from 'vitest'

import {
  ControlChannel,
  encodeExecRequest,
  encodeFrame,
  FRAME_TYPE,
  FrameDecoder,
  STREAM_WINDOW,
  type Frame,
} from '../../src/guest/control-channel.js'

const dir = mkdtempSync(path.join(os.tmpdir(), 'aegis-ctl-test-'))
afterAll(() => rmSync(dir, {recursive: true, force: true}))
let socketCount = 0

/** The guest's end: what the host sent (the spec's bytes, then frames) and a way to answer. */
class FakeHarness {
  raw = Buffer.alloc(0)
  frames: Frame[] = []
  private decoder = new FrameDecoder()
  private specLength: number | undefined
  constructor(readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => this.receive(chunk))
  }
  private receive(chunk: Buffer): void {
    this.raw = Buffer.concat([this.raw, chunk])
    if (this.specLength === undefined) {
      const newline = this.raw.indexOf(10)
      if (newline < 0) return
      const size = Number(/^AEGIS-SPEC\/1 (\d+)$/.exec(this.raw.toString('ascii', 0, newline))![1])
      if (this.raw.length < newline + 1 + size) return
      this.specLength = newline + 1 + size
      chunk = this.raw.subarray(this.specLength)
    }
    try {
      this.frames.push(...this.decoder.push(chunk))
    } catch {
      // An old harness's host sends text lines: `raw` has them.
    }
  }
  get spec(): string | undefined {
    return this.specLength === undefined ? undefined : this.raw.toString('utf8', 0, this.specLength)
  }
  send(type: number, stream: number, payload?: Buffer | string): void {
    this.socket.write(encodeFrame(type, stream, typeof payload === 'string' ? Buffer.from(payload) : payload))
  }
  async next(predicate: (frame: Frame) => boolean, timeoutMs = 5000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const index = this.frames.findIndex(predicate)
      if (index >= 0) return this.frames.splice(index, 1)[0]!
      if (Date.now() > deadline) throw new Error('no such frame')
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  }
}

async function connected(spec = Buffer.from('AEGIS-SPEC/1 6\narg x\0')) {
  const socketPath = path.join(dir, `ctl-${socketCount++}.sock`)
  const server = net.createServer()
  await new Promise<void>((resolve) => server.listen(socketPath, resolve))
  const reports: string[] = []
  const channel = new ControlChannel({onReport: (line) => reports.push(line)})
  server.on('connection', (socket) => channel.attach(socket, Promise.resolve(spec)))
  const guestSocket = net.connect(socketPath)
  await new Promise((resolve) => guestSocket.once('connect', resolve))
  const guest = new FakeHarness(guestSocket)
  return {channel, guest, reports, close: () => new Promise((resolve) => server.close(resolve))}
}

const u32 = (value: number) => {
  const bytes = Buffer.alloc(4)
  bytes.writeInt32BE(value)
  return bytes
}

async function readAll(stream: NodeJS.ReadableStream): Promise<string> {
  let text = ''
  for await (const chunk of stream) text += chunk.toString()
  return text
}

describe('frames', () => {
  it('round-trip through the decoder in any split, and a bad length is refused', () => {
    const frames = [
      encodeFrame(FRAME_TYPE.EVENT, 0, Buffer.from('AEGIS_READY')),
      encodeFrame(FRAME_TYPE.STDOUT, 2, Buffer.alloc(65536, 7)),
      encodeFrame(FRAME_TYPE.CLOSE, 5),
    ]
    const bytes = Buffer.concat(frames)
    expect(bytes[0]).toBe(0) // what tells a framed harness from an old one's "AEGIS_..." lines
    const decoder = new FrameDecoder()
    const got: Frame[] = []
    for (let at = 0; at < bytes.length; at += 1000) got.push(...decoder.push(bytes.subarray(at, at + 1000)))
    expect(got.map((frame) => [frame.type, frame.stream, frame.payload.length])).toEqual([
      [FRAME_TYPE.EVENT, 0, 11],
      [FRAME_TYPE.STDOUT, 2, 65536],
      [FRAME_TYPE.CLOSE, 5, 0],
    ])
    expect(got[0]!.payload.toString()).toBe('AEGIS_READY')
    expect(() => new FrameDecoder().push(Buffer.from([0, 2, 0, 0, 1, 0, 0, 0, 0]))).toThrow(/bad frame length/)
    expect(() => encodeFrame(FRAME_TYPE.DATA, 1, Buffer.alloc(65537))).toThrow()
  })

  it('encodes an exec request as records and refuses what the harness could not represent', () => {
    const bytes = encodeExecRequest({
      command: ['sh', '-c', 'echo a b'],
      env: {X: '1'},
      workdir: '/tmp',
      user: {uid: 1000, gid: 100, groups: [27]},
      tty: {rows: 30, cols: 100},
    })
    expect(bytes.toString('utf8').split('\0').slice(0, -1)).toEqual([
      'arg sh',
      'arg -c',
      'arg echo a b',
      'env X=1',
      'workdir /tmp',
      'user 1000:100',
      'group 27',
      'tty 30:100',
    ])
    expect(() => encodeExecRequest({command: []})).toThrow(/command/)
    expect(() => encodeExecRequest({command: ['a\0b']})).toThrow(/NUL/)
    expect(() => encodeExecRequest({command: ['x'], env: {'A-B': '1'}})).toThrow(/variable name/)
  })
})

describe('ControlChannel', () => {
  it('sends the spec first, holds frames until the harness speaks frames, and runs an exec session', async () => {
    const {channel, guest, reports, close} = await connected()
    const session = channel.exec({command: ['id']})
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(guest.spec).toBe('AEGIS-SPEC/1 6\narg x\0')
    expect(guest.frames).toEqual([]) // the harness has not said it speaks frames yet
    guest.send(FRAME_TYPE.EVENT, 0, 'AEGIS_READY')
    const open = await guest.next((frame) => frame.type === FRAME_TYPE.EXEC_OPEN)
    expect(open.stream % 2).toBe(0)
    expect(open.payload.toString()).toBe('arg id\0')
    expect(reports).toEqual(['AEGIS_READY'])

    guest.send(FRAME_TYPE.STDOUT, open.stream, 'uid=0\n')
    guest.send(FRAME_TYPE.STDERR, open.stream, 'warning\n')
    guest.send(FRAME_TYPE.STDOUT, open.stream)
    guest.send(FRAME_TYPE.STDERR, open.stream)
    guest.send(FRAME_TYPE.EXIT, open.stream, u32(3))
    const [stdout, stderr, exit] = await Promise.all([readAll(session.stdout), readAll(session.stderr), session.exit])
    expect({stdout, stderr, exit}).toEqual({stdout: 'uid=0\n', stderr: 'warning\n', exit: {exitCode: 3}})
    // What was read is acknowledged, so the guest may send more.
    const window = await guest.next((frame) => frame.type === FRAME_TYPE.WINDOW && frame.stream === open.stream)
    expect(window.payload.readUInt32BE(0)).toBeGreaterThan(0)

    const second = channel.exec({command: ['cat'], tty: {rows: 5, cols: 6}})
    const secondOpen = await guest.next((frame) => frame.type === FRAME_TYPE.EXEC_OPEN)
    expect(secondOpen.stream).not.toBe(open.stream)
    second.resize(40, 120)
    second.signal('SIGINT')
    const resize = await guest.next((frame) => frame.type === FRAME_TYPE.RESIZE)
    expect([resize.payload.readUInt16BE(0), resize.payload.readUInt16BE(2)]).toEqual([40, 120])
    expect((await guest.next((frame) => frame.type === FRAME_TYPE.SIGNAL)).payload.toString()).toBe('INT')
    second.close()
    expect((await guest.next((frame) => frame.type === FRAME_TYPE.CLOSE)).stream).toBe(secondOpen.stream)
    await expect(second.exit).rejects.toThrow(/closed/)

    const third = channel.exec({command: ['sleep', '9']})
    await guest.next((frame) => frame.type === FRAME_TYPE.EXEC_OPEN)
    guest.socket.destroy() // QEMU gone
    await expect(third.exit).rejects.toThrow(/VM stopped/)
    await close()
  })

  it('sends stdin within its credit only, and more as the guest acknowledges it', async () => {
    const {channel, guest, close} = await connected()
    guest.send(FRAME_TYPE.EVENT, 0, 'AEGIS_READY')
    const session = channel.exec({command: ['cat']})
    const open = await guest.next((frame) => frame.type === FRAME_TYPE.EXEC_OPEN)
    let written = false
    session.stdin.write(Buffer.alloc(STREAM_WINDOW + 100_000, 1), () => {
      written = true
    })
    session.stdin.end()
    await new Promise((resolve) => setTimeout(resolve, 200))
    const sent = () =>
      guest.frames
        .filter((frame) => frame.type === FRAME_TYPE.STDIN && frame.stream === open.stream)
        .reduce((sum, frame) => sum + frame.payload.length, 0)
    expect(sent()).toBe(STREAM_WINDOW)
    expect(written).toBe(false)
    guest.send(FRAME_TYPE.WINDOW, open.stream, u32(STREAM_WINDOW))
    await guest.next((frame) => frame.type === FRAME_TYPE.STDIN && frame.payload.length === 0) // EOF, after the rest
    expect(sent()).toBe(STREAM_WINDOW + 100_000)
    expect(written).toBe(true)
    guest.socket.destroy()
    await expect(session.exit).rejects.toThrow()
    await close()
  })

  it('hands each tunnel connection to the handler as a Duplex an HTTP server can serve', async () => {
    const {channel, guest, close} = await connected()
    guest.send(FRAME_TYPE.EVENT, 0, 'AEGIS_READY')
    const server = http.createServer((request, response) => {
      let body = ''
      request.on('data', (chunk) => {
        body += chunk
      })
      request.on('end', () => response.end(JSON.stringify({method: request.method, url: request.url, body})))
    })
    channel.onTunnel((stream) => server.emit('connection', stream))
    guest.send(FRAME_TYPE.TUNNEL_OPEN, 1, Buffer.from([0x1e, 0x61]))
    guest.send(
      FRAME_TYPE.DATA,
      1,
      'POST /v1/self/keepalive HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 13\r\n\r\n{"ttl_ms":10}',
    )
    // Connection: close: the server ends its side after the response (node:http ends the
    // connection at once on a client's half-close, so the client waits for the answer first).
    await guest.next((frame) => frame.type === FRAME_TYPE.DATA && frame.stream === 1 && frame.payload.length === 0)
    guest.send(FRAME_TYPE.DATA, 1)
    const response = guest.frames
      .filter((frame) => frame.type === FRAME_TYPE.DATA && frame.stream === 1)
      .map((frame) => frame.payload.toString())
      .join('')
    expect(response).toMatch(/^HTTP\/1.1 200 OK/)
    expect(response).toContain('{"method":"POST","url":"/v1/self/keepalive","body":"{\\"ttl_ms\\":10}"}')

    // Without a handler... the last one set wins; a reset from the guest destroys the Duplex.
    let destroyed = false
    channel.onTunnel((stream) => stream.on('close', () => (destroyed = true)))
    guest.send(FRAME_TYPE.TUNNEL_OPEN, 3, Buffer.from([0x1e, 0x61]))
    guest.send(FRAME_TYPE.CLOSE, 3)
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(destroyed).toBe(true)
    guest.socket.destroy()
    await close()
  })

  it('refuses a tunnel connection when nobody handles them', async () => {
    const {guest, close} = await connected()
    guest.send(FRAME_TYPE.EVENT, 0, 'AEGIS_READY')
    guest.send(FRAME_TYPE.TUNNEL_OPEN, 1, Buffer.from([0x1e, 0x61]))
    expect((await guest.next((frame) => frame.type === FRAME_TYPE.CLOSE)).stream).toBe(1)
    guest.socket.destroy()
    await close()
  })

  it("reads an old harness's report lines, stops it with a text line, and says it cannot exec", async () => {
    const {channel, guest, reports, close} = await connected()
    const session = channel.exec({command: ['true']})
    guest.socket.write('AEGIS_READY\nAEGIS_STA')
    guest.socket.write('RTED\n')
    await expect(session.exit).rejects.toThrow(/predates the control channel/)
    channel.signalWorkload('TERM')
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(reports).toEqual(['AEGIS_READY', 'AEGIS_STARTED'])
    expect(guest.raw.toString('utf8')).toBe('AEGIS-SPEC/1 6\narg x\0signal TERM\n')
    guest.socket.destroy()
    await close()
  })
})
