/**
 * `aegis-kit images` against the local store only: import what umoci made, list, inspect, export
 * in both formats (read back by skopeo), remove and prune, through the built CLI.
 */
import {readdir} from 'node:fs/promises'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {hasStackTrace} from '../helpers/cli.js'
import {createSandbox, makeUmociImage, skopeo, type CliSandbox} from './helpers.js'

interface ListedImage {
  name: string
  tag: string
  digest: string
  size: number
  platforms: string[]
  created?: string
}

let sandbox: CliSandbox
let layout: string

beforeAll(async () => {
  sandbox = await createSandbox()
  layout = await makeUmociImage(sandbox.dir, 'umoci-image', {tag: '1.0', layers: 3})
})
afterAll(() => sandbox?.cleanup())

async function blobCount(): Promise<number> {
  return (await readdir(join(sandbox.env.AEGIS_KIT_HOME, 'store/blobs/sha256'))).length
}

describe('images import, list and inspect', () => {
  it('imports an umoci layout under --tag and lists it', async () => {
    const imported = await sandbox.run(['images', 'import', `oci-layout:${layout}:1.0`, '--tag', 'demo:1.0'])
    expect(imported.exitCode, imported.all).toBe(0)
    expect(imported.stdout).toMatch(/^Imported demo:1\.0 \(sha256:[0-9a-f]{12}\)$/m)

    const table = await sandbox.run(['images'])
    expect(table.exitCode).toBe(0)
    const [header, row] = table.stdout.split('\n')
    expect(header).toMatch(/^NAME\s+TAG\s+DIGEST\s+SIZE\s+PLATFORMS\s+CREATED$/)
    expect(row).toMatch(/^demo\s+1\.0\s+sha256:[0-9a-f]{12}\s+\d+ kB\s+linux\/amd64\s+(just now|\d+ \w+ ago)$/)
  })

  it('--json lists full digests and sizes and prints nothing else', async () => {
    const {images} = await sandbox.json<{images: ListedImage[]}>(['images'])
    expect(images).toHaveLength(1)
    expect(images[0]).toMatchObject({name: 'demo', tag: '1.0', platforms: ['linux/amd64']})
    expect(images[0]!.digest).toMatch(/^sha256:[0-9a-f]{64}$/)
    expect(images[0]!.size).toBeGreaterThan(3 * 96 * 1024)
  })

  it('inspects by tag and by digest', async () => {
    const text = await sandbox.run(['images', 'inspect', 'demo:1.0'])
    expect(text.exitCode).toBe(0)
    expect(text.stdout).toContain('Tags:       demo:1.0')
    expect(text.stdout).toMatch(/layers {6}3, /)
    expect(text.stdout).toContain('cmd         ["/bin/true"]')

    const byTag = await sandbox.json<{
      descriptor: {digest: string}
      tags: string[]
      images: Array<{layers: unknown[]}>
    }>(['images', 'inspect', 'demo:1.0'])
    const byDigest = await sandbox.json<{tags: string[]}>(['images', 'inspect', byTag.descriptor.digest])
    expect(byTag.images[0]!.layers).toHaveLength(3)
    expect(byDigest.tags).toEqual(['demo:1.0'])
  })

  it('a bad or unknown reference is a one-line error without a stack trace', async () => {
    for (const args of [
      ['images', 'inspect', 'Not A Ref'],
      ['images', 'inspect', 'nothing:here'],
      ['images', 'import', 'docker://x'],
      ['images', 'push', 'demo:1.0', 'UPPER//case'],
    ]) {
      const result = await sandbox.run(args)
      expect(result.exitCode, args.join(' ')).toBe(1)
      expect(result.stdout).toBe('')
      expect(result.stderr.split('\n')[0]).toMatch(/^Error: /)
      expect(result.stderr.trim().split('\n').length).toBeLessThanOrEqual(2) // the message and one hint
      expect(hasStackTrace(result.all)).toBe(false)
    }
    const json = await sandbox.run(['images', 'inspect', 'nothing:here', '--json'])
    expect(JSON.parse(json.stdout)).toMatchObject({error: {message: expect.stringContaining('no image nothing:here')}})
  })
})

describe('images export', () => {
  it('writes a docker-archive that skopeo reads', async () => {
    const file = join(sandbox.dir, 'demo-docker.tar')
    const result = await sandbox.json<{digest: string; file: string}>([
      'images',
      'export',
      'demo:1.0',
      '--format',
      'docker-archive',
      '-o',
      file,
    ])
    expect(result.file).toBe(file)
    const inspected = JSON.parse(await skopeo('inspect', `docker-archive:${file}`)) as {
      Layers: string[]
      Architecture: string
      RepoTags?: string[]
    }
    expect(inspected.Layers).toHaveLength(3)
    expect(inspected.Architecture).toBe('amd64')
  })

  it('writes an oci-archive that imports again under another name', async () => {
    const file = join(sandbox.dir, 'demo-oci.tar')
    const exported = await sandbox.json<{digest: string}>([
      'images',
      'export',
      'demo:1.0',
      '--format',
      'oci-archive',
      '-o',
      file,
    ])
    const imported = await sandbox.json<{imported: Array<{name: string; tag: string; digest: string}>}>([
      'images',
      'import',
      `oci-archive:${file}`,
      '--tag',
      'copy:2.0',
    ])
    expect(imported.imported).toEqual([{name: 'copy', tag: '2.0', digest: exported.digest}])
  })
})

describe('images rm and prune', () => {
  it('rm drops the tag, prune frees the blobs only once no tag reaches them', async () => {
    const before = await blobCount()
    const removed = await sandbox.json<{removed: Array<{name: string; tag: string}>}>(['images', 'rm', 'demo:1.0'])
    expect(removed.removed).toMatchObject([{name: 'demo', tag: '1.0'}])
    // copy:2.0 is the same image: nothing may go yet.
    const kept = await sandbox.json<{blobs: unknown[]; bytesFreed: number}>(['images', 'prune'])
    expect(kept.blobs).toHaveLength(0)
    expect(await blobCount()).toBe(before)

    expect((await sandbox.run(['images', 'rm', 'copy:2.0'])).stdout).toMatch(
      /^Untagged copy:2\.0 \(sha256:[0-9a-f]{12}\)$/m,
    )
    const pruned = await sandbox.run(['images', 'prune'])
    expect(pruned.exitCode).toBe(0)
    expect(pruned.stdout).toMatch(/^Deleted 5 blobs, freed \d+ kB\.$/m) // manifest, config, three layers
    expect(await blobCount()).toBe(0)
    expect((await sandbox.json<{images: unknown[]}>(['images'])).images).toEqual([])
  })

  it('rm of an unknown tag fails clearly', async () => {
    const result = await sandbox.run(['images', 'rm', 'demo:1.0'])
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(/^Error: no image demo:1\.0 in the store/)
  })
})
