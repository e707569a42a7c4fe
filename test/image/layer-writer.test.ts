import {execFileSync} from 'node:child_process'
import {createHash, randomBytes} from 'node:crypto'
import {chownSync, existsSync, linkSync, mkdirSync, readFileSync, symlinkSync, utimesSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {Writable} from 'node:stream'
import * as zlib from 'node:zlib'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {AegisError} from '../../src/errors.js'
import {crc32Combine, ParallelGzip} from '../../src/image/gzip-parallel.js'
import {orderEntries, streamTree, walkTree, type LayerEntry} from '../../src/image/layer-entries.js'
import {encodeTarHeader, type TarHeader} from '../../src/image/layer-tar.js'
import {LayerWriter, sourceDateEpochFrom} from '../../src/image/layer-writer.js'
import {hasProgram, readTar, removeDir, tempDir} from './helpers.js'

const isRoot = process.getuid?.() === 0
let work: string

/** A small tree with a file, nested dirs, a symlink, a hardlink pair and an executable. */
function makeTree(dir: string, options: {mtime?: number; owner?: number} = {}): void {
  mkdirSync(join(dir, 'app/lib/deep'), {recursive: true})
  writeFileSync(join(dir, 'app/main.js'), 'console.log("hi")\n')
  writeFileSync(join(dir, 'app/lib/deep/data.bin'), Buffer.alloc(3000, 7))
  writeFileSync(join(dir, 'app/run.sh'), '#!/bin/sh\necho run\n', {mode: 0o755})
  writeFileSync(join(dir, 'app/a-first'), 'hardlinked\n')
  linkSync(join(dir, 'app/a-first'), join(dir, 'app/z-second'))
  symlinkSync('lib/deep/data.bin', join(dir, 'app/data-link'))
  if (options.mtime !== undefined) {
    for (const p of ['app/main.js', 'app/lib/deep/data.bin', 'app/run.sh', 'app/a-first', 'app/lib', 'app']) {
      utimesSync(join(dir, p), options.mtime, options.mtime)
    }
  }
  if (options.owner !== undefined && isRoot) {
    for (const p of ['app', 'app/main.js', 'app/lib', 'app/run.sh'])
      chownSync(join(dir, p), options.owner, options.owner)
  }
}

beforeAll(() => {
  work = tempDir('layer-writer')
})
afterAll(() => removeDir(work))

describe('LayerWriter determinism', () => {
  it('gives the same digest for two writes and for copies with other mtimes and owners', async () => {
    const treeA = join(work, 'treeA')
    const treeB = join(work, 'treeB')
    makeTree(treeA, {mtime: 1_600_000_000})
    makeTree(treeB, {mtime: 1_700_000_000, owner: 1234})
    const first = await new LayerWriter().addTree(treeA).write(join(work, 'a1.tgz'))
    const again = await new LayerWriter().addTree(treeA).write(join(work, 'a2.tgz'))
    const other = await new LayerWriter().addTree(treeB).write(join(work, 'b.tgz'))
    expect(again.digest).toBe(first.digest)
    expect(other.digest).toBe(first.digest)
    expect(other.diffId).toBe(first.diffId)
    expect(readFileSync(join(work, 'b.tgz')).equals(readFileSync(join(work, 'a1.tgz')))).toBe(true)
    // Digests describe the bytes on disk.
    expect(first.size).toBe(readFileSync(join(work, 'a1.tgz')).length)
    const sha = execFileSync('sha256sum', [join(work, 'a1.tgz')], {encoding: 'utf8'}).split(' ')[0]
    expect(first.digest).toBe(`sha256:${sha}`)
    const tarSha = execFileSync('sh', ['-c', `gzip -dc ${join(work, 'a1.tgz')} | sha256sum`], {encoding: 'utf8'}).split(
      ' ',
    )[0]
    expect(first.diffId).toBe(`sha256:${tarSha}`)
    execFileSync('gzip', ['-t', join(work, 'a1.tgz')])
  })

  it('writes sorted entries with owner 0, empty names, parents first, and mtimes clamped', async () => {
    const tree = join(work, 'clamp')
    makeTree(tree, {mtime: 2_000})
    utimesSync(join(tree, 'app/run.sh'), 500, 500)
    const file = join(work, 'clamp.tgz')
    await new LayerWriter({sourceDateEpoch: 1_000}).addTree(tree).write(file)
    const entries = await readTar(readFileSync(file))
    const names = entries.map((e) => e.header.name)
    expect(names).toEqual([
      'app/',
      'app/a-first',
      'app/data-link',
      'app/lib/',
      'app/lib/deep/',
      'app/lib/deep/data.bin',
      'app/main.js',
      'app/run.sh',
      'app/z-second',
    ])
    for (const {header} of entries) {
      expect([header.uid, header.gid, header.uname, header.gname]).toEqual([0, 0, '', ''])
      expect(header.mtime!.getTime() / 1000).toBeLessThanOrEqual(1_000)
    }
    const byName = new Map(entries.map((e) => [e.header.name, e.header]))
    expect(byName.get('app/main.js')!.mtime!.getTime()).toBe(1_000_000) // 2000 clamped to 1000
    expect(byName.get('app/run.sh')!.mtime!.getTime()).toBe(500_000) // older: kept
    expect(byName.get('app/run.sh')!.mode).toBe(0o755)
    expect(byName.get('app/data-link')).toMatchObject({type: 'symlink', linkname: 'lib/deep/data.bin'})
    expect(byName.get('app/z-second')).toMatchObject({type: 'link', linkname: 'app/a-first', size: 0})
  })

  it('keeps hardlinks as GNU tar sees them', async () => {
    const tree = join(work, 'hard')
    makeTree(tree)
    const file = join(work, 'hard.tgz')
    await new LayerWriter().addTree(tree).write(file)
    const listing = execFileSync('tar', ['-tvzf', file], {encoding: 'utf8'})
    expect(listing).toMatch(/^hrw-r--r-- 0\/0 +0 1970-01-01 00:00 app\/z-second link to app\/a-first$/m)
    expect(listing).toMatch(/^lrwxrwxrwx 0\/0 +0 1970-01-01 00:00 app\/data-link -> lib\/deep\/data.bin$/m)
    const out = join(work, 'hard-x')
    mkdirSync(out)
    execFileSync('tar', ['-xzf', file, '-C', out])
    const {ino: a} = await import('node:fs').then((fs) => fs.statSync(join(out, 'app/a-first')))
    const {ino: b} = await import('node:fs').then((fs) => fs.statSync(join(out, 'app/z-second')))
    expect(a).toBe(b)
  })

  it('gives the same bytes for any thread count, across many 1 MiB blocks', async () => {
    const tree = join(work, 'big')
    mkdirSync(tree)
    const text = Buffer.from('const value = require("thing"); // some compressible text\n'.repeat(60_000))
    writeFileSync(join(tree, 'text.js'), text)
    writeFileSync(join(tree, 'random.bin'), randomBytes(2_500_000))
    const inline = await new LayerWriter({threads: 0}).addTree(tree).write(join(work, 'big0.tgz'))
    const one = await new LayerWriter({threads: 1}).addTree(tree).write(join(work, 'big1.tgz'))
    const three = await new LayerWriter({threads: 3}).addTree(tree).write(join(work, 'big3.tgz'))
    expect(inline.uncompressedSize).toBeGreaterThan(5 * 1024 * 1024)
    expect(one.digest).toBe(inline.digest)
    expect(three.digest).toBe(inline.digest)
    const tar = zlib.gunzipSync(readFileSync(join(work, 'big3.tgz')))
    expect(tar.length).toBe(inline.uncompressedSize)
    execFileSync('gzip', ['-t', join(work, 'big3.tgz')])
    const entries = await readTar(tar)
    expect(entries.find((e) => e.header.name === 'text.js')!.content.equals(text)).toBe(true)
  })

  it('writes long and non-ASCII names with PAX only when needed', async () => {
    const longDir = 'd'.repeat(120)
    const longName = `${'n'.repeat(150)}.txt`
    const file = join(work, 'pax.tar')
    await new LayerWriter({compression: 'none'})
      .addFile(`${longDir}/short.txt`, Buffer.from('split into prefix'))
      .addFile(`x/${longName}`, Buffer.from('needs pax'))
      .addFile('ünïcode/файл', Buffer.from('utf-8'))
      .write(file)
    const listing = execFileSync('tar', ['-tf', file], {encoding: 'utf8'}).trim().split('\n')
    expect(listing).toContain(`${longDir}/short.txt`)
    expect(listing).toContain(`x/${longName}`)
    expect(listing).toContain('ünïcode/файл')
    const raw = readFileSync(file)
    // PAX for: the 121-char directory (no '/' to split at), the 152-char base name, and the two
    // non-ASCII paths. Not for "<120 d>/short.txt": ustar's prefix field holds it.
    expect(raw.toString('latin1').split('PaxHeader').length - 1).toBe(4)
    expect(raw.toString('latin1')).toContain(`${longDir}\u0000`) // the prefix field
  })

  it('orders names by their UTF-8 bytes, also beyond U+D7FF, where UTF-16 order differs', async () => {
    // U+1F600 is a surrogate pair in UTF-16 (sorts before U+FF01 there) but F0 9F... in UTF-8
    // (after EF BC 81). Without those two the sort compares plain strings: '-' before '/' and
    // U+00E9 after ASCII must come out the same.
    const all = ['z', 'a/x', 'a-b', '\u{1F600}', '\uFF01', '\u00E9']
    for (const files of [all, all.filter((n) => n !== '\u{1F600}' && n !== '\uFF01')]) {
      const writer = new LayerWriter({compression: 'none'})
      for (const name of files) writer.addFile(name, Buffer.from(name))
      const file = join(work, 'order.tar')
      const blob = await writer.write(file)
      const written = (await readTar(readFileSync(file))).map((e) => e.header.name.replace(/\/$/, ''))
      const expected = ['a', ...files].sort((p, q) => Buffer.compare(Buffer.from(p), Buffer.from(q)))
      expect(written).toEqual(expected)
      if (files === all) expect(written.indexOf('\uFF01')).toBeLessThan(written.indexOf('\u{1F600}'))
      // Without compression the blob is the tar: one digest, hashed once.
      const sha = createHash('sha256').update(readFileSync(file)).digest('hex')
      expect(blob.digest).toBe(`sha256:${sha}`)
      expect(blob.diffId).toBe(blob.digest)
    }
  })

  it('lets entries override modes and owners, and rejects paths that would leave the layer', async () => {
    const file = join(work, 'entries.tar')
    const blob = await new LayerWriter({compression: 'none', owner: {uid: 1000, gid: 1000}})
      .addFile('etc/app.conf', Buffer.from('x=1\n'), {mode: 0o600, uid: 0, gid: 0})
      .addFile('bin/tool', Buffer.from('#!/bin/sh\n'), {mode: 0o4755})
      .addSymlink('usr/bin/tool', '/bin/tool')
      .addFile('home/big-id', Buffer.from(''), {uid: 3_000_000, gid: 3_000_001}) // beyond ustar's octal: PAX
      .write(file)
    expect(blob.digest).toBe(blob.diffId) // uncompressed: one and the same
    const entries = await readTar(readFileSync(file))
    const byName = new Map(entries.map((e) => [e.header.name, e.header]))
    expect(byName.get('etc/app.conf')).toMatchObject({mode: 0o600, uid: 0, gid: 0})
    expect(byName.get('bin/tool')).toMatchObject({mode: 0o4755, uid: 1000, gid: 1000})
    expect(byName.get('usr/')).toMatchObject({type: 'directory', mode: 0o755, uid: 1000})
    // tar-stream ignores PAX uid/gid; GNU tar applies them.
    expect(execFileSync('tar', ['-tvf', file], {encoding: 'utf8'})).toMatch(
      /^-rw-r--r-- 3000000\/3000001 .* home\/big-id$/m,
    )
    expect(() => new LayerWriter().addFile('../etc/passwd', Buffer.from(''))).toThrow(AegisError)
    expect(() => new LayerWriter().addFile('a/../../b', Buffer.from(''))).toThrow(/contains "\.\."/)
    await expect(
      new LayerWriter().addFile('a', Buffer.from('file')).addFile('a/b', Buffer.from('')).write(join(work, 'bad.tgz')),
    ).rejects.toThrow(/inside "a", which is a file/)
  })

  it('writes whiteouts, with the opaque marker first in its directory', async () => {
    const file = join(work, 'wh.tar')
    await new LayerWriter({compression: 'none'})
      .addWhiteout('etc/old.conf')
      .addFile('opt/!first', Buffer.from('sorts before ".wh..wh..opq" by bytes'))
      .addOpaqueDirectory('opt')
      .write(file)
    const names = (await readTar(readFileSync(file))).map((e) => e.header.name)
    expect(names).toEqual(['etc/', 'etc/.wh.old.conf', 'opt/', 'opt/.wh..wh..opq', 'opt/!first'])
    await expect(
      new LayerWriter().addWhiteout('a/b').addFile('a/b', Buffer.from('')).write(join(work, 'x.tgz')),
    ).rejects.toThrow(/both deletes and adds "a\/b"/)
  })

  it('skips sockets and fifos with a warning that names them', async () => {
    const tree = join(work, 'special')
    mkdirSync(tree)
    writeFileSync(join(tree, 'ok'), 'ok')
    execFileSync('mkfifo', [join(tree, 'pipe')])
    const warnings: string[] = []
    const blob = await new LayerWriter({onWarning: (m) => warnings.push(m)})
      .addTree(tree)
      .write(join(work, 'special.tgz'))
    expect(blob.entries).toBe(1)
    expect(warnings).toEqual([expect.stringContaining(join(tree, 'pipe'))])
    expect(blob.warnings).toEqual(warnings)
  })

  it.skipIf(!hasProgram('zstd'))('writes zstd that the zstd program reads back to the same tar', async () => {
    const tree = join(work, 'treeZ')
    makeTree(tree)
    const plain = await new LayerWriter({compression: 'none'}).addTree(tree).write(join(work, 'z.tar'))
    const zstd = await new LayerWriter({compression: 'zstd'}).addTree(tree).write(join(work, 'z.tar.zst'))
    const zstd2 = await new LayerWriter({compression: 'zstd', threads: 1}).addTree(tree).write(join(work, 'z2.tar.zst'))
    expect(zstd.mediaType).toBe('application/vnd.oci.image.layer.v1.tar+zstd')
    expect(zstd.compressor).toMatch(/^zstd \(/)
    expect(zstd.diffId).toBe(plain.diffId)
    expect(zstd2.digest).toBe(zstd.digest)
    const back = execFileSync('zstd', ['-d', '-c', join(work, 'z.tar.zst')])
    expect(back.equals(readFileSync(join(work, 'z.tar')))).toBe(true)
    // Written to a file, zstd's output is written and hashed off the main thread; to a stream, it
    // goes through the main thread: the same digest and size either way, and the file's own.
    const file = readFileSync(join(work, 'z.tar.zst'))
    expect(zstd.digest).toBe(`sha256:${createHash('sha256').update(file).digest('hex')}`)
    expect(zstd.size).toBe(file.length)
    const chunks: Buffer[] = []
    const streamed = await new LayerWriter({compression: 'zstd'}).addTree(tree).write(
      new Writable({
        write(chunk: Buffer, _encoding, done) {
          chunks.push(chunk)
          done()
        },
      }),
    )
    expect(streamed.digest).toBe(zstd.digest)
    expect(Buffer.concat(chunks).equals(file)).toBe(true)
  })
})

/** Names whose byte order differs from a walk's: `-` and `.` sort before `/`, surrogates after U+FFxx. */
function makeAwkwardTree(dir: string): void {
  for (const d of ['a/x', 'a-b', 'a.d/in', 'é/sub', '\u{1F600}', '\uFF01', 'empty', 'opq'])
    mkdirSync(join(dir, d), {recursive: true})
  for (const f of [
    'a/x/1',
    'a.txt',
    'a0',
    'A',
    'é/sub/f',
    '\u{1F600}/f',
    '\uFF01/f',
    'opq/.wh..wh..opq',
    'opq/!bang',
    'zz',
  ])
    writeFileSync(join(dir, f), f)
  linkSync(join(dir, 'zz'), join(dir, 'a/x/linked-first-by-order'))
  symlinkSync('a/x/1', join(dir, 'a-link'))
}

describe('LayerWriter streamed trees', () => {
  const implied = {uid: 0, gid: 0, mode: 0o755, mtime: 0}
  const owner = {uid: 0, gid: 0}
  const sorted = (tree: string, at?: string): LayerEntry[] => {
    const byPath = new Map(walkTree(tree, {at}, owner, () => {}).map((e) => [e.path, e]))
    return orderEntries(byPath, implied)
  }

  it('lists a tree in the order the sorted walk gives, hardlinks folded the same way', () => {
    const tree = join(work, 'awkward')
    makeAwkwardTree(tree)
    for (const at of [undefined, 'usr/local/lib/app']) {
      const streamed = [...streamTree(tree, {at}, owner, implied, () => {})]
      expect(streamed).toEqual(sorted(tree, at))
      expect(streamed.length).toBeGreaterThan(20)
    }
    const paths = [...streamTree(tree, {}, owner, implied, () => {})].map((e) => e.path)
    expect(paths.indexOf('a-b')).toBeLessThan(paths.indexOf('a/x'))
    expect(paths.indexOf('a.txt')).toBeLessThan(paths.indexOf('a/x'))
    expect(paths.indexOf('opq/.wh..wh..opq')).toBe(paths.indexOf('opq') + 1)
    expect(paths.indexOf('\uFF01')).toBeLessThan(paths.indexOf('\u{1F600}'))
    // 'a/x/linked-first-by-order' sorts before 'zz': the walk's first sighting is not the tar's.
    const zz = [...streamTree(tree, {}, owner, implied, () => {})].find((e) => e.path === 'zz')!
    expect(zz).toMatchObject({type: 'hardlink', target: 'a/x/linked-first-by-order'})
  })

  it('writes the same bytes for a tree alone as for the tree walked before writing', async () => {
    const tree = join(work, 'awkward-bytes')
    makeAwkwardTree(tree)
    const empty = join(work, 'empty-tree')
    mkdirSync(empty)
    for (const compression of ['gzip', 'none'] as const) {
      const alone = await new LayerWriter({compression}).addTree(tree, {at: 'opt'}).write(join(work, 'alone.blob'))
      // A second tree (adding nothing) makes the writer walk the first before writing.
      const walked = await new LayerWriter({compression})
        .addTree(tree, {at: 'opt'})
        .addTree(empty)
        .write(join(work, 'walked.blob'))
      expect(alone.digest).toBe(walked.digest)
      expect(alone.entries).toBe(walked.entries)
    }
  })

  it('leaves out a blob written inside the tree it packs', async () => {
    const tree = join(work, 'self')
    mkdirSync(tree)
    writeFileSync(join(tree, 'f'), 'f')
    const blob = await new LayerWriter({compression: 'none'}).addTree(tree).write(join(tree, 'layer.tar'))
    const names = (await readTar(readFileSync(join(tree, 'layer.tar')))).map((e) => e.header.name)
    expect(names).toEqual(['f'])
    expect(blob.entries).toBe(1)
  })

  it('refuses a whiteout next to the file it deletes, and a tree root that is not a directory', async () => {
    const tree = join(work, 'wh-tree')
    mkdirSync(join(tree, 'etc'), {recursive: true})
    writeFileSync(join(tree, 'etc/a.conf'), '')
    writeFileSync(join(tree, 'etc/.wh.a.conf'), '')
    await expect(new LayerWriter().addTree(tree, {at: 'root'}).write(join(work, 'wh.tgz'))).rejects.toThrow(
      'layer both deletes and adds "root/etc/a.conf"',
    )
    expect(existsSync(join(work, 'wh.tgz'))).toBe(false)
    expect(() => new LayerWriter().addTree(join(tree, 'etc/a.conf'))).toThrow(/not a directory/)
  })

  it('deflates a small layer on this thread and a large one on workers', async () => {
    const small = join(work, 'small-tree')
    mkdirSync(small)
    writeFileSync(join(small, 'f'), 'small')
    const blob = await new LayerWriter({threads: 2}).addTree(small).write(join(work, 'small.tgz'))
    expect(blob.compressor).toContain('0 worker threads')
    const big = join(work, 'big-tree')
    mkdirSync(big)
    writeFileSync(join(big, 'r'), randomBytes(6 * 1024 * 1024))
    const large = await new LayerWriter({threads: 2}).addTree(big).write(join(work, 'big.tgz'))
    expect(large.compressor).toContain('2 worker threads')
    execFileSync('gzip', ['-t', join(work, 'big.tgz')])
  })
})

describe('tar headers', () => {
  /** ustar as the string-built encoder wrote it before headers were written in place. */
  function referenceUstar(h: TarHeader): Buffer {
    const block = Buffer.alloc(512)
    const octal = (offset: number, width: number, value: number) =>
      block.write(`${value.toString(8).padStart(width - 1, '0')}\u0000`, offset, width, 'latin1')
    const name = h.type === 'directory' ? `${h.path}/` : h.path
    const slash = name.length > 100 ? name.indexOf('/', name.length - 101) : -1
    block.write(slash === -1 ? name : name.slice(slash + 1), 0, 100, 'latin1')
    octal(100, 8, h.mode)
    octal(108, 8, h.uid)
    octal(116, 8, h.gid)
    octal(124, 12, h.size)
    octal(136, 12, h.mtime)
    block.fill(0x20, 148, 156)
    block.write({file: '0', hardlink: '1', symlink: '2', directory: '5'}[h.type], 156, 1, 'latin1')
    block.write(h.linkname ?? '', 157, 100, 'latin1')
    block.write('ustar\u000000', 257, 8, 'latin1')
    octal(329, 8, 0)
    octal(337, 8, 0)
    if (slash !== -1) block.write(name.slice(0, slash), 345, 155, 'latin1')
    let sum = 0
    for (const byte of block) sum += byte
    block.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'latin1')
    return block
  }

  it('are the ustar bytes the field-by-field encoding gives, checksum included', () => {
    const types = ['file', 'directory', 'symlink', 'hardlink'] as const
    for (let i = 0; i < 300; i++) {
      const type = types[i % 4]!
      const header: TarHeader = {
        path: i % 5 === 0 ? `dir${i}/${'p'.repeat(60)}/${'q'.repeat(40 + (i % 50))}` : `dir${i}/${'n'.repeat(i % 94)}`,
        type,
        mode: (i * 2654435761) % 0o10000,
        uid: (i * 7919) % 0o7777777,
        gid: i % 3 === 0 ? 0 : 0o7777777,
        size: type === 'file' ? i * 104729 + (i === 299 ? 0o77777777000 : 0) : 0,
        mtime: (i * 1_700_000_017) % 0o77777777777,
        ...(type === 'symlink' || type === 'hardlink' ? {linkname: `target/${'l'.repeat(i % 90)}`} : {}),
      }
      const encoded = encodeTarHeader(header)
      expect(encoded.length, 'no PAX entry: the fields fit ustar').toBe(512)
      expect(encoded.equals(referenceUstar(header)), JSON.stringify(header)).toBe(true)
    }
  })
})

describe('LayerWriter output', () => {
  it('writes the same bytes to a stream as to a file, and fails cleanly when the stream fails', async () => {
    const tree = join(work, 'streamed')
    makeTree(tree)
    const chunks: Buffer[] = []
    const sink = new Writable({
      highWaterMark: 16,
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk)
        setImmediate(done) // slow consumer: exercises backpressure
      },
    })
    const streamed = await new LayerWriter().addTree(tree).write(sink)
    const filed = await new LayerWriter().addTree(tree).write(join(work, 'streamed.tgz'))
    expect(streamed.digest).toBe(filed.digest)
    expect(Buffer.concat(chunks).equals(readFileSync(join(work, 'streamed.tgz')))).toBe(true)

    const broken = new Writable({write: (_chunk, _encoding, done) => done(new Error('disk full'))})
    await expect(new LayerWriter().addTree(tree).write(broken)).rejects.toThrow(/cannot write the layer: disk full/)
  })

  it('removes a partly written file when a source file cannot be read', async () => {
    const target = join(work, 'partial.tgz')
    const source = join(work, 'soon-gone')
    writeFileSync(source, Buffer.alloc(5 * 1024 * 1024, 1))
    const writer = new LayerWriter().addFile('first', Buffer.from('written before the failure')).addFile('gone', source)
    execFileSync('rm', [source])
    await expect(writer.write(target)).rejects.toThrow(/cannot read ".*soon-gone"/)
    expect(existsSync(target)).toBe(false)
  })
})

