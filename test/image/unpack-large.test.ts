/**
 * Large files are written on the threadpool while later entries are applied (unpack-writes.ts),
 * and entries are created first and only cleared when something is in the way. These cases
 * check that neither changes what lands where, or lets a write leave the root.
 */
import {createHash} from 'node:crypto'
import {lstatSync, readdirSync, readFileSync, readlinkSync, statSync} from 'node:fs'
import {join} from 'node:path'
import {afterEach, beforeEach, describe, expect, it} from 'vitest'
import * as zlib from 'node:zlib'

import {AegisError} from '../../src/errors.js'
import {unpackImage, unpackLayer} from '../../src/image/unpack.js'
import {
  expectSandboxUntouched,
  makeTar,
  makeUnpackSandbox,
  removeUnpackSandbox,
  streamOf,
  type UnpackSandbox,
} from './helpers.js'

let sandbox: UnpackSandbox
let dest: string
let outside: string

beforeEach(() => {
  sandbox = makeUnpackSandbox('unpack-large')
  ;({dest, outside} = sandbox)
})
afterEach(() => removeUnpackSandbox(sandbox))

const expectOutsideUntouched = (): void => expectSandboxUntouched(sandbox)

/** Distinct, incompressible-looking bytes: a misplaced or reordered piece shows. */
function bytes(size: number, seed: string): Buffer {
  const out = Buffer.alloc(size)
  for (let offset = 0, counter = 0; offset < size; offset += 32, counter++) {
    createHash('sha256').update(`${seed}:${counter}`).digest().copy(out, offset)
  }
  return out
}

const openDescriptors = (): number => readdirSync('/proc/self/fd').length

