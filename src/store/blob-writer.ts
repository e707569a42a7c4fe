/**
 * The one way content enters the store: streamed into a temp file under `.tmp/`, hashed and
 * counted on the way (here, or by a pull's direct download through `writeBlobWith`),
 * fsync'd, and renamed into `blobs/sha256/<hex>` only when size and digest match. A crash leaves at most a temp file, which prune removes once its process is gone. The
 * rename is made durable by the next index.json update (see `updateIndex`), which syncs
 * `blobs/sha256/` once rather than once per blob.
 */
import {createHash} from 'node:crypto'
import {type FileHandle, mkdir, open, rename, unlink, utimes} from 'node:fs/promises'
import {join} from 'node:path'
import type {Readable} from 'node:stream'
import {finished} from 'node:stream/promises'
import {AegisError, messageOf} from '../errors.js'
import type {Descriptor} from '../oci/types.js'
import {sha256Hex, shortDigest} from '../oci/digest.js'
import {statIfExists, tempFileName} from '../fs-util.js'
import type {StorePaths} from './paths.js'

export type BlobWriteResult = 'written' | 'already-present'

/** Chunks are gathered up to this size and written with one writev. */
const WRITE_BATCH_BYTES = 1024 * 1024

/** `onBytes` hears of every chunk read (progress); it is not called for content already stored. */
export async function writeBlob(
  paths: StorePaths,
  desc: Pick<Descriptor, 'digest' | 'size'>,
  content: Readable | Buffer,
  onBytes?: (bytes: number) => void,
): Promise<BlobWriteResult> {
  // Never 'not-filled': streamToFile always reports what it wrote.
  return (await writeBlobWith(
    paths,
    desc,
    (tempPath) => streamToFile(tempPath, desc, content, onBytes),
    () => drain(content),
  )) as BlobWriteResult
}

/**
 * The store's side of every write: `fill` writes (and fsyncs) the temp file and reports the size
 * and digest it measured, here or in a pull's direct download; the blob is renamed into place only when
 * both match `desc`, and the temp file is removed on any failure. `fill` resolving undefined
 * means it wrote nothing (its source declined), and nothing is stored.
 */
export async function writeBlobWith(
  paths: StorePaths,
  desc: Pick<Descriptor, 'digest' | 'size'>,
  fill: (tempPath: string) => Promise<{size: number; digest: string} | undefined>,
  skip: () => Promise<void> = async () => undefined,
): Promise<BlobWriteResult | 'not-filled'> {
  const hex = sha256Hex(desc.digest)
  if (!Number.isSafeInteger(desc.size) || desc.size < 0) {
    throw new AegisError(`invalid size ${desc.size} for ${shortDigest(desc.digest)}`, {
      hint: 'sizes are whole numbers of bytes',
    })
  }
  const finalPath = paths.blob(hex)
  const existing = await statIfExists(finalPath)
  if (existing?.size === desc.size) {
    await skip()
    await touch(finalPath) // fresh mtime: a write lease protects it from a concurrent prune (see leases.ts)
    return 'already-present'
  }

  await mkdir(paths.tmpDir, {recursive: true})
  await mkdir(paths.blobsDir, {recursive: true})
  const tempPath = join(paths.tmpDir, tempFileName('.blob'))
  try {
    const filled = await fill(tempPath)
    if (filled === undefined) {
      await unlink(tempPath).catch(() => undefined)
      return 'not-filled'
    }
    if (filled.size > desc.size) throw sizeMismatch(desc, `more than ${desc.size} bytes`)
    if (filled.size !== desc.size) throw sizeMismatch(desc, `${filled.size} bytes, expected ${desc.size}`)
    if (filled.digest !== desc.digest) {
      throw new AegisError(
        `content does not match digest ${shortDigest(desc.digest)} (got ${shortDigest(filled.digest)})`,
        {
          hint: 'the source is corrupt or was changed; nothing was stored',
        },
      )
    }
    await rename(tempPath, finalPath).catch((error: unknown) => {
      throw storeWriteError(finalPath, error)
    })
  } catch (error) {
    await unlink(tempPath).catch(() => undefined)
    throw error
  }
  return 'written'
}

/** Streams `content` into a new file at `tempPath`, hashing and counting; stops at the first byte too many. */
async function streamToFile(
  tempPath: string,
  desc: Pick<Descriptor, 'digest' | 'size'>,
  content: Readable | Buffer,
  onBytes?: (bytes: number) => void,
): Promise<{size: number; digest: string}> {
  const handle = await open(tempPath, 'wx', 0o644)
  const hash = createHash('sha256')
  let received = 0
  let pending: Buffer[] = []
  let pendingBytes = 0
  try {
    for await (const chunk of chunksOf(content)) {
      received += chunk.length
      if (received > desc.size) throw sizeMismatch(desc, `more than ${desc.size} bytes`)
      hash.update(chunk)
      onBytes?.(chunk.length)
      pending.push(chunk)
      pendingBytes += chunk.length
      if (pendingBytes >= WRITE_BATCH_BYTES) {
        await writeAll(handle, pending, tempPath)
        pending = []
        pendingBytes = 0
      }
    }
    await writeAll(handle, pending, tempPath)
    const digest = `sha256:${hash.digest('hex')}`
    // Only content that will be kept is worth an fsync.
    if (received === desc.size && digest === desc.digest) {
      await handle.sync().catch((error: unknown) => {
        throw storeWriteError(tempPath, error)
      })
    }
    await handle.close()
    return {size: received, digest}
  } catch (error) {
    await handle.close().catch(() => undefined)
    if (!Buffer.isBuffer(content)) content.destroy()
    throw error
  }
}

async function* chunksOf(content: Readable | Buffer): AsyncGenerator<Buffer> {
  if (Buffer.isBuffer(content)) {
    yield content
    return
  }
  for await (const chunk of content as AsyncIterable<Buffer | string>) {
    yield typeof chunk === 'string' ? Buffer.from(chunk) : chunk
  }
}

/** Writes `chunks` in one writev (network streams deliver many small chunks), then any remainder. */
async function writeAll(handle: FileHandle, chunks: Buffer[], path: string): Promise<void> {
  if (chunks.length === 0) return
  const fail = (error: unknown): never => {
    throw storeWriteError(path, error)
  }
  const total = chunks.reduce((sum, chunk) => sum + chunk.length, 0)
  const {bytesWritten} = await handle.writev(chunks).catch(fail)
  if (bytesWritten === total) return
  const rest = Buffer.concat(chunks).subarray(bytesWritten)
  for (let offset = 0; offset < rest.length; ) {
    offset += (await handle.write(rest, offset).catch(fail)).bytesWritten
  }
}

/** Reads and discards a stream the store does not need, so a producer (e.g. a tar entry) can move on. */
async function drain(content: Readable | Buffer): Promise<void> {
  if (Buffer.isBuffer(content)) return
  content.resume()
  await finished(content)
}

async function touch(path: string): Promise<void> {
  const now = new Date()
  await utimes(path, now, now).catch(() => undefined)
}

function sizeMismatch(desc: Pick<Descriptor, 'digest' | 'size'>, detail: string): AegisError {
  return new AegisError(`content for ${shortDigest(desc.digest)} has the wrong size: ${detail}`, {
    hint: 'the source is truncated or corrupt; nothing was stored',
  })
}

function storeWriteError(path: string, cause: unknown): AegisError {
  return new AegisError(`cannot write to the image store (${path}): ${messageOf(cause)}`, {
    hint: 'check free disk space and permissions of the store directory',
    cause,
  })
}
