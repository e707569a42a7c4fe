/**
 * The store under real concurrency and crashes: child processes race on index.json, and a child
 * killed mid-write or while holding the lock must leave a store the next command can use.
 */
import {type ChildProcess, spawn} from 'node:child_process'
import {createHash} from 'node:crypto'
import {readFile, stat, writeFile} from 'node:fs/promises'
import {dirname, join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {AegisError} from '../../src/errors.js'
import {MediaType} from '../../src/oci/media-types.js'
import type {Descriptor} from '../../src/oci/types.js'
import {LocalStore} from '../../src/store/index.js'
import {withFileLock} from '../../src/file-lock.js'
import {waitFor} from '../helpers/wait.js'
import {blobNames, compiledStoreModule, makeUmociImage, removeTempDirs, run, tempDir, tempFiles} from './helpers.js'

let storeModule: string
let scripts: string

beforeAll(async () => {
  storeModule = await compiledStoreModule()
  scripts = await tempDir('scripts-')
  // Tags COUNT images as race:<prefix>-<i> once the `go` file appears.
  await writeFile(
    join(scripts, 'tag-racer.mjs'),
    `
    import {existsSync} from 'node:fs'
    const [module, root, prefix, count, descJson, go] = process.argv.slice(2)
    const {LocalStore} = await import(module)
    const store = new LocalStore(root)
    console.log('ready')
    while (!existsSync(go)) await new Promise((r) => setTimeout(r, 2))
    for (let i = 0; i < Number(count); i++) await store.tag(JSON.parse(descJson), 'race:' + prefix + '-' + i)
    await store.tag(JSON.parse(descJson), 'race:shared')
  `,
  )
  // Pushes a 256 MiB blob slowly, so the parent can kill it halfway.
  await writeFile(
    join(scripts, 'slow-push.mjs'),
    `
    import {Readable} from 'node:stream'
    const [module, root] = process.argv.slice(2)
    const {LocalStore} = await import(module)
    const chunk = Buffer.alloc(1 << 20, 1)
    async function* slowly() { for (let i = 0; i < 256; i++) { yield chunk; await new Promise((r) => setTimeout(r, 10)) } }
    await new LocalStore(root).push({mediaType: 'application/octet-stream', digest: 'sha256:' + 'a'.repeat(64), size: 256 << 20}, Readable.from(slowly()))
  `,
  )
  // Takes the store lock and never lets go.
  await writeFile(
    join(scripts, 'hold-lock.mjs'),
    `
    const [module, lockPath] = process.argv.slice(2)
    const {withFileLock} = await import(module.replace(/store\\/index\\.js$/, 'file-lock.js'))
    await withFileLock(lockPath, () => { console.log('locked'); return new Promise(() => {}) })
  `,
  )
})
afterAll(removeTempDirs)

function startChild(
  script: string,
  args: string[],
): {child: ChildProcess; output: () => string; exited: Promise<number | null>} {
  const child = spawn(process.execPath, [join(scripts, script), storeModule, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  child.stdout?.on('data', (data: Buffer) => (output += data.toString()))
  child.stderr?.on('data', (data: Buffer) => (output += data.toString()))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  return {child, output: () => output, exited}
}

describe('concurrent commands', () => {
  it('two processes tagging 100 images each at once lose no tag and leave valid JSON', async () => {
    const layout = join(await tempDir('race-src-'), 'app')
    await makeUmociImage(layout, '1', {run: 'one'})
    const root = join(await tempDir('race-'), 'store')
    const store = new LocalStore(root)
    await store.importOciLayout(layout, '1', {as: 'race:seed'})
    const desc = await store.resolve('race:seed')
    const go = join(dirname(root), 'go')
    const racers = ['a', 'b'].map((prefix) =>
      startChild('tag-racer.mjs', [root, prefix, '100', JSON.stringify(desc), go]),
    )
    await waitFor('both racers to load', () => racers.every((r) => r.output().includes('ready')), 15_000, 10)
    await writeFile(go, '')
    const codes = await Promise.all(racers.map((r) => r.exited))
    expect(codes, racers.map((r) => r.output()).join('\n')).toEqual([0, 0])

    const index = JSON.parse(await readFile(join(root, 'index.json'), 'utf8')) as {manifests: Descriptor[]}
    const names = index.manifests.map((d) => d.annotations?.['org.opencontainers.image.ref.name'])
    expect(names).toHaveLength(202) // seed + shared + 2 x 100: the shared tag was replaced, not duplicated
    expect(new Set(names).size).toBe(202)
    expect((await store.list()).length).toBe(202)
    await expect(stat(join(root, 'index.json.lock'))).rejects.toThrow(/ENOENT/)
    expect(await tempFiles(root)).toEqual([])
    expect(JSON.parse(await run('skopeo', ['inspect', `oci:${root}:race:b-99`])).Digest).toBe(desc.digest)
  }, 180_000) // 202 index rewrites, each fsynced, on a disk a parallel test may be loading

  it('waits for a live lock holder and reports who holds it', async () => {
    const lockPath = join(await tempDir('lock-'), 'index.json.lock')
    let release = (): void => undefined
    const holding = withFileLock(lockPath, () => new Promise<void>((resolve) => (release = resolve)))
    // Its holder is written just after the file is made: wait for both.
    await waitFor(
      'the lock',
      async () => (await readFile(lockPath, 'utf8').catch(() => '')).startsWith(`${process.pid} `),
      15_000,
      10,
    )
    const error = await withFileLock(lockPath, async () => 'never', {timeoutMs: 200}).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(AegisError)
    expect((error as AegisError).message).toContain(`process ${process.pid} holds ${lockPath}`)
    release()
    await holding
    expect(await withFileLock(lockPath, async () => 'acquired')).toBe('acquired')
  })
})

describe('killed commands', () => {
  it('a process killed mid-write leaves no visible blob, and prune removes its temp file', async () => {
    const root = join(await tempDir('crash-'), 'store')
    const writer = startChild('slow-push.mjs', [root])
    const bigTemp = async (): Promise<boolean> => {
      for (const name of await tempFiles(root)) {
        if (name.endsWith('.blob') && (await stat(join(root, '.tmp', name))).size > 8 << 20) return true
      }
      return false
    }
    await waitFor('the child to write 8 MiB', bigTemp, 15_000, 10)
    writer.child.kill('SIGKILL')
    expect(await writer.exited).toBeNull()

    expect(await blobNames(root)).toEqual([])
    const leftovers = await tempFiles(root)
    expect(leftovers).toEqual([expect.stringMatching(new RegExp(`^${writer.child.pid}-.*\\.blob$`))])
    const pruned = await new LocalStore(root).prune()
    expect(pruned.tempFiles.map((file) => file.path)).toEqual([join(root, '.tmp', leftovers[0] as string)])
    expect(pruned.bytesFreed).toBeGreaterThan(8 << 20)
    expect(await tempFiles(root)).toEqual([])
  })

  it('a lock left by a killed process is broken by the next command', async () => {
    const root = join(await tempDir('stale-'), 'store')
    const store = new LocalStore(root)
    const data = Buffer.from('layer')
    const config = Buffer.from('{}')
    const configDesc = {mediaType: MediaType.Empty, digest: sha256(config), size: config.length}
    const layerDesc = {mediaType: MediaType.LayerTar, digest: sha256(data), size: data.length}
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ImageManifest,
        artifactType: 'application/x-test',
        config: configDesc,
        layers: [layerDesc],
      }),
    )
    const manifestDesc = {mediaType: MediaType.ImageManifest, digest: sha256(manifest), size: manifest.length}
    for (const [desc, bytes] of [
      [configDesc, config],
      [layerDesc, data],
      [manifestDesc, manifest],
    ] as const)
      await store.push(desc, bytes)

    const holder = startChild('hold-lock.mjs', [join(root, 'index.json.lock')])
    await waitFor('the child to take the lock', () => holder.output().includes('locked'), 15_000, 10)
    holder.child.kill('SIGKILL')
    await holder.exited
    expect((await readFile(join(root, 'index.json.lock'), 'utf8')).split(' ')[0]).toBe(String(holder.child.pid))

    // A lock still taken would make tag() fail "busy" after its wait: succeeding proves it was broken.
    await store.tag(manifestDesc, 'artifact:1')
    expect((await store.list()).map((e) => `${e.name}:${e.tag}`)).toEqual(['artifact:1'])
    await expect(stat(join(root, 'index.json.lock'))).rejects.toThrow(/ENOENT/)
  })
})

describe('prune during an import', () => {
  it('keeps blobs written under a live write lease, and frees them once the lease ends untagged', async () => {
    const root = join(await tempDir('lease-'), 'store')
    const importer = new LocalStore(root)
    const pruner = new LocalStore(root)
    const data = Buffer.from('in flight')
    const desc = {mediaType: MediaType.LayerTar, digest: sha256(data), size: data.length}
    await importer.withWriteLease(async () => {
      await importer.push(desc, data)
      expect((await pruner.prune()).blobs).toEqual([])
      expect(await blobNames(root)).toEqual([desc.digest.slice(7)])
    })
    expect((await pruner.prune()).blobs).toEqual([{digest: desc.digest, size: data.length}])
    expect(await blobNames(root)).toEqual([])
  })
})

function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`
}
