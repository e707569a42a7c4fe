/**
 * The kit layer goes through LayerWriter (src/image/layer-writer.ts) but must keep the bytes it
 * had when tar-stream and zlib.gzipSync wrote it, or every kit published again would get a new
 * digest. The reference below is that former packer, kept here as the definition of the format;
 * the kits compared include what its edge cases need (long and non-ASCII names, `a-b` next to
 * `a/`, a followed symlink, a tar over gzip-parallel's 1 MiB block).
 */
import {createHash, randomBytes} from 'node:crypto'
import {chmod, lstat, mkdir, mkdtemp, readFile, readdir, realpath, rm, stat, symlink, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import tar, {type Header} from 'tar-stream'
import {gzipSync} from 'node:zlib'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {packKitLayer} from '../../src/kit-artifact/layer.js'
import {repoRoot} from '../helpers/cli.js'

const EXCLUDED = new Set(['.git', '.hg', '.svn', '.DS_Store'])

/** The kit packer before LayerWriter: tar-stream entries in a depth-first walk, one gzipSync at level 9, OS byte "unknown". */
async function referencePack(dir: string): Promise<Buffer> {
  const root = await realpath(dir)
  const pack = tar.pack()
  const chunks: Buffer[] = []
  const collecting = (async () => {
    for await (const chunk of pack as AsyncIterable<Buffer>) chunks.push(chunk)
  })()
  const add = (header: Partial<Header> & {name: string}, body?: Buffer) =>
    new Promise<void>((resolve, reject) => {
      const done = (error?: Error | null) => (error ? reject(error) : resolve())
      if (body === undefined) pack.entry(header, done)
      else pack.entry(header, body, done)
    })
  const walk = async (relative: string): Promise<void> => {
    const names = (await readdir(join(root, relative)))
      .filter((name) => !EXCLUDED.has(name))
      .sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)))
    for (const name of names) {
      const rel = relative ? `${relative}/${name}` : name
      const info = await lstat(join(root, rel))
      const header = {mtime: new Date(0), uid: 0, gid: 0, uname: '', gname: ''}
      if (info.isDirectory()) {
        await add({...header, name: `${rel}/`, mode: 0o755, type: 'directory'})
        await walk(rel)
        continue
      }
      const source = info.isSymbolicLink() ? await realpath(join(root, rel)) : join(root, rel)
      const mode = (await stat(source)).mode & 0o111 ? 0o755 : 0o644
      const body = await readFile(source)
      await add({...header, name: rel, mode, type: 'file', size: body.length}, body)
    }
  }
  await walk('')
  pack.finalize()
  await collecting
  const gzipped = gzipSync(Buffer.concat(chunks), {level: 9})
  gzipped[9] = 0xff
  return gzipped
}

const sha256 = (bytes: Buffer) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`

let work: string
beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'aegis-kit-layer-'))
})
afterAll(async () => {
  await rm(work, {recursive: true, force: true})
})

describe('the kit layer through LayerWriter', () => {
  it.each(['hello', 'openclaw'])('packs kits/%s to the bytes the former packer wrote', async (kit) => {
    const dir = join(repoRoot, 'kits', kit)
    expect(sha256(await packKitLayer(dir))).toBe(sha256(await referencePack(dir)))
  })

  it('packs names ustar cannot hold, depth-first order, a followed symlink and a tar over 1 MiB to the same bytes', async () => {
    const kit = join(work, 'edge-kit')
    await mkdir(join(kit, 'a', 'b'), {recursive: true})
    await mkdir(join(kit, 'empty'))
    await writeFile(join(kit, 'a-b'), 'sorts after a/ when walked, before it by whole path')
    await writeFile(join(kit, 'a', 'x'), 'x')
    await writeFile(join(kit, 'a', 'b', 'empty-file'), '')
    await writeFile(join(kit, 'run.sh'), '#!/bin/sh\necho hi\n')
    await chmod(join(kit, 'run.sh'), 0o700)
    await writeFile(join(kit, 'größe.txt'), 'a PAX path')
    const long = join(kit, 'd'.repeat(60), 'e'.repeat(60))
    await mkdir(long, {recursive: true})
    await writeFile(join(long, 'f'.repeat(90)), 'split into prefix and name')
    await writeFile(join(kit, 'g'.repeat(120)), 'no split fits: a PAX path')
    await mkdir(join(kit, 'i'.repeat(100)))
    await symlink('a/x', join(kit, 'link-to-x'))
    await writeFile(join(kit, '.DS_Store'), 'left out')
    await writeFile(
      join(kit, 'big.bin'),
      Buffer.concat([randomBytes(1024 * 1024), Buffer.alloc(2 * 1024 * 1024, 'abcdefgh'), randomBytes(300_000)]),
    )
    const packed = await packKitLayer(kit)
    expect(packed.length).toBeGreaterThan(1024 * 1024)
    expect(sha256(packed)).toBe(sha256(await referencePack(kit)))
  })
})
