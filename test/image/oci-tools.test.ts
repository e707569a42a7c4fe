/**
 * Our layers as real OCI tools read them: umoci applies a two-layer image with whiteouts,
 * skopeo decompresses the layers (Go's gzip) to exactly our diffIds, and our own unpacker
 * gives the same tree as umoci.
 */
import {execFileSync} from 'node:child_process'
import {createReadStream, existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync} from 'node:fs'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'

import {LayerWriter, type LayerBlob} from '../../src/image/layer-writer.js'
import {unpackImage} from '../../src/image/unpack.js'
import {hasProgram, removeDir, tempDir, writeOciLayout} from './helpers.js'

const haveTools = hasProgram('umoci') && hasProgram('skopeo')
let work: string
let layout: string
let layers: LayerBlob[]

/** Files under `dir` as sorted relative paths (dirs end in '/'), symlinks as 'p -> target'. */
function listTree(dir: string, prefix = ''): string[] {
  const out: string[] = []
  for (const entry of readdirSync(join(dir, prefix), {withFileTypes: true})) {
    const rel = prefix === '' ? entry.name : `${prefix}/${entry.name}`
    if (entry.isDirectory()) out.push(`${rel}/`, ...listTree(dir, rel))
    else if (entry.isSymbolicLink())
      out.push(`${rel} -> ${execFileSync('readlink', [join(dir, rel)], {encoding: 'utf8'}).trim()}`)
    else out.push(rel)
  }
  return out.sort()
}

beforeAll(async () => {
  work = tempDir('oci-tools')
  const base = join(work, 'base')
  mkdirSync(join(base, 'etc'), {recursive: true})
  mkdirSync(join(base, 'opt/cache/sub'), {recursive: true})
  writeFileSync(join(base, 'etc/keep.conf'), 'keep\n')
  writeFileSync(join(base, 'etc/remove.conf'), 'remove\n')
  writeFileSync(join(base, 'opt/cache/old-a'), 'a')
  writeFileSync(join(base, 'opt/cache/sub/old-b'), 'b')
  execFileSync('ln', [join(base, 'etc/keep.conf'), join(base, 'etc/keep-hardlink')])
  execFileSync('ln', ['-s', 'keep.conf', join(base, 'etc/keep-symlink')])
  const first = await new LayerWriter().addTree(base).write(join(work, 'layer1'))
  const second = await new LayerWriter({compression: 'gzip'})
    .addWhiteout('etc/remove.conf')
    .addOpaqueDirectory('opt/cache')
    .addFile('opt/cache/new', Buffer.from('new\n'))
    .addFile('etc/added.conf', Buffer.from('added\n'), {mode: 0o600})
    .write(join(work, 'layer2'))
  layers = [first, second]
  layout = join(work, 'layout')
  writeOciLayout(layout, [
    {blob: first, file: join(work, 'layer1')},
    {blob: second, file: join(work, 'layer2')},
  ])
})
afterAll(() => removeDir(work))

const expectedTree = [
  'etc/',
  'etc/added.conf',
  'etc/keep-hardlink',
  'etc/keep-symlink -> keep.conf',
  'etc/keep.conf',
  'opt/',
  'opt/cache/',
  'opt/cache/new',
]

describe.skipIf(!haveTools)('layers read by umoci and skopeo', () => {
  it('umoci unpack applies whiteouts and opaque directories from layer 2', () => {
    const bundle = join(work, 'bundle')
    execFileSync('umoci', ['unpack', '--rootless', '--image', `${layout}:latest`, bundle], {stdio: 'pipe'})
    const rootfs = join(bundle, 'rootfs')
    expect(listTree(rootfs)).toEqual(expectedTree)
    expect(readFileSync(join(rootfs, 'opt/cache/new'), 'utf8')).toBe('new\n')
    const keep = execFileSync('stat', ['-c', '%i %h', join(rootfs, 'etc/keep.conf')], {encoding: 'utf8'})
    const link = execFileSync('stat', ['-c', '%i %h', join(rootfs, 'etc/keep-hardlink')], {encoding: 'utf8'})
    expect(link).toBe(keep)
    expect(keep.trim().endsWith(' 2')).toBe(true)
  })

  it('unpackImage gives the same tree as umoci', async () => {
    const dest = join(work, 'ours')
    const blobs = join(layout, 'blobs/sha256')
    const results = await unpackImage(
      layers.map((l) => () => createReadStream(join(blobs, l.digest.slice(7)))),
      dest,
      {diffIds: layers.map((l) => l.diffId)},
    )
    expect(results.map((r) => r.diffId)).toEqual(layers.map((l) => l.diffId))
    expect(listTree(dest)).toEqual(expectedTree)
    expect(execFileSync('stat', ['-c', '%a', join(dest, 'etc/added.conf')], {encoding: 'utf8'}).trim()).toBe('600')
  })

  it('skopeo (Go gzip) decompresses every layer to exactly its diffId', () => {
    const out = join(work, 'skopeo-dir')
    execFileSync('skopeo', ['--insecure-policy', 'copy', '--dest-decompress', `oci:${layout}:latest`, `dir:${out}`], {
      stdio: 'pipe',
    })
    for (const layer of layers) expect(existsSync(join(out, layer.diffId.slice(7)))).toBe(true)
  })
})