describe('parallel gzip pieces', () => {
  it('combines CRC-32s like zlib computes them over the whole', () => {
    const a = randomBytes(5000)
    const b = randomBytes(70_000)
    expect(crc32Combine(zlib.crc32(a), zlib.crc32(b), b.length)).toBe(zlib.crc32(Buffer.concat([a, b])))
    expect(crc32Combine(zlib.crc32(a), zlib.crc32(Buffer.alloc(0)), 0)).toBe(zlib.crc32(a))
  })

  it('produces one gzip member that gunzip reads, even with an empty last block', async () => {
    const chunks: Buffer[] = []
    const gzip = new ParallelGzip({threads: 2, output: (c) => void chunks.push(c)})
    const block = Buffer.alloc(1024 * 1024, 'ab')
    await gzip.push(Buffer.from(block))
    await gzip.end(Buffer.alloc(0))
    const out = Buffer.concat(chunks)
    expect(zlib.gunzipSync(out).equals(block)).toBe(true)
    // One member: its trailer counts every input byte (a second member would count only its own).
    expect(out.readUInt32LE(out.length - 4)).toBe(block.length)
    expect(out.readUInt32LE(out.length - 8)).toBe(zlib.crc32(block))
  })

  it('reads SOURCE_DATE_EPOCH strictly', () => {
    expect(sourceDateEpochFrom({SOURCE_DATE_EPOCH: '1700000000'})).toBe(1_700_000_000)
    expect(sourceDateEpochFrom({})).toBeUndefined()
    expect(() => sourceDateEpochFrom({SOURCE_DATE_EPOCH: 'yesterday'})).toThrow(AegisError)
  })
})
