/**
 * The path a copy into the store takes (`pushVerifying`): the stream comes straight from the
 * registry, without a verifying pass-through, so the store's own size and digest check is all
 * there is: bad content fails and leaves neither blob nor temp file.
 */
import {randomBytes} from 'node:crypto'
import {readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {Readable} from 'node:stream'
import {afterAll, describe, expect, it} from 'vitest'
import {sha256Digest} from '../../src/oci/digest.js'
import type {Descriptor} from '../../src/oci/types.js'
import {LocalStore} from '../../src/store/local-store.js'
import {blobNames, removeTempDirs, tempDir, tempFiles} from './helpers.js'

afterAll(removeTempDirs)

const content = randomBytes(3 * 1024 * 1024 + 17)
const desc: Descriptor = {mediaType: 'application/octet-stream', digest: sha256Digest(content), size: content.length}

/** `bytes` in 64 KiB chunks, like a network body. */
function chunked(bytes: Buffer): Readable {
  return Readable.from(
    (function* () {
      for (let i = 0; i < bytes.length; i += 65536) yield bytes.subarray(i, i + 65536)
    })(),
  )
}

describe('pushVerifying', () => {
  it('stores content that arrives in small chunks, reporting every byte', async () => {
    const store = new LocalStore(await tempDir())
    const reported: number[] = []
    await store.pushVerifying(desc, chunked(content), (bytes) => reported.push(bytes))
    expect(await blobNames(store.root)).toEqual([desc.digest.slice(7)])
    expect((await readFile(join(store.root, 'blobs', 'sha256', desc.digest.slice(7)))).equals(content)).toBe(true)
    expect(reported.length).toBe(Math.ceil(content.length / 65536))
    expect(reported.reduce((sum, n) => sum + n, 0)).toBe(content.length)
  })

  it('altered, short or long content fails and leaves neither blob nor temp file', async () => {
    const store = new LocalStore(await tempDir())
    const tampered = Buffer.from(content)
    const middle = tampered.length >> 1
    tampered[middle] = tampered[middle]! ^ 0xff
    const ignore = () => undefined
    await expect(store.pushVerifying(desc, chunked(tampered), ignore)).rejects.toThrow(/does not match digest/)
    await expect(store.pushVerifying(desc, chunked(content.subarray(0, content.length - 1)), ignore)).rejects.toThrow(
      /wrong size/,
    )
    await expect(
      store.pushVerifying(desc, chunked(Buffer.concat([content, Buffer.from('x')])), ignore),
    ).rejects.toThrow(/wrong size: more than/)
    expect(await blobNames(store.root)).toEqual([])
    expect(await tempFiles(store.root)).toEqual([])
  })
})
