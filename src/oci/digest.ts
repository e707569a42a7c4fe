/**
 * sha256 digests, the only algorithm aegis-kit accepts: computing one, checking one's form before
 * it becomes a path, and verifying bytes against a descriptor.
 */
import {createHash} from 'node:crypto'
import {AegisError} from '../errors.js'
import type {Descriptor} from './types.js'

const SHA256_DIGEST = /^sha256:([a-f0-9]{64})$/

/** The `sha256:<hex>` digest of some bytes, as descriptors carry it. */
export function sha256Digest(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`
}

export function isSha256Digest(value: string): boolean {
  return SHA256_DIGEST.test(value)
}

/** The hex part of a `sha256:` digest. Throws for anything else, so no digest can name a path outside blobs/. */
export function sha256Hex(digest: string): string {
  const match = SHA256_DIGEST.exec(digest)
  if (match?.[1] === undefined) {
    const algorithm = /^([a-z0-9+._-]+):/.exec(digest)?.[1]
    throw new AegisError(
      algorithm && algorithm !== 'sha256'
        ? `digest ${digest} uses ${algorithm}; aegis-kit only holds sha256 content`
        : `invalid digest ${JSON.stringify(digest)}`,
      {hint: 'digests look like sha256:<64 lowercase hex digits>'},
    )
  }
  return match[1]
}

/** `sha256:0123456789ab`: how messages name content. */
export function shortDigest(digest: string): string {
  return digest.slice(0, 19)
}

export function verificationError(desc: Descriptor, problem: string): AegisError {
  return new AegisError(`Content ${desc.digest} failed verification: ${problem}.`, {
    hint: 'The source has corrupt or altered content for this digest; nothing of it was kept. Repair or re-push the source.',
  })
}

/** Refuses a descriptor whose digest is not sha256 before any of its content is read. */
export function checkDigestAlgorithm(desc: Pick<Descriptor, 'digest'>): void {
  if (!desc.digest.startsWith('sha256:')) {
    throw new AegisError(`Content ${desc.digest} uses an unsupported digest algorithm (only sha256 is supported).`)
  }
}

/** Throws unless `bytes` are exactly the content `desc` names (size and sha256). */
export function verifyBytes(bytes: Buffer, desc: Descriptor): void {
  checkDigestAlgorithm(desc)
  if (bytes.length !== desc.size) throw verificationError(desc, `expected ${desc.size} bytes, got ${bytes.length}`)
  const actual = sha256Digest(bytes)
  if (actual !== desc.digest) throw verificationError(desc, `its content hashes to ${actual}`)
}
