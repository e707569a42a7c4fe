/**
 * Hostile layers: each case checks that nothing appears or changes in a sentinel directory
 * next to the destination, and that the error or warning names the offending entry.
 */
import {execFileSync} from 'node:child_process'
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  writeFileSync,
} from 'node:fs'
import {join} from 'node:path'
import {afterEach, beforeEach, describe, expect, it} from 'vitest'

import {AegisError} from '../../src/errors.js'
import {LayerWriter} from '../../src/image/layer-writer.js'
import {unpackImage, unpackLayer, type UnpackResult} from '../../src/image/unpack.js'
import {
  expectSandboxUntouched,
  hasProgram,
  makeTar,
  makeUnpackSandbox,
  removeDir,
  removeUnpackSandbox,
  streamOf,
  type TarSpec,
  type UnpackSandbox,
} from './helpers.js'

let sandbox: UnpackSandbox
let base: string
let dest: string
let outside: string

beforeEach(() => {
  sandbox = makeUnpackSandbox('unpack')
  ;({base, dest, outside} = sandbox)
})
afterEach(() => removeUnpackSandbox(sandbox))

const expectOutsideUntouched = (): void => expectSandboxUntouched(sandbox)

async function unpack(entries: TarSpec[], options = {}): Promise<UnpackResult> {
  return unpackLayer(streamOf(await makeTar(entries)), dest, options)
}

async function expectRejected(entries: TarSpec[], entryName: string): Promise<void> {
  const error = await unpack(entries).then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(AegisError)
  expect((error as Error).message).toContain(`"${entryName}"`)
  expectOutsideUntouched()
}

describe('unpackLayer refuses entries that leave the root', () => {
  it('refuses ../escape', async () => {
    await expectRejected([{name: '../escape', content: 'x'}], '../escape')
    expect(existsSync(join(base, 'escape'))).toBe(false)
  })

  it('refuses a/../../escape', async () => {
    await expectRejected([{name: 'a/../../escape', content: 'x'}], 'a/../../escape')
  })

  it('refuses absolute paths', async () => {
    await expectRejected([{name: `${outside}/abs`, content: 'x'}], `${outside}/abs`)
    expect(existsSync(join(outside, 'abs'))).toBe(false)
  })

  it('refuses hardlinks to absolute or parent paths', async () => {
    await expectRejected([{name: 'passwd', type: 'link', linkname: '/etc/passwd'}], 'passwd')
    await expectRejected([{name: 'victim', type: 'link', linkname: '../outside/victim'}], 'victim')
    expect(existsSync(join(dest, 'victim'))).toBe(false)
  })

  it('refuses a hardlink to a path that does not exist inside the root', async () => {
    await expectRejected([{name: 'h', type: 'link', linkname: 'missing'}], 'h')
  })
})