describe('large files', () => {
  it('get their content, mode and mtime, next to small ones, from a gzip layer', async () => {
    const big = bytes(3 * 1024 * 1024 + 17, 'big')
    const medium = bytes(70_000, 'medium')
    const tar = await makeTar(
      [
        {name: 'opt/', type: 'directory', mode: 0o555, mtime: new Date(1_000_000)},
        {name: 'opt/big', content: big, mode: 0o640, mtime: new Date(2_000_000)},
        {name: 'opt/small', content: 'small', mode: 0o600},
        {name: 'opt/medium', content: medium, mode: 0o4755, mtime: new Date(3_000_000)},
      ],
      true,
    )
    const result = await unpackLayer(streamOf(tar), dest)
    expect(readFileSync(join(dest, 'opt/big')).equals(big)).toBe(true)
    expect(readFileSync(join(dest, 'opt/medium')).equals(medium)).toBe(true)
    expect(readFileSync(join(dest, 'opt/small'), 'utf8')).toBe('small')
    expect(statSync(join(dest, 'opt/big')).mode & 0o7777).toBe(0o640)
    expect(statSync(join(dest, 'opt/big')).mtimeMs).toBe(2_000_000)
    expect(statSync(join(dest, 'opt/medium')).mode & 0o7777).toBe(0o755) // setuid cleared
    expect(statSync(join(dest, 'opt/medium')).mtimeMs).toBe(3_000_000)
    expect(statSync(join(dest, 'opt')).mode & 0o7777).toBe(0o555)
    expect(statSync(join(dest, 'opt')).mtimeMs).toBe(1_000_000)
    expect(result.warnings).toEqual([expect.stringContaining('"opt/medium"')])
  })

  it('keep setuid when asked, and their hardlinks share the content', async () => {
    const big = bytes(200_000, 'su')
    const tar = await makeTar([
      {name: 'bin/su', content: big, mode: 0o4755},
      {name: 'bin/su-link', type: 'link', linkname: 'bin/su'},
    ])
    await unpackLayer(streamOf(tar), dest, {preserveSetuid: true})
    expect(statSync(join(dest, 'bin/su')).mode & 0o7777).toBe(0o4755)
    expect(statSync(join(dest, 'bin/su-link')).ino).toBe(statSync(join(dest, 'bin/su')).ino)
    expect(readFileSync(join(dest, 'bin/su-link')).equals(big)).toBe(true)
  })

  it('still being written when their directory is replaced by a symlink out of the root stay inside', async () => {
    const tar = await makeTar(
      [
        {name: 'd/', type: 'directory', mode: 0o755},
        {name: 'd/big', content: bytes(4 * 1024 * 1024, 'd')},
        {name: 'd', type: 'symlink', linkname: outside},
        {name: 'd/after', content: bytes(100_000, 'after')},
        {name: 'victim', type: 'symlink', linkname: join(outside, 'victim')},
        {name: 'victim', content: bytes(100_000, 'victim')},
      ],
      true,
    )
    const result = await unpackLayer(streamOf(tar), dest)
    expectOutsideUntouched()
    expect(readlinkSync(join(dest, 'd'))).toBe(outside)
    expect(readFileSync(join(dest, outside, 'after')).equals(bytes(100_000, 'after'))).toBe(true)
    expect(lstatSync(join(dest, 'victim')).isFile()).toBe(true)
    expect(result.warnings.join('\n')).toContain('"d/after"')
  })

  it('cut short fail with an AegisError and leave no descriptor open', async () => {
    const whole = await makeTar([{name: 'big', content: bytes(2 * 1024 * 1024, 'cut')}])
    const before = openDescriptors()
    const error = await unpackLayer(streamOf(zlib.gzipSync(whole.subarray(0, 512 + 1_000_000))), dest).catch(
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(AegisError)
    expect(openDescriptors()).toBe(before)
  })

  it('in a layer that fails its diff_id leave no descriptor open', async () => {
    const tar = await makeTar([{name: 'big', content: bytes(1024 * 1024, 'diff')}], true)
    const before = openDescriptors()
    await expect(unpackImage([streamOf(tar)], dest, {diffIds: ['sha256:00']})).rejects.toThrow(/diff_id/)
    expect(openDescriptors()).toBe(before)
  })
})

describe('an entry replaces whatever a lower layer left at its path', () => {
  it('file, directory, symlink and hardlink, each over another kind', async () => {
    const lower = await makeTar([
      {name: 'file-to-dir', content: 'was a file'},
      {name: 'dir-to-file/', type: 'directory', mode: 0o755},
      {name: 'dir-to-file/child', content: 'gone'},
      {name: 'link-to-file', type: 'symlink', linkname: join(outside, 'victim')},
      {name: 'link-to-big', type: 'symlink', linkname: join(outside, 'victim')},
      {name: 'file-to-link', content: 'was a file'},
      {name: 'file-to-hardlink', content: 'was a file'},
      {name: 'link-to-dir', type: 'symlink', linkname: outside},
      {name: 'dir-stays/', type: 'directory', mode: 0o700},
      {name: 'dir-stays/kept', content: 'kept'},
    ])
    const upper = await makeTar([
      {name: 'file-to-dir/', type: 'directory', mode: 0o755},
      {name: 'dir-to-file', content: 'now a file'},
      {name: 'link-to-file', content: 'not through'},
      {name: 'link-to-big', content: bytes(100_000, 'big')},
      {name: 'file-to-link', type: 'symlink', linkname: 'dir-to-file'},
      {name: 'file-to-hardlink', type: 'link', linkname: 'dir-to-file'},
      {name: 'link-to-dir/', type: 'directory', mode: 0o755},
      {name: 'link-to-dir/new', content: 'inside'},
      {name: 'dir-stays/', type: 'directory', mode: 0o755},
    ])
    await unpackImage([streamOf(lower), streamOf(upper)], dest)
    expectOutsideUntouched()
    expect(lstatSync(join(dest, 'file-to-dir')).isDirectory()).toBe(true)
    expect(readFileSync(join(dest, 'dir-to-file'), 'utf8')).toBe('now a file')
    expect(readFileSync(join(dest, 'link-to-file'), 'utf8')).toBe('not through')
    expect(readFileSync(join(dest, 'link-to-big')).equals(bytes(100_000, 'big'))).toBe(true)
    expect(readlinkSync(join(dest, 'file-to-link'))).toBe('dir-to-file')
    expect(statSync(join(dest, 'file-to-hardlink')).ino).toBe(statSync(join(dest, 'dir-to-file')).ino)
    expect(lstatSync(join(dest, 'link-to-dir')).isDirectory()).toBe(true)
    expect(readFileSync(join(dest, 'link-to-dir/new'), 'utf8')).toBe('inside')
    expect(readFileSync(join(dest, 'dir-stays/kept'), 'utf8')).toBe('kept')
    expect(statSync(join(dest, 'dir-stays')).mode & 0o7777).toBe(0o755)
  })
})
