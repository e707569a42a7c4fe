import {createHash} from 'node:crypto'
import {createWriteStream} from 'node:fs'
import {readdir, readFile, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {pipeline} from 'node:stream/promises'
import {gzipSync} from 'node:zlib'
import tar from 'tar-stream'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {AegisError} from '../../src/errors.js'
import {MediaType} from '../../src/oci/media-types.js'
import type {Descriptor} from '../../src/oci/types.js'
import {LocalStore} from '../../src/store/index.js'
import {blobNames, makeUmociImage, readFileFromImage, removeTempDirs, run, tempDir, tempFiles} from './helpers.js'

let layout: string
let store: LocalStore
let work: string

beforeAll(async () => {
  work = await tempDir('archives-')
  layout = join(work, 'app')
  await makeUmociImage(layout, '2.0', {run: '#!/bin/sh\necho hi\n', 'data/big.bin': 'x'.repeat(50_000)})
  store = new LocalStore(join(work, 'store'))
  await store.importOciLayout(layout, '2.0', {as: 'openclaw:2.0'})
})
afterAll(removeTempDirs)

type TarEntry = {
  name: string
  type?: 'file' | 'symlink' | 'link' | 'directory'
  body?: Buffer | string
  linkname?: string
}

/** Writes a hand-made tar, for archives no honest tool would produce. */
async function writeTar(file: string, entries: TarEntry[]): Promise<void> {
  const pack = tar.pack()
  const done = pipeline(pack, createWriteStream(file))
  for (const entry of entries) {
    const body = entry.body === undefined ? undefined : Buffer.from(entry.body)
    await new Promise<void>((resolve, reject) => {
      const header = {
        name: entry.name,
        type: entry.type ?? 'file',
        ...(entry.linkname ? {linkname: entry.linkname} : {}),
        size: body?.length ?? 0,
      }
      const cb = (error?: Error | null): void => (error ? reject(error) : resolve())
      if (body) pack.entry(header, body, cb)
      else pack.entry(header, cb)
    })
  }
  pack.finalize()
  await done
}

function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`
}

describe('OCI archives', () => {
  it('exports an archive skopeo reads, and imports it back into an empty store', async () => {
    const archive = join(work, 'openclaw.oci.tar')
    const desc = await store.exportOciArchive('openclaw:2.0', archive)
    const inspected = JSON.parse(await run('skopeo', ['inspect', `oci-archive:${archive}`])) as {Digest: string}
    expect(inspected.Digest).toBe(desc.digest)
    expect(await readdir(work)).not.toContainEqual(expect.stringContaining('.part'))

    const fresh = new LocalStore(join(work, 'fresh'))
    expect(await fresh.importOciArchive(archive)).toEqual([{name: 'openclaw', tag: '2.0', digest: desc.digest}])
    expect(await readFileFromImage(fresh.root, 'openclaw:2.0', 'run')).toBe('#!/bin/sh\necho hi\n')
    // the same bytes: exporting again gives an identical archive (fixed mtimes and order)
    const again = join(work, 'again.tar')
    await fresh.exportOciArchive('openclaw:2.0', again)
    expect(await readFile(again)).toEqual(await readFile(archive))
  })

  it('imports a gzip-compressed archive, and an export into a missing directory fails cleanly', async () => {
    const archive = join(work, 'openclaw.oci.tar')
    await store.exportOciArchive('openclaw:2.0', archive)
    await writeFile(`${archive}.gz`, gzipSync(await readFile(archive)))
    const fresh = new LocalStore(join(work, 'gz-store'))
    expect((await fresh.importOciArchive(`${archive}.gz`))[0]).toMatchObject({name: 'openclaw', tag: '2.0'})
    await expect(store.exportOciArchive('openclaw:2.0', join(work, 'no', 'such', 'dir.tar'))).rejects.toThrow(
      /cannot write/,
    )
    await expect(store.exportOciArchive('openclaw:3.0', join(work, 'never.tar'))).rejects.toThrow(
      /no image openclaw:3.0/,
    )
    expect(await readdir(work)).not.toContain('never.tar')
  })

  it('imports an archive written by skopeo, naming a bare tag after the file', async () => {
    const archive = join(work, 'from-skopeo.tar')
    await run('skopeo', ['copy', `oci:${layout}:2.0`, `oci-archive:${archive}:v2`])
    const fresh = new LocalStore(join(work, 'from-skopeo-store'))
    const [image] = await fresh.importOciArchive(archive)
    expect(image).toMatchObject({name: 'from-skopeo', tag: 'v2'})
    expect((await fresh.list()).map((e) => `${e.name}:${e.tag}`)).toEqual(['from-skopeo:v2'])
    await expect(fresh.importOciArchive(archive, 'nope')).rejects.toThrow(/has no image tagged "nope"/)
  })
})

describe('docker archives', () => {
  it('exports the docker save format: skopeo inspects it and copies it back to a runnable layout', async () => {
    const archive = join(work, 'openclaw.docker.tar')
    const desc = await store.exportDockerArchive('openclaw:2.0', archive)
    expect(desc.mediaType).toBe(MediaType.ImageManifest)
    // skopeo finds the image by its RepoTag (docker-archive:FILE:REF)
    const inspected = JSON.parse(await run('skopeo', ['inspect', `docker-archive:${archive}:openclaw:2.0`])) as {
      Digest: string
      Layers: string[]
      Architecture: string
    }
    expect(inspected.Architecture).toBe('amd64')
    await expect(run('skopeo', ['inspect', `docker-archive:${archive}:openclaw:9`])).rejects.toThrow()
    // layers in a docker-archive are uncompressed: their digests are the config's diff_ids
    const config = (await store.inspect('openclaw:2.0')).images[0]?.config
    expect(inspected.Layers).toEqual(config?.rootfs.diff_ids)

    const copied = join(work, 'copied')
    await run('skopeo', ['copy', `docker-archive:${archive}`, `oci:${copied}:back`])
    expect(await readFileFromImage(copied, 'back', 'data/big.bin')).toBe('x'.repeat(50_000))
    // the gunzipped temp copies of the layers were cleaned up
    expect(await tempFiles(store.root)).toEqual([])
  })

  it('podman load accepts the export: same image ID (config digest), layers and tag', async () => {
    const archive = join(work, 'openclaw-for-podman.docker.tar')
    await store.exportDockerArchive('openclaw:2.0', archive)
    // podman's own storage under the test's directory: the machine's podman state is untouched
    // (a short path: podman refuses a runroot longer than 50 characters)
    const podmanDir = await tempDir('pm-')
    const podman = ['--root', join(podmanDir, 'root'), '--runroot', join(podmanDir, 'run'), '--storage-driver', 'vfs']
    const loaded = await run('podman', [...podman, 'load', '-i', archive])
    expect(loaded).toContain('openclaw:2.0')
    const [image] = JSON.parse(await run('podman', [...podman, 'image', 'inspect', 'openclaw:2.0'])) as Array<{
      Id: string
      RootFS: {Layers: string[]}
      Config: {Cmd?: string[]}
    }>
    const config = (await store.inspect('openclaw:2.0')).images[0]
    expect(`sha256:${image?.Id}`).toBe(config?.manifest.config.digest)
    expect(image?.RootFS.Layers).toEqual(config?.config?.rootfs.diff_ids)
  })

  it('picks the requested platform of a multi-platform index', async () => {
    const root = join(work, 'multi')
    const multi = new LocalStore(root)
    await multi.importOciLayout(layout, '2.0', {as: 'app:amd64'})
    const amd64 = await multi.inspect('app:amd64')
    const image = amd64.images[0]
    if (!image?.config) throw new Error('no config')
    // an arm64 twin: same layers, its own config and manifest
    const armConfig = Buffer.from(JSON.stringify({...image.config, architecture: 'arm64', variant: 'v8'}))
    const armConfigDesc: Descriptor = {
      mediaType: MediaType.ImageConfig,
      digest: sha256(armConfig),
      size: armConfig.length,
    }
    const armManifest = Buffer.from(JSON.stringify({...image.manifest, config: armConfigDesc}))
    const armDesc: Descriptor = {
      mediaType: MediaType.ImageManifest,
      digest: sha256(armManifest),
      size: armManifest.length,
    }
    const indexBytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ImageIndex,
        manifests: [
          {...amd64.descriptor, platform: {os: 'linux', architecture: 'amd64'}},
          {...armDesc, platform: {os: 'linux', architecture: 'arm64', variant: 'v8'}},
        ],
      }),
    )
    const indexDesc: Descriptor = {mediaType: MediaType.ImageIndex, digest: sha256(indexBytes), size: indexBytes.length}
    await multi.push(armConfigDesc, armConfig)
    await multi.push(armDesc, armManifest)
    await multi.push(indexDesc, indexBytes)
    await multi.tag(indexDesc, 'app:multi')

    const entry = (await multi.list()).find((e) => e.tag === 'multi')
    expect(entry?.platforms).toEqual(['linux/amd64', 'linux/arm64/v8'])
    // shared layer counted once
    const layersSize = image.layers.reduce((sum, layer) => sum + layer.size, 0)
    expect(entry?.size).toBe(
      indexDesc.size +
        amd64.descriptor.size +
        image.manifest.config.size +
        armDesc.size +
        armConfigDesc.size +
        layersSize,
    )
    expect(
      JSON.parse(await run('skopeo', ['inspect', '--override-arch', 'arm64', `oci:${root}:app:multi`])).Architecture,
    ).toBe('arm64')

    const archive = join(work, 'arm.tar')
    await multi.exportDockerArchive('app:multi', archive, {platform: 'linux/arm64/v8'})
    expect(JSON.parse(await run('skopeo', ['inspect', `docker-archive:${archive}`])).Architecture).toBe('arm64')
    await expect(
      multi.exportDockerArchive('app:multi', join(work, 'x.tar'), {platform: 'linux/s390x'}),
    ).rejects.toThrow(/no image for linux\/s390x/)
    expect(await readdir(work)).not.toContain('x.tar')
    // an index export as an OCI archive carries all platforms
    const ociArchive = join(work, 'multi.oci.tar')
    await multi.exportOciArchive('app:multi', ociArchive)
    const fresh = new LocalStore(join(work, 'multi-fresh'))
    await fresh.importOciArchive(ociArchive)
    expect((await fresh.list())[0]?.platforms).toEqual(['linux/amd64', 'linux/arm64/v8'])
  })
})

describe('untrusted archives', () => {
  const layoutFile = JSON.stringify({imageLayoutVersion: '1.0.0'})

  async function rejectImport(entries: TarEntry[], message: RegExp): Promise<void> {
    const root = await tempDir('hostile-')
    const archive = join(root, 'hostile.tar')
    await writeTar(archive, entries)
    const target = new LocalStore(join(root, 'store'))
    const error = await target.importOciArchive(archive).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(AegisError)
    expect((error as Error).message).toMatch(message)
    expect(await target.list()).toEqual([])
    expect(await tempFiles(target.root)).toEqual([])
    // nothing written beside the store (e.g. an `escape` file)
    expect((await readdir(root)).sort()).toEqual(['hostile.tar', 'store'])
  }

  it('refuses path traversal, absolute paths, symlinks and hard links', async () => {
    await rejectImport(
      [
        {name: 'oci-layout', body: layoutFile},
        {name: '../escape', body: 'x'},
      ],
      /points outside the archive/,
    )
    await rejectImport([{name: 'blobs/sha256/../../../escape', body: 'x'}], /points outside the archive/)
    await rejectImport([{name: '/etc/evil', body: 'x'}], /absolute path/)
    await rejectImport([{name: 'blobs/sha256/evil', type: 'symlink', linkname: '/etc/passwd'}], /is a symlink/)
    await rejectImport([{name: 'index.json', type: 'link', linkname: 'oci-layout'}], /is a link/)
    await rejectImport([{name: 'blobs/sha512/abc', body: 'x'}], /not a sha256 blob/)
  })

  it('refuses a blob whose content does not match its name, and leaves nothing visible', async () => {
    const root = await tempDir('corrupt-')
    const good = Buffer.from('good layer')
    const archive = join(root, 'corrupt.tar')
    await writeTar(archive, [
      {name: 'oci-layout', body: layoutFile},
      {name: `blobs/sha256/${sha256('something else').slice(7)}`, body: good},
    ])
    const target = new LocalStore(join(root, 'store'))
    await expect(target.importOciArchive(archive)).rejects.toThrow(/does not match digest/)
    expect(await blobNames(target.root)).toEqual([])
    expect(await tempFiles(target.root)).toEqual([])
  })

  it('refuses an archive whose index points at missing content, setting no tag', async () => {
    const root = await tempDir('incomplete-')
    const manifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ImageManifest,
        config: {mediaType: MediaType.ImageConfig, digest: sha256('{}'), size: 2},
        layers: [],
      }),
    )
    const index = {
      schemaVersion: 2,
      manifests: [
        {
          mediaType: MediaType.ImageManifest,
          digest: sha256(manifest),
          size: manifest.length,
          annotations: {'org.opencontainers.image.ref.name': 'x:1'},
        },
      ],
    }
    const archive = join(root, 'incomplete.tar')
    await writeTar(archive, [
      {name: 'oci-layout', body: layoutFile},
      {name: 'index.json', body: JSON.stringify(index)},
      {name: `blobs/sha256/${sha256(manifest).slice(7)}`, body: manifest},
    ])
    const target = new LocalStore(join(root, 'store'))
    await expect(target.importOciArchive(archive)).rejects.toThrow(
      /cannot tag x:1: 1 of its blobs are not in the store/,
    )
    expect(await target.list()).toEqual([])
    // the verified manifest blob may stay until prune, which removes it
    expect(await blobNames(target.root)).toEqual([sha256(manifest).slice(7)])
    expect((await target.prune()).blobs.map((b) => b.digest)).toEqual([sha256(manifest)])
  })

  it('refuses a truncated archive and a file that is not a tar', async () => {
    const archive = join(work, 'openclaw.oci.tar')
    await store.exportOciArchive('openclaw:2.0', archive)
    const bytes = await readFile(archive)
    const root = await tempDir('truncated-')
    const truncated = join(root, 'truncated.tar')
    await writeFile(truncated, bytes.subarray(0, Math.floor(bytes.length / 2)))
    const target = new LocalStore(join(root, 'store'))
    await expect(target.importOciArchive(truncated)).rejects.toBeInstanceOf(AegisError)
    expect(await target.list()).toEqual([])
    expect(await tempFiles(target.root)).toEqual([])
    await expect(target.importOciArchive(join(root, 'missing.tar'))).rejects.toThrow(/does not exist/)
    const notTar = join(root, 'not.tar')
    await writeFile(notTar, 'hello, this is not a tar archive'.repeat(40))
    await expect(target.importOciArchive(notTar)).rejects.toThrow(/cannot read .* as a tar archive/)
  })
})
