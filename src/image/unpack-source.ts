/**
 * A layer blob as a plain tar stream: gzip, zstd or uncompressed, told apart by magic bytes
 * (the media type of an untrusted manifest is not trusted to say which).
 */
import {spawn} from 'node:child_process'
import {Duplex, Readable, Transform, type TransformCallback} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import * as zlib from 'node:zlib'

import {AegisError} from '../errors.js'

export type LayerEncoding = 'gzip' | 'zstd' | 'tar'

const GZIP_MAGIC = [0x1f, 0x8b]
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd]

export interface TarSource {
  encoding: LayerEncoding
  tar: Readable
  /** Settles when decompression has finished (or failed). */
  finished: Promise<void>
}

export async function openTarSource(blob: Readable): Promise<TarSource> {
  const iterator = blob[Symbol.asyncIterator]() as AsyncIterator<Buffer>
  const head: Buffer[] = []
  let headLength = 0
  let exhausted = false
  while (headLength < 4) {
    const next = await iterator.next()
    if (next.done) {
      exhausted = true
      break
    }
    const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value)
    head.push(chunk)
    headLength += chunk.length
  }
  const start = Buffer.concat(head)
  const encoding: LayerEncoding = startsWith(start, GZIP_MAGIC) ? 'gzip' : startsWith(start, ZSTD_MAGIC) ? 'zstd' : 'tar'
  const whole = Readable.from(
    (async function* () {
      yield start
      if (exhausted) return
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value
    })(),
    {objectMode: false},
  )
  if (encoding === 'tar') return {encoding, tar: whole, finished: Promise.resolve()}
  const decoder = encoding === 'gzip' ? zlib.createGunzip() : zstdDecoder()
  const tar = new Transform({transform: (chunk: Buffer, _e, done: TransformCallback) => done(null, chunk)})
  const finished = pipeline(whole, decoder, tar).catch((error: unknown) => {
    const wrapped = new AegisError(`layer is not valid ${encoding}: ${error instanceof Error ? error.message : String(error)}`, {cause: error})
    tar.destroy(wrapped)
    throw wrapped
  })
  finished.catch(() => {}) // the consumer sees the error through `tar`
  return {encoding, tar, finished}
}

function startsWith(buffer: Buffer, magic: number[]): boolean {
  return magic.every((byte, i) => buffer[i] === byte)
}

/** Node's zstd when it has one (22.15+), else the zstd program. */
function zstdDecoder(): Duplex {
  // @types/node 20 does not declare zstd; newer Node versions have it at runtime.
  const api = zlib as unknown as {createZstdDecompress?: () => Transform}
  if (typeof api.createZstdDecompress === 'function') return api.createZstdDecompress()
  const child = spawn('zstd', ['-d', '-q', '-c'], {stdio: ['pipe', 'pipe', 'pipe']})
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  const duplex = Duplex.from({writable: child.stdin, readable: child.stdout})
  child.on('close', (code) => {
    if (code !== 0) duplex.destroy(new Error(`zstd -d exited ${code}: ${stderr.trim()}`))
  })
  child.on('error', (error) => {
    duplex.destroy(new AegisError('zstd layers need the zstd program on this Node.js version', {
      hint: 'Install zstd (apt-get install zstd).',
      cause: error,
    }))
  })
  return duplex
}
