/**
 * The store's trusted path for streams that verify themselves (the registry client's
 * VerifyingStream): counted, not hashed twice, and still never visible unless verified.
 */
import {randomBytes} from 'node:crypto'
import {existsSync} from 'node:fs'
import {readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {PassThrough, Readable} from 'node:stream'
import {afterAll, describe, expect, it} from 'vitest'
import {SELF_VERIFYING, type Descriptor} from '../../src/oci/types.js'
import {sha256Digest, verifying} from '../../src/registry/verify.js'
import {LocalStore} from '../../src/store/local-store.js'
import {blobNames, removeTempDirs, tempDir, tempFiles} from './helpers.js'

afterAll(removeTempDirs)

const content = randomBytes(3 * 1024 * 1024 + 17)
const desc: Descriptor = {mediaType: 'application/octet-stream', digest: sha256Digest(content), size: content.length}

/** `bytes` in 64 KiB chunks, like a network body. */
function chunked(bytes: Buffer): Readable {
  return Readable.from((function* () {
    for (let i = 0; i < bytes.length; i += 65536) yield bytes.subarray(i, i + 65536)
  })())
}

describe('self-verifying streams', () => {
  it('stores verified content written in small chunks', async () => {
    const store = new LocalStore(await tempDir())
    await store.push(desc, verifying(chunked(content), desc))
    expect(await blobNames(store.root)).toEqual([desc.digest.slice(7)])
    expect((await readFile(join(store.root, 'blobs', 'sha256', desc.digest.slice(7)))).equals(content)).toBe(true)
  })

  it('a tampered stream fails and leaves neither blob nor temp file', async () => {
    const store = new LocalStore(await tempDir())
    const tampered = Buffer.from(content)
    const middle = tampered.length >> 1
    tampered[middle] = tampered[middle]! ^ 0xff
    await expect(store.push(desc, verifying(chunked(tampered), desc))).rejects.toThrow(/failed verification/)
    const truncated = content.subarray(0, content.length - 1)
    await expect(store.push(desc, verifying(chunked(truncated), desc))).rejects.toThrow()
    expect(existsSync(join(store.root, 'blobs', 'sha256', desc.digest.slice(7)))).toBe(false)
    expect(await tempFiles(store.root)).toEqual([])
  })

  it('a marker for another digest is ignored: the store hashes and refuses', async () => {
    const store = new LocalStore(await tempDir())
    const liar = Object.assign(new PassThrough(), {[SELF_VERIFYING]: {digest: sha256Digest('other'), size: desc.size}})
    liar.end(Buffer.alloc(desc.size))
    await expect(store.push(desc, liar)).rejects.toThrow(/does not match digest/)
    expect(await blobNames(store.root)).toEqual([])
  })
})
