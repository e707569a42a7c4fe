/**
 * Uploads of a file over plain HTTP go through `busybox cat` with sendfile(2)
 * (zero-copy-upload.ts). A node:http server stands in for the registry so that each way a
 * registry can take a body (whole, answering early, not reading, reading slowly) can be made to
 * happen; docker-registry takes the same path in registry.test.ts and bench/registry. A busybox
 * wrapper first on PATH logs each start of the child, so the tests know which path was taken.
 */
import {createHash, randomBytes} from 'node:crypto'
import {closeSync, fstatSync, openSync, readdirSync, readFileSync} from 'node:fs'
import {chmod, mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises'
import {createServer, type IncomingMessage, type Server, type ServerResponse} from 'node:http'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'
import {findOnPath} from '../../src/exec.js'
import {FileBody, sendOnce} from '../../src/registry/http.js'
import {waitFor} from '../helpers/wait.js'

const content = randomBytes(24 * 1024 * 1024) // more than loopback's socket buffers hold
const digest = createHash('sha256').update(content).digest('hex')
const realBusybox = findOnPath('busybox')

let dir: string
let file: string
let log: string
let server: Server
let base: string
const originalPath = process.env.PATH

/** The registry stand-in: /whole takes the body, /early answers 413 after its first chunk, /stall never reads, /slow reads 1 MiB per 60 ms. */
function handle(request: IncomingMessage, response: ServerResponse): void {
  const hash = createHash('sha256')
  let bytes = 0
  const answer = (status: number) =>
    response
      .writeHead(status, {'content-type': 'application/json'})
      .end(JSON.stringify({bytes, digest: hash.digest('hex'), connection: request.headers.connection}))
  if (request.url === '/stall') {
    request.pause()
    return
  }
  if (request.url === '/early') {
    request.once('data', () => {
      answer(413)
      request.socket.destroySoon()
    })
    return
  }
  let sinceBreak = 0
  request.on('data', (chunk: Buffer) => {
    bytes += chunk.length
    hash.update(chunk)
    sinceBreak += chunk.length
    if (request.url === '/slow' && sinceBreak >= 1024 * 1024) {
      sinceBreak = 0
      request.pause()
      setTimeout(() => request.resume(), 60)
    }
  })
  request.on('end', () => answer(201))
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'aegis-zero-copy-'))
  file = join(dir, 'blob')
  log = join(dir, 'busybox.log')
  await writeFile(file, content)
  await writeFile(log, '')
  // A wrapper that logs its arguments, then is the real busybox (its own process, the same fds).
  await writeFile(join(dir, 'busybox'), `#!/bin/sh\necho "$*" >> '${log}'\nexec '${realBusybox}' "$@"\n`)
  await chmod(join(dir, 'busybox'), 0o755)
  process.env.PATH = `${dir}:${originalPath}`
  server = createServer(handle)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  base = `http://127.0.0.1:${address.port}`
})

afterEach(() => {
  delete process.env.AEGIS_REGISTRY_IDLE_TIMEOUT
  process.env.PATH = `${dir}:${originalPath}`
})

afterAll(async () => {
  process.env.PATH = originalPath
  server.closeAllConnections()
  await new Promise((resolve) => server.close(resolve))
  await rm(dir, {recursive: true, force: true})
})

interface Upload {
  status: number
  answer: {bytes: number; digest: string; connection?: string}
  /** Bytes onBytes reported. */
  reported: number
  /** Bytes onBytes had reported when the registry's answer came in. */
  reportedAtAnswer: number
  /** Times the file's close was called. */
  closes: number
}

/** PUTs the file (through one descriptor, `fd` if given) to `path`. */
async function upload(path: string, fd?: number, from = file): Promise<Upload> {
  const descriptor = fd ?? openSync(from, 'r')
  const size = fstatSync(descriptor).size
  let reported = 0
  let closes = 0
  const body = new FileBody(
    descriptor,
    size,
    () => {
      closes++
      if (fd === undefined && closes === 1) closeSync(descriptor)
    },
    (bytes) => {
      reported += bytes
    },
  )
  const {response} = await sendOnce({
    method: 'PUT',
    url: new URL(path, base),
    headers: {'content-length': String(size)},
    body: () => body,
  })
  const reportedAtAnswer = reported
  const answer = await response.json<Upload['answer']>()
  await waitFor('the file to be closed', () => closes > 0, 3000, 20)
  return {status: response.status, answer, reported, reportedAtAnswer, closes}
}