describe('unpackLayer never writes through symlinks', () => {
  it('resolves link/file inside the root when link points at an absolute host path', async () => {
    const result = await unpack([
      {name: 'link', type: 'symlink', linkname: outside},
      {name: 'link/file', content: 'planted'},
    ])
    expectOutsideUntouched()
    expect(readlinkSync(join(dest, 'link'))).toBe(outside) // stored verbatim
    expect(readFileSync(join(dest, outside, 'file'), 'utf8')).toBe('planted') // chroot semantics
    expect(result.warnings).toEqual([expect.stringContaining('"link/file" goes through symlink "link"')])
  })

  it('clamps a symlink to ../../ at the root', async () => {
    const result = await unpack([
      {name: 'up', type: 'symlink', linkname: '../../'},
      {name: 'up/escaped', content: 'x'},
      {name: 'up/outside/victim', content: 'overwritten?'},
    ])
    expectOutsideUntouched()
    expect(readFileSync(join(dest, 'escaped'), 'utf8')).toBe('x')
    expect(readFileSync(join(dest, 'outside/victim'), 'utf8')).toBe('overwritten?')
    expect(result.warnings.join('\n')).toContain('"up/escaped"')
  })

  it('replaces a final-component symlink instead of writing through it', async () => {
    await unpack([
      {name: 'target', type: 'symlink', linkname: join(outside, 'victim')},
      {name: 'target', content: 'replaced'},
    ])
    expectOutsideUntouched()
    expect(lstatSync(join(dest, 'target')).isFile()).toBe(true)
    expect(readFileSync(join(dest, 'target'), 'utf8')).toBe('replaced')
  })

  it('does not follow a symlink planted by an earlier layer', async () => {
    const layer1 = await makeTar([
      {name: 'evil', type: 'symlink', linkname: outside},
      {name: 'rel', type: 'symlink', linkname: '../outside'},
      {name: 'victim-link', type: 'symlink', linkname: join(outside, 'victim')},
    ])
    const layer2 = await makeTar([
      {name: 'evil/pwned', content: 'x'},
      {name: 'rel/pwned', content: 'x'},
      {name: 'rel/.wh.victim'},
      {name: 'victim-link', content: 'not through'},
      {name: 'hard', type: 'link', linkname: 'evil/pwned'},
    ])
    const warnings: string[] = []
    await unpackImage([streamOf(layer1), streamOf(layer2)], dest, {onWarning: (m) => warnings.push(m)})
    expectOutsideUntouched()
    expect(readFileSync(join(dest, outside, 'pwned'), 'utf8')).toBe('x')
    expect(readFileSync(join(dest, 'outside/pwned'), 'utf8')).toBe('x')
    expect(statSync(join(dest, 'hard')).ino).toBe(statSync(join(dest, outside, 'pwned')).ino)
    expect(warnings.join('\n')).toContain('"evil/pwned"')
    expect(warnings.join('\n')).toContain('"rel/.wh.victim"')
  })
})

