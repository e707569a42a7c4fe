import {createHash} from 'node:crypto'
import {cp, readFile, rm, stat, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {Readable} from 'node:stream'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {AegisError} from '../../src/errors.js'
import {MediaType} from '../../src/oci/media-types.js'
import type {Descriptor} from '../../src/oci/types.js'
import {defaultStoreRoot, LocalStore} from '../../src/store/index.js'
import {blobNames, makeUmociImage, readFileFromImage, removeTempDirs, run, tempDir, tempFiles} from './helpers.js'

function descriptorOf(data: Buffer, mediaType: string = MediaType.LayerTar): Descriptor {
  return {mediaType, digest: `sha256:${createHash('sha256').update(data).digest('hex')}`, size: data.length}
}

let source: string

beforeAll(async () => {
  source = join(await tempDir('layout-'), 'openclaw')
  await makeUmociImage(source, '1.0.0', {run: '#!/bin/sh\necho one\n', 'version.txt': '1.0.0\n'})
  await makeUmociImage(source, '1.1.0', {run: '#!/bin/sh\necho two\n', 'version.txt': '1.1.0\n'})
})
afterAll(removeTempDirs)

describe('LocalStore with images built by umoci', () => {
  it('imports a layout tag, lists it, and skopeo and umoci read the store as oci:ROOT:NAME:TAG', async () => {
    const root = await tempDir('store-')
    const store = new LocalStore(root)
    const imported = await store.importOciLayout(source, '1.0.0')
    expect(imported).toEqual([{name: 'openclaw', tag: '1.0.0', digest: expect.stringMatching(/^sha256:/)}])

    const [entry, ...rest] = await store.list()
    expect(rest).toEqual([])
    expect(entry).toMatchObject({
      name: 'openclaw',
      tag: '1.0.0',
      digest: imported[0]?.digest,
      platforms: ['linux/amd64'],
    })
    expect(entry?.created).toMatch(/^\d{4}-/)

    const skopeo = JSON.parse(await run('skopeo', ['inspect', `oci:${root}:openclaw:1.0.0`])) as {
      Digest: string
      Layers: string[]
    }
    expect(skopeo.Digest).toBe(imported[0]?.digest)
    // size = manifest + config + layers, each counted by the bytes on disk
    const manifest = JSON.parse(await readFile(join(root, 'blobs', 'sha256', skopeo.Digest.slice(7)), 'utf8')) as {
      config: Descriptor
      layers: Descriptor[]
    }
    const manifestSize = (await readFile(join(root, 'blobs', 'sha256', skopeo.Digest.slice(7)))).length
    expect(entry?.size).toBe(manifestSize + manifest.config.size + manifest.layers.reduce((s, l) => s + l.size, 0))

    expect(await run('umoci', ['stat', '--image', `${root}:openclaw:1.0.0`])).toContain('umoci insert')
    expect(await readFileFromImage(root, 'openclaw:1.0.0', 'version.txt')).toBe('1.0.0\n')
    const index = JSON.parse(await readFile(join(root, 'index.json'), 'utf8')) as {manifests: Descriptor[]}
    expect(index.manifests[0]?.annotations).toEqual({'org.opencontainers.image.ref.name': 'openclaw:1.0.0'})
  })

  it('imports every tag of a layout, renames with `as`, and resolves name, name:tag and digests', async () => {
    const store = new LocalStore(await tempDir('store-'))
    const all = await store.importOciLayout(source)
    expect(all.map((image) => `${image.name}:${image.tag}`).sort()).toEqual(['openclaw:1.0.0', 'openclaw:1.1.0'])
    await store.importOciLayout(source, '1.1.0', {as: 'ghcr.io/acme/openclaw'})
    await store.importOciLayout(source, '1.0.0', {as: 'localhost:5000/openclaw:latest'})

    const listed = (await store.list()).map((entry) => `${entry.name}:${entry.tag}`)
    expect(listed).toEqual([
      'ghcr.io/acme/openclaw:1.1.0',
      'localhost:5000/openclaw:latest',
      'openclaw:1.0.0',
      'openclaw:1.1.0',
    ])

    const byTag = await store.resolve('openclaw:1.1.0')
    expect(await store.resolve('ghcr.io/acme/openclaw:1.1.0')).toEqual(byTag)
    expect(await store.resolve(byTag.digest)).toEqual(byTag)
    expect(await store.resolve(`openclaw@${byTag.digest}`)).toEqual(byTag)
    expect((await store.resolve('localhost:5000/openclaw')).digest).toBe((await store.resolve('openclaw:1.0.0')).digest)
    expect(byTag.annotations).toBeUndefined()

    const inspected = await store.inspect('openclaw:1.1.0')
    expect(inspected.kind).toBe('manifest')
    expect(inspected.tags.sort()).toEqual(['ghcr.io/acme/openclaw:1.1.0', 'openclaw:1.1.0'])
    expect(inspected.images).toHaveLength(1)
    expect(inspected.images[0]?.config?.config?.Cmd).toEqual(['/app/run'])
    expect(inspected.images[0]?.layers).toHaveLength(1)
  })

  it('explains an unknown reference with the store location and the tags that exist', async () => {
    const root = await tempDir('store-')
    const store = new LocalStore(root)
    await store.importOciLayout(source, '1.0.0')
    const error = await store.resolve('openclaw:9.9').catch((e: unknown) => e)
    expect(error).toBeInstanceOf(AegisError)
    expect((error as AegisError).message).toBe(`no image openclaw:9.9 in the store at ${root}`)
    expect((error as AegisError).hint).toContain('openclaw:1.0.0')
    // a referrers tag (an SBOM's `sha256-<hex>`) is not an image a user would ask for
    const image = await store.resolve('openclaw:1.0.0')
    await store.tag(image, `openclaw:sha256-${image.digest.slice(7)}`)
    const hint = ((await store.resolve('openclaw:9.9').catch((e: unknown) => e)) as AegisError).hint
    expect(hint).toBe('openclaw has the tags 1.0.0, e.g. openclaw:1.0.0')
    await expect(store.resolve('nothing')).rejects.toThrow('no image nothing:latest')
    await expect(store.resolve('Bad Name')).rejects.toThrow('invalid image reference')
    await expect(store.remove('openclaw:9.9')).rejects.toBeInstanceOf(AegisError)

    const kitHome = await tempDir('kit-home-')
    const saved = process.env.AEGIS_KIT_HOME
    process.env.AEGIS_KIT_HOME = kitHome
    try {
      await expect(new LocalStore(defaultStoreRoot()).resolve('openclaw:9.9')).rejects.toThrow(
        `no image openclaw:9.9 in the store (AEGIS_KIT_HOME=${kitHome})`,
      )
    } finally {
      if (saved === undefined) delete process.env.AEGIS_KIT_HOME
      else process.env.AEGIS_KIT_HOME = saved
    }
  })

  it('removes tags, and prune frees only blobs no tag reaches', async () => {
    const root = await tempDir('store-')
    const store = new LocalStore(root)
    await store.importOciLayout(source)
    const before = await blobNames(root)
    // 2 images: each has its own manifest, config and layer; umoci's empty base shares nothing
    expect(before).toHaveLength(6)

    expect(await store.prune()).toEqual({blobs: [], tempFiles: [], tempDirs: [], kept: [], bytesFreed: 0})
    const removed = await store.remove('openclaw:1.0.0')
    expect(removed).toEqual([{name: 'openclaw', tag: '1.0.0', digest: expect.stringMatching(/^sha256:/)}])
    expect(await blobNames(root)).toEqual(before) // remove only untags

    const pruned = await store.prune()
    expect(pruned.blobs).toHaveLength(3)
    expect(pruned.bytesFreed).toBe(pruned.blobs.reduce((sum, blob) => sum + blob.size, 0))
    expect(await blobNames(root)).toHaveLength(3)
    // what is left is still a complete, readable image
    expect(await readFileFromImage(root, 'openclaw:1.1.0', 'version.txt')).toBe('1.1.0\n')
    await expect(store.resolve('openclaw:1.0.0')).rejects.toBeInstanceOf(AegisError)
  })

  it('a layout import that fails halfway (missing or corrupt layer) sets no tag and leaves no partial blob', async () => {
    const broken = join(await tempDir('broken-'), 'layout')
    await cp(source, broken, {recursive: true})
    const probe = new LocalStore(await tempDir('store-'))
    expect(await probe.importOciLayout(broken, '1.0.0')).toMatchObject([{name: 'layout', tag: '1.0.0'}]) // bare tag: named after the dir
    const layer = (await probe.inspect('layout:1.0.0')).images[0]?.layers[0]
    if (!layer) throw new Error('no layer')
    const layerPath = join(broken, 'blobs', 'sha256', layer.digest.slice(7))
    const fresh = new LocalStore(await tempDir('store-'))

    const original = await readFile(layerPath)
    await writeFile(layerPath, Buffer.from(original).fill(0, 0, 16)) // same size, different bytes
    await expect(fresh.importOciLayout(broken, '1.0.0')).rejects.toThrow(/does not match digest/)
    expect(await fresh.list()).toEqual([])
    expect(await blobNames(fresh.root)).not.toContain(layer.digest.slice(7))
    expect(await tempFiles(fresh.root)).toEqual([])

    await rm(layerPath)
    await expect(fresh.importOciLayout(broken, '1.0.0')).rejects.toThrow(/is incomplete: blob sha256:\w+ .* is missing/)
    expect(await fresh.list()).toEqual([])
    await expect(fresh.importOciLayout(join(broken, 'nope'))).rejects.toThrow(
      /is not an OCI image layout: oci-layout is missing/,
    )
  })

  it('refuses a tag whose children are missing', async () => {
    const root = await tempDir('store-')
    const store = new LocalStore(root)
    const config = Buffer.from(
      JSON.stringify({architecture: 'amd64', os: 'linux', rootfs: {type: 'layers', diff_ids: []}}),
    )
    const configDesc = descriptorOf(config, MediaType.ImageConfig)
    const layerDesc = descriptorOf(Buffer.from('not stored'), MediaType.LayerTar)
    const manifest = Buffer.from(
      JSON.stringify({schemaVersion: 2, mediaType: MediaType.ImageManifest, config: configDesc, layers: [layerDesc]}),
    )
    const manifestDesc = descriptorOf(manifest, MediaType.ImageManifest)
    await store.push(configDesc, config)
    await store.push(manifestDesc, manifest)
    await expect(store.tag(manifestDesc, 'partial:1')).rejects.toThrow(
      /cannot tag partial:1: 1 of its blobs are not in the store/,
    )
    expect(await store.list()).toEqual([])
    await store.push(layerDesc, Buffer.from('not stored'))
    await store.tag(manifestDesc, 'partial:1')
    expect((await store.list()).map((entry) => entry.tag)).toEqual(['1'])
    await expect(store.tag({...manifestDesc, digest: `sha256:${'0'.repeat(64)}`}, 'x')).rejects.toThrow(
      /not in the store/,
    )
  })
})

describe('LocalStore.push verifies content before it becomes visible', () => {
  it('rejects a wrong digest, a short stream and a long stream, leaving nothing behind', async () => {
    const root = await tempDir('store-')
    const store = new LocalStore(root)
    const data = Buffer.alloc(200_000, 7)
    const desc = descriptorOf(data)
    const wrong = {...desc, digest: descriptorOf(Buffer.from('other')).digest}
    await expect(store.push(wrong, Readable.from([data]))).rejects.toThrow(/does not match digest/)
    await expect(store.push(desc, Readable.from([data.subarray(0, 1000)]))).rejects.toThrow(
      /wrong size: 1000 bytes, expected 200000/,
    )
    await expect(store.push(desc, Readable.from([data, Buffer.from('x')]))).rejects.toThrow(/wrong size: more than/)
    await expect(store.push({...desc, digest: 'sha256:../../etc/passwd'}, data)).rejects.toThrow(/invalid digest/)
    await expect(store.push({...desc, digest: `sha512:${'a'.repeat(128)}`}, data)).rejects.toThrow(/only holds sha256/)
    expect(await blobNames(root)).toEqual([])
    expect(await tempFiles(root)).toEqual([])

    await store.push(desc, Readable.from([data.subarray(0, 5), data.subarray(5)]))
    expect(await blobNames(root)).toEqual([desc.digest.slice(7)])
    expect(await store.exists(desc)).toBe(true)
    expect(await store.exists({...desc, size: 1})).toBe(false)
    const chunks: Buffer[] = []
    for await (const chunk of await store.fetch(desc)) chunks.push(chunk as Buffer)
    expect(Buffer.concat(chunks).equals(data)).toBe(true)
    await expect(store.fetch(wrong)).rejects.toThrow(/is not in the store/)
  })
})

describe('LocalStore.setTags', () => {
  it('leaves index.json untouched when every tag already points there, and rewrites it when one moves', async () => {
    const root = await tempDir('store-')
    const store = new LocalStore(root)
    await store.importOciLayout(source)
    const one = await store.resolve('openclaw:1.0.0')
    const two = await store.resolve('openclaw:1.1.0')
    const before = await stat(join(root, 'index.json'))
    await store.setTags([
      {desc: one, reference: 'openclaw:1.0.0'},
      {desc: two, reference: 'openclaw:1.1.0'},
    ])
    const same = await stat(join(root, 'index.json'))
    // A rewrite is a temp file renamed over index.json: a new inode.
    expect([same.ino, same.mtimeMs]).toEqual([before.ino, before.mtimeMs])

    await store.setTags([
      {desc: one, reference: 'openclaw:1.0.0'},
      {desc: one, reference: 'openclaw:1.1.0'},
    ])
    expect((await stat(join(root, 'index.json'))).ino).not.toBe(before.ino)
    expect((await store.resolve('openclaw:1.1.0')).digest).toBe(one.digest)
  })
})
