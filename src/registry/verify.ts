/**
 * Checking content against its descriptor while it streams: a size or digest mismatch fails the
 * stream instead of ending it, so a destination that commits on `end` never keeps bad content.
 */
import {createHash, type Hash} from 'node:crypto'
import {Transform, type Readable, type TransformCallback} from 'node:stream'
import {AegisError} from '../errors.js'
import {checkDigestAlgorithm, sha256Digest, verificationError, verifyBytes} from '../oci/digest.js'
import type {Descriptor} from '../oci/types.js'

export {sha256Digest, verificationError, verifyBytes}

/**
 * A pass-through that counts (more or fewer bytes than the descriptor says fail the stream) and,
 * unless the destination checks the digest itself (`verifiesOnReceipt`), hashes: a digest
 * mismatch fails it at the end. `onBytes` is called per chunk.
 */
export class VerifyingStream extends Transform {
  private readonly hash: Hash | undefined
  private received = 0

  constructor(
    private readonly desc: Descriptor,
    private readonly onBytes?: (bytes: number) => void,
    options: {hash: boolean} = {hash: true},
  ) {
    super()
    checkDigestAlgorithm(desc)
    this.hash = options.hash ? createHash('sha256') : undefined
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.received += chunk.length
    if (this.received > this.desc.size) {
      callback(verificationError(this.desc, `more than the expected ${this.desc.size} bytes`))
      return
    }
    this.hash?.update(chunk)
    this.onBytes?.(chunk.length)
    callback(null, chunk)
  }

  override _flush(callback: TransformCallback): void {
    if (this.received !== this.desc.size) {
      callback(verificationError(this.desc, `expected ${this.desc.size} bytes, got ${this.received}`))
      return
    }
    if (!this.hash) {
      callback(null)
      return
    }
    const actual = `sha256:${this.hash.digest('hex')}`
    callback(actual === this.desc.digest ? null : verificationError(this.desc, `its content hashes to ${actual}`))
  }
}

/** `source` through a VerifyingStream that checks the size only, an error in the source failing the result too. */
export function counting(source: Readable, desc: Descriptor, onBytes?: (bytes: number) => void): Readable {
  return through(source, new VerifyingStream(desc, onBytes, {hash: false}))
}

/** `source` piped through a VerifyingStream; an error in the source fails the result too. */
export function verifying(source: Readable, desc: Descriptor, onBytes?: (bytes: number) => void): Readable {
  return through(source, new VerifyingStream(desc, onBytes))
}

function through(source: Readable, verifier: Transform): Readable {
  source.on('error', (error) => verifier.destroy(error))
  verifier.on('close', () => {
    if (!source.destroyed && !source.readableEnded) source.destroy()
  })
  return source.pipe(verifier)
}

/** Reads a whole (small) stream, refusing more than `limit` bytes. */
export async function readAll(stream: Readable, limit: number, what: string): Promise<Buffer> {
  const chunks: Buffer[] = []
  let length = 0
  for await (const chunk of stream) {
    const buffer = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as Uint8Array)
    length += buffer.length
    if (length > limit) {
      stream.destroy()
      throw new AegisError(`${what} is larger than ${limit} bytes.`)
    }
    chunks.push(buffer)
  }
  return Buffer.concat(chunks, length)
}