describe('unpackLayer skips or strips what an image must not carry', () => {
  it('skips device nodes and fifos with a warning naming them', async () => {
    const result = await unpack([
      {name: 'dev/', type: 'directory', mode: 0o755},
      {name: 'dev/sda', type: 'block-device', devmajor: 8, devminor: 0},
      {name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3},
      {name: 'dev/pipe', type: 'fifo'},
    ])
    expect(readdirSync(join(dest, 'dev'))).toEqual([])
    expect(result.warnings).toHaveLength(3)
    expect(result.warnings[1]).toContain('"dev/null"')
    expectOutsideUntouched()
  })

  it('clears setuid/setgid by default and keeps them when asked', async () => {
    const entries: TarSpec[] = [{name: 'bin/su', mode: 0o4755, content: 'x'}]
    const result = await unpack(entries)
    expect(statSync(join(dest, 'bin/su')).mode & 0o7777).toBe(0o755)
    expect(result.warnings).toEqual([expect.stringContaining('"bin/su"')])
    removeDir(dest)
    await unpack(entries, {preserveSetuid: true})
    expect(statSync(join(dest, 'bin/su')).mode & 0o7777).toBe(0o4755)
  })

  it('rejects a whiteout with no usable name, naming it', async () => {
    await expectRejected([{name: 'etc/.wh..'}], 'etc/.wh..')
  })

  it('reports garbage as an AegisError', async () => {
    const error = await unpackLayer(streamOf(Buffer.from([0x1f, 0x8b, 0x08, 0, 1, 2, 3, 4, 5])), dest).catch(
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(AegisError)
  })

  it('reports a gzip layer cut short as not valid gzip', async () => {
    const gzip = await makeTar([{name: 'f', content: Buffer.alloc(1_000_000, 'x')}], true)
    const error = await unpackLayer(streamOf(gzip.subarray(0, gzip.length - 10)), dest).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(AegisError)
    expect((error as Error).message).toContain('not valid gzip')
  })
})

describe('unpackLayer applies ordinary layers', () => {
  it('applies files, modes, mtimes, read-only dirs and checks the diffId', async () => {
    const tar = await makeTar([
      {name: 'ro/', type: 'directory', mode: 0o555, mtime: new Date(1_000_000)},
      {name: 'ro/file', mode: 0o640, content: 'content', mtime: new Date(2_000_000)},
    ])
    const first = await unpackLayer(streamOf(tar), dest)
    expect(first.encoding).toBe('tar')
    expect(statSync(join(dest, 'ro')).mode & 0o777).toBe(0o555)
    expect(statSync(join(dest, 'ro')).mtimeMs).toBe(1_000_000)
    expect(statSync(join(dest, 'ro/file')).mode & 0o777).toBe(0o640)
    expect(statSync(join(dest, 'ro/file')).mtimeMs).toBe(2_000_000)
    await expect(unpackLayer(streamOf(tar), join(base, 'dest'), {expectedDiffId: 'sha256:00'})).rejects.toThrow(
      /diff_id/,
    )
  })

  it.skipIf(process.getuid?.() === 0)(
    'without root (root writes into read-only directories anyway: skipped as root), writes into a directory a lower layer left read-only',
    async () => {
      const lower = await makeTar([
        {name: 'ro/', type: 'directory', mode: 0o555},
        {name: 'ro/sub/', type: 'directory', mode: 0o500},
      ])
      const upper = await makeTar([
        {name: 'ro/big', content: Buffer.alloc(300_000, 'b'), mode: 0o444},
        {name: 'ro/sub/x', content: 'x'},
      ])
      const top = await makeTar([{name: 'ro/third', content: '3'}])
      await unpackImage([streamOf(lower), streamOf(upper), streamOf(top)], dest)
      expect(readFileSync(join(dest, 'ro/big')).length).toBe(300_000)
      expect(readFileSync(join(dest, 'ro/sub/x'), 'utf8')).toBe('x')
      expect(readFileSync(join(dest, 'ro/third'), 'utf8')).toBe('3')
      expect(statSync(join(dest, 'ro')).mode & 0o7777).toBe(0o555)
      expect(statSync(join(dest, 'ro/sub')).mode & 0o7777).toBe(0o500)
    },
  )

  it.skipIf(process.getuid?.() !== 0)('sets owners as root, including PAX ids beyond ustar', async () => {
    const blobFile = join(base, 'owners.tar')
    await new LayerWriter({compression: 'none'})
      .addFile('small', Buffer.from('s'), {uid: 1000, gid: 1001})
      .addFile('large', Buffer.from('l'), {uid: 3_000_000, gid: 3_000_001})
      .write(blobFile)
    await unpackLayer(streamOf(readFileSync(blobFile)), dest)
    expect([statSync(join(dest, 'small')).uid, statSync(join(dest, 'small')).gid]).toEqual([1000, 1001])
    expect([statSync(join(dest, 'large')).uid, statSync(join(dest, 'large')).gid]).toEqual([3_000_000, 3_000_001])
  })

  it.skipIf(!hasProgram('zstd'))('reads zstd layers by their magic bytes', async () => {
    const blobFile = join(base, 'layer.zst')
    const blob = await new LayerWriter({compression: 'zstd'}).addFile('a/b', Buffer.from('zstd!')).write(blobFile)
    const result = await unpackLayer(streamOf(readFileSync(blobFile)), dest)
    expect(result.encoding).toBe('zstd')
    expect(result.diffId).toBe(blob.diffId)
    expect(readFileSync(join(dest, 'a/b'), 'utf8')).toBe('zstd!')
  })

  it('matches GNU tar on a gzip layer with hardlinks and symlinks', async () => {
    const src = join(base, 'src')
    mkdirSync(join(src, 'd'), {recursive: true})
    writeFileSync(join(src, 'd/f'), 'f')
    execFileSync('ln', [join(src, 'd/f'), join(src, 'd/g')])
    execFileSync('ln', ['-s', '/nowhere', join(src, 'd/s')])
    const blobFile = join(base, 'layer.tgz')
    await new LayerWriter().addTree(src).write(blobFile)
    const result = await unpackLayer(streamOf(readFileSync(blobFile)), dest)
    expect(result.encoding).toBe('gzip')
    const gnu = join(base, 'gnu')
    mkdirSync(gnu)
    execFileSync('tar', ['-xzf', blobFile, '-C', gnu])
    const list = (dir: string): string =>
      execFileSync('sh', ['-c', `cd ${dir} && find . -printf '%p %y %l %n\\n' | sort`], {encoding: 'utf8'})
    expect(list(dest)).toBe(list(gnu))
    expect(list(dest)).toContain('./d/g f  2')
  })
})
