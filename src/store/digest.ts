/** sha256 digests: the only algorithm the store accepts, validated before it becomes a path. */
import {AegisError} from '../errors.js'

const SHA256_DIGEST = /^sha256:([a-f0-9]{64})$/

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
        ? `digest ${digest} uses ${algorithm}; the store only holds sha256 content`
        : `invalid digest ${JSON.stringify(digest)}`,
      {hint: 'digests look like sha256:<64 lowercase hex digits>'},
    )
  }
  return match[1]
}

export {sha256Digest} from '../oci/types.js'

/** `sha256:0123456789ab` — how messages name content. */
export function shortDigest(digest: string): string {
  return digest.slice(0, 19)
}
