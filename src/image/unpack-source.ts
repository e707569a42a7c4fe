/**
 * A layer blob as a plain tar stream: gzip, zstd or uncompressed, told apart by magic bytes
 * (the media type of an untrusted manifest is not trusted to say which).
 */
import {spawn} from 'node:child_process'
import {Duplex, pipeline, Readable, type Transform, type TransformOptions} from 'node:stream'
import * as zlib from 'node:zlib'

import {AegisError, isAegisError, messageOf} from '../errors.js'

export type LayerEncoding = 'gzip' | 'zstd' | 'tar'

const GZIP_MAGIC = [0x1f, 0x8b]
const ZSTD_MAGIC = [0x28, 0xb5, 0x2f, 0xfd]
/**
 * Decompressed bytes per chunk. zlib's default, 16 KiB, made every 16 KiB a threadpool round
 * trip and a pass through the tar parser: twice the CPU of inflating itself.
 */
const CHUNK_BYTES = 256 * 1024
/** How far decompression (on the threadpool) may run ahead of the file writing that reads it. */
const READ_AHEAD_BYTES = 8 * 1024 * 1024

export interface TarSource {
  encoding: LayerEncoding
  /** The tar's bytes. Iterating throws an AegisError when the blob does not decompress. */
  tar: AsyncIterable<Buffer>
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
  const encoding: LayerEncoding = startsWith(start, GZIP_MAGIC)
    ? 'gzip'
    : startsWith(start, ZSTD_MAGIC)
      ? 'zstd'
      : 'tar'
  const whole = Readable.from(
    (async function* () {
      yield start
      if (exhausted) return
      for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value
    })(),
    {objectMode: false},
  )
  if (encoding === 'tar') return {encoding, tar: whole}
  const options: DecoderOptions = {chunkSize: CHUNK_BYTES, highWaterMark: READ_AHEAD_BYTES}
  const decoder = encoding === 'gzip' ? zlib.createGunzip(options) : zstdDecoder(options)
  // Errors reach the consumer through `decoder`; stopping early destroys `whole` too.
  pipeline(whole, decoder, () => {})
  return {encoding, tar: decompressed(decoder, encoding)}
}

async function* decompressed(decoder: Duplex, encoding: LayerEncoding): AsyncGenerator<Buffer> {
  try {
    yield* decoder as AsyncIterable<Buffer>
  } catch (error) {
    if (isAegisError(error)) throw error
    throw new AegisError(`layer is not valid ${encoding}: ${messageOf(error)}`, {cause: error})
  }
}

function startsWith(buffer: Buffer, magic: number[]): boolean {
  return magic.every((byte, i) => buffer[i] === byte)
}

/** zlib's streams take stream options too (its types leave them out). */
type DecoderOptions = zlib.ZlibOptions & TransformOptions

/** Node's zstd when it has one (22.15+), else the zstd program. */
function zstdDecoder(options: DecoderOptions): Duplex {
  // @types/node 20 does not declare zstd; newer Node versions have it at runtime.
  const api = zlib as unknown as {createZstdDecompress?: (options: DecoderOptions) => Transform}
  if (typeof api.createZstdDecompress === 'function') return api.createZstdDecompress(options)
  const child = spawn('zstd', ['-d', '-q', '-c'], {stdio: ['pipe', 'pipe', 'pipe']})
  let stderr = ''
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()))
  const duplex = Duplex.from({writable: child.stdin, readable: child.stdout})
  child.on('close', (code) => {
    if (code !== 0) duplex.destroy(new Error(`zstd -d exited ${code}: ${stderr.trim()}`))
  })
  child.on('error', (error) => {
    duplex.destroy(
      new AegisError('zstd layers need the zstd program on this Node.js version', {
        hint: 'Install zstd (apt-get install zstd).',
        cause: error,
      }),
    )
  })
  return duplex
}