/** This process's children running `busybox cat`. */
function catChildren(): number[] {
  return readdirSync('/proc')
    .filter((name) => /^\d+$/.test(name))
    .filter((pid) => {
      try {
        const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
        const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
        return ppid === process.pid && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('cat')
      } catch {
        return false // gone meanwhile
      }
    })
    .map(Number)
}

const catStarts = () =>
  readFileSync(log, 'utf8')
    .split('\n')
    .filter((line) => line === 'cat').length

describe.skipIf(realBusybox === undefined)('uploads through sendfile (busybox is installed by scripts/setup)', () => {
  it('sends a file whole through busybox cat, with Connection: close, reporting every byte', async () => {
    const before = catStarts()
    const result = await upload('/whole')
    expect(catStarts()).toBe(before + 1)
    expect(result.status).toBe(201)
    expect(result.answer).toEqual({bytes: content.length, digest, connection: 'close'})
    expect(result.reported).toBe(content.length)
    expect(result.closes).toBe(1)
  })

  it('sends the whole file again on a second request over the same descriptor (a retry)', async () => {
    const fd = openSync(file, 'r')
    try {
      for (const _ of [1, 2]) expect((await upload('/whole', fd)).answer.digest).toBe(digest)
    } finally {
      closeSync(fd)
    }
  })

  it('stops the child when the registry answers before the body is in', async () => {
    const result = await upload('/early')
    expect(result.status).toBe(413)
    expect(result.answer.bytes).toBe(0)
    await waitFor('busybox cat to end', () => catChildren().length === 0, 3000, 20)
  })

  it('gives up a registry that stops reading as idle, and kills the child', async () => {
    process.env.AEGIS_REGISTRY_IDLE_TIMEOUT = '1'
    const started = Date.now()
    await expect(upload('/stall')).rejects.toThrow('no data for 1 s')
    expect(Date.now() - started).toBeLessThan(10_000)
    await waitFor('busybox cat to end', () => catChildren().length === 0, 3000, 20)
  })

  it('keeps a slow registry that goes on reading past the idle timeout', async () => {
    // 64 MiB at 1 MiB per 60 ms: each of busybox's 16 MiB steps takes ~1 s, the whole ~4 s.
    const large = join(dir, 'large')
    const bytes = Buffer.concat([content, content, content.subarray(0, 16 * 1024 * 1024)])
    await writeFile(large, bytes)
    process.env.AEGIS_REGISTRY_IDLE_TIMEOUT = '3'
    const started = Date.now()
    const result = await upload('/slow', undefined, large)
    expect(Date.now() - started).toBeGreaterThan(3000) // longer than the idle timeout
    expect(result.answer).toMatchObject({bytes: bytes.length, digest: createHash('sha256').update(bytes).digest('hex')})
    expect(result.reported).toBe(bytes.length)
  })

  it('has reported every byte by the time the answer is in, though the child is seen to exit only later', async () => {
    // A sender that lingers once cat is done: the registry answers first, and the request's close
    // then kills the sender, so only the answer can report the last bytes (the exit never does).
    const lingering = join(dir, 'lingering')
    await mkdir(lingering, {recursive: true})
    await writeFile(join(lingering, 'busybox'), `#!/bin/sh\n'${realBusybox}' "$@"\nexec sleep 30\n`)
    await chmod(join(lingering, 'busybox'), 0o755)
    process.env.PATH = `${lingering}:${originalPath}`
    const result = await upload('/whole')
    expect(result.answer).toEqual({bytes: content.length, digest, connection: 'close'})
    expect(result.reportedAtAnswer).toBe(content.length)
    expect(result.reported).toBe(content.length)
  })

  it('takes the buffered path, keeping the connection, when busybox is not on PATH', async () => {
    process.env.PATH = '/nonexistent'
    const before = catStarts()
    const result = await upload('/whole')
    expect(catStarts()).toBe(before)
    expect(result.answer).toEqual({bytes: content.length, digest, connection: 'keep-alive'})
    expect(result.reported).toBe(content.length)
  })
})
