/**
 * The registry client against a real docker-registry (no auth), checked by skopeo both ways.
 */
import {mkdtemp, readFile, readdir, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {AegisError} from '../../src/errors.js'
import {MediaType} from '../../src/oci/media-types.js'
import type {Descriptor, ImageIndex, ImageManifest} from '../../src/oci/types.js'
import {RegistryClient} from '../../src/registry/auth.js'
import {copyGraph, type CopyProgress} from '../../src/registry/copy.js'
import {pullImage, pushImage} from '../../src/registry/push-pull.js'
import {RegistryError} from '../../src/registry/registry-error.js'
import {RemoteRepository} from '../../src/registry/repository.js'
import {LocalStore} from '../../src/store/local-store.js'
import {sha256Digest} from '../../src/registry/verify.js'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'
import {LayoutStore} from './layout-store.js'
import {makeImage, skopeo, skopeoRawManifest, startFaultProxy} from './fixtures.js'

let registry: TestRegistry
let work: string
let image: LayoutStore
const client = new RegistryClient({retry: {maxAttempts: 3, minDelayMs: 50, maxDelayMs: 200}})
const repo = (name: string, options: ConstructorParameters<typeof RemoteRepository>[1] = {}) =>
  new RemoteRepository(`${registry.host}/${name}`, {client, ...options})

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'aegis-registry-test-'))
  registry = await startRegistry({auth: 'none'})
  image = await makeImage(join(work, 'image'), {layers: 3, layerSize: 300 * 1024})
})

afterAll(async () => {
  await registry?.stop()
  await rm(work, {recursive: true, force: true})
})

async function freshStore(name: string): Promise<LayoutStore> {
  return LayoutStore.create(join(work, name))
}

async function manifestOf(
  store: LayoutStore,
  reference: string,
): Promise<{desc: Descriptor; manifest: ImageManifest; bytes: Buffer}> {
  const desc = await store.resolve(reference)
  const bytes = await readFile(store.blobPath(desc.digest))
  return {desc, manifest: JSON.parse(bytes.toString('utf8')) as ImageManifest, bytes}
}

/**
 * Pushes a one-layer image, flips a byte of its layer on the registry's disk, and checks that a
 * pull into the local store fails naming the digest and keeps nothing: no blob, no tag, no temp
 * file. 4 MiB and more takes the direct download (src/registry/direct-download.ts).
 */
async function expectTamperedPullRefused(name: string, layerSize: number): Promise<void> {
  const victimImage = await makeImage(join(work, `tamper-${name}-image`), {layers: 1, layerSize})
  await pushImage(victimImage, 'test', repo(`tamper/${name}:1`))
  const victim = (await manifestOf(victimImage, 'test')).manifest.layers[0]!
  const onDisk = await readFile(registry.blobPath(victim.digest))
  onDisk[onDisk.length >> 1] ^= 0xff
  await writeFile(registry.blobPath(victim.digest), onDisk)

  const store = new LocalStore(join(work, `tamper-${name}-store`))
  const error = await pullImage(repo(`tamper/${name}:1`), store, {localReference: 'app:1'}).then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(AegisError)
  expect((error as Error).message).toContain(`does not match digest ${victim.digest.slice(0, 19)}`)
  expect(await store.exists(victim)).toBe(false)
  expect(await readdir(store.paths.tmpDir)).toEqual([])
  await expect(store.resolve('app:1')).rejects.toThrow(/no image app:1/)
}
describe('push and pull against docker-registry', () => {
  it('pushes a umoci image that skopeo reads back byte for byte', async () => {
    const events: CopyProgress[] = []
    const result = await pushImage(image, 'test', repo('umoci/app:1.0'), {progress: (e) => events.push(e)})
    const {desc, bytes, manifest} = await manifestOf(image, 'test')
    expect(result.root.digest).toBe(desc.digest)
    expect(result.reference).toBe(`${registry.host}/umoci/app:1.0@${desc.digest}`)
    expect(await skopeoRawManifest(`${registry.host}/umoci/app:1.0`)).toBe(bytes.toString('utf8'))
    // skopeo copy fetches and checks every blob.
    await skopeo(
      'copy',
      '--src-tls-verify=false',
      `docker://${registry.host}/umoci/app:1.0`,
      `oci:${join(work, 'skopeo-out')}:x`,
    )
    expect(result.copied).toEqual(
      expect.arrayContaining([manifest.config.digest, ...manifest.layers.map((l) => l.digest)]),
    )
    const last = events.at(-1)!
    expect(last.totals.bytesDone).toBe(last.totals.bytesKnown)
    expect(events.some((e) => e.kind === 'bytes' && e.bytes > 0 && e.bytes < e.descriptor.size)).toBe(true)
  })

  // How fast that is belongs to bench/registry, not to a timed test.
  it('re-pushes an unchanged image by skipping everything below the root', async () => {
    await pushImage(image, 'test', repo('umoci/app:1.0'))
    const result = await pushImage(image, 'test', repo('umoci/app:1.0'))
    expect(result.copied).toEqual([])
    expect(result.skipped).toEqual([result.root.digest])
    expect(result.bytesTransferred).toBe(0)
  })

  it('pulls what skopeo pushed, into a layout skopeo can read', async () => {
    await skopeo(
      'copy',
      '--dest-tls-verify=false',
      `oci:${image.dir}:test`,
      `docker://${registry.host}/skopeo/pushed:v1`,
    )
    const store = await freshStore('pulled-from-skopeo')
    const result = await pullImage(repo('skopeo/pushed:v1'), store, {localReference: 'pulled'})
    const {manifest} = await manifestOf(store, 'pulled')
    expect((await store.resolve('pulled')).digest).toBe(result.root.digest)
    for (const layer of manifest.layers) expect(await store.exists(layer)).toBe(true)
    await skopeo('copy', `oci:${store.dir}:pulled`, `oci:${join(work, 'skopeo-check')}:y`)
  })

  it('uploads in PATCH chunks when asked, and skopeo accepts the result', async () => {
    const proxy = await startFaultProxy(registry.url, () => ({kind: 'pass'}))
    try {
      const chunked = new RemoteRepository(`${proxy.host}/chunked/app:1`, {
        client,
        uploadMode: 'chunked',
        chunkSize: 100 * 1024,
      })
      await pushImage(image, 'test', chunked)
      expect(proxy.seen.filter((r) => r.method === 'PATCH').length).toBeGreaterThanOrEqual(9)
      await skopeo(
        'copy',
        '--src-tls-verify=false',
        `docker://${registry.host}/chunked/app:1`,
        `oci:${join(work, 'chunked-out')}:x`,
      )
    } finally {
      await proxy.close()
    }
  })

  it('mounts blobs from another repository instead of uploading them', async () => {
    await pushImage(image, 'test', repo('mount/source:1'))
    const result = await pushImage(image, 'test', repo('mount/target:1'), {mountFrom: ['mount/source']})
    const {manifest} = await manifestOf(image, 'test')
    expect(result.mounted).toEqual(expect.arrayContaining(manifest.layers.map((l) => l.digest)))
    expect(result.copied).toEqual([result.root.digest])
    expect(await skopeoRawManifest(`${registry.host}/mount/target:1`)).toContain(manifest.layers[0]!.digest)
  })

  it('keeps the exact bytes of a manifest and lists, resolves and deletes tags', async () => {
    const {manifest} = await manifestOf(image, 'test')
    const target = repo('bytes/app')
    await pushImage(image, 'test', repo('bytes/app:base'))
    // Odd but valid formatting: the registry must not re-serialise it.
    const bytes = Buffer.from(
      `{\n   "schemaVersion": 2,\n   "mediaType": "${MediaType.ImageManifest}",\n   "config": ${JSON.stringify(manifest.config)},\n   "layers": ${JSON.stringify(manifest.layers, null, 1)}\n}\n\n`,
    )
    const desc: Descriptor = {mediaType: MediaType.ImageManifest, digest: sha256Digest(bytes), size: bytes.length}
    for (const tag of ['t1', 't2', 't3', 't4', 't5']) await target.pushManifest(desc, bytes, tag)
    expect(await skopeoRawManifest(`${registry.host}/bytes/app:t3`)).toBe(bytes.toString('utf8'))
    expect((await target.fetchManifest('t3')).bytes.equals(bytes)).toBe(true)
    expect(await target.resolve('t5')).toEqual(desc)
    expect((await target.tags({pageSize: 2})).sort()).toEqual(['base', 't1', 't2', 't3', 't4', 't5'])
    await target.delete(desc)
    await expect(target.resolve('t1')).rejects.toMatchObject({status: 404})
    expect(await target.exists(desc)).toBe(false)
  })

  it('finds referrers through the sha256-<hex> tag on a registry without the referrers API', async () => {
    const target = repo('referrers/app')
    const pushed = await pushImage(image, 'test', repo('referrers/app:1'))
    const empty = Buffer.from('{}')
    const emptyDesc: Descriptor = {mediaType: MediaType.Empty, digest: sha256Digest(empty), size: 2}
    const sbom = Buffer.from('{"spdxVersion":"SPDX-2.3"}')
    const sbomDesc: Descriptor = {mediaType: MediaType.SpdxJson, digest: sha256Digest(sbom), size: sbom.length}
    await target.push(emptyDesc, empty)
    await target.push(sbomDesc, sbom)
    const artifact: ImageManifest = {
      schemaVersion: 2,
      mediaType: MediaType.ImageManifest,
      artifactType: 'application/vnd.aegis.test.sbom',
      config: emptyDesc,
      layers: [sbomDesc],
      subject: pushed.root,
      annotations: {'org.example.kind': 'sbom'},
    }
    const artifactBytes = Buffer.from(JSON.stringify(artifact))
    const artifactDesc: Descriptor = {
      mediaType: MediaType.ImageManifest,
      digest: sha256Digest(artifactBytes),
      size: artifactBytes.length,
    }
    await target.push(artifactDesc, artifactBytes)
    const referrers = await target.referrers(pushed.root)
    expect(referrers).toEqual([
      {...artifactDesc, artifactType: 'application/vnd.aegis.test.sbom', annotations: {'org.example.kind': 'sbom'}},
    ])
    expect(await target.referrers(pushed.root, 'application/other')).toEqual([])
    expect(await target.tags()).toContain(`sha256-${pushed.root.digest.slice(7)}`)
  })

  it('pushes a multi-platform index and pulls only the platform asked for', async () => {
    const {desc: amd64, manifest: amd64Manifest} = await manifestOf(image, 'test')
    const armImage = await makeImage(join(work, 'arm-image'), {layers: 1, layerSize: 10 * 1024})
    const {desc: arm64, manifest: arm64Manifest} = await manifestOf(armImage, 'test')
    const store = await freshStore('multi')
    await copyGraph(image, store, amd64)
    await copyGraph(armImage, store, arm64)
    const index: ImageIndex = {
      schemaVersion: 2,
      mediaType: MediaType.ImageIndex,
      manifests: [
        {...amd64, platform: {os: 'linux', architecture: 'amd64'}},
        {...arm64, platform: {os: 'linux', architecture: 'arm64'}},
      ],
    }
    const indexBytes = Buffer.from(JSON.stringify(index))
    const indexDesc: Descriptor = {
      mediaType: MediaType.ImageIndex,
      digest: sha256Digest(indexBytes),
      size: indexBytes.length,
    }
    await store.push(indexDesc, indexBytes)
    await store.tag(indexDesc, 'multi')
    await pushImage(store, 'multi', repo('multi/app:1'))
    expect(await skopeoRawManifest(`${registry.host}/multi/app:1`)).toBe(indexBytes.toString('utf8'))

    const pulled = await freshStore('multi-pulled')
    const result = await pullImage(repo('multi/app:1'), pulled, {
      platform: {os: 'linux', architecture: 'arm64'},
      localReference: 'arm',
    })
    expect(result.root.digest).toBe(arm64.digest)
    expect((await pulled.resolve('arm')).digest).toBe(arm64.digest)
    expect(await pulled.exists(arm64Manifest.layers[0]!)).toBe(true)
    expect(await pulled.exists(amd64Manifest.layers[0]!)).toBe(false)
    expect(await pulled.exists(indexDesc)).toBe(false)
    await expect(
      pullImage(repo('multi/app:1'), pulled, {platform: {os: 'linux', architecture: 's390x'}}),
    ).rejects.toThrow(/linux\/amd64, linux\/arm64/)
  })
})

describe('faults', () => {
  it('refuses a blob altered on the registry disk, naming the digest and keeping nothing of it', async () => {
    // Its own image: registry storage shares blobs between repositories.
    const victimImage = await makeImage(join(work, 'tamper-image'), {layers: 2, layerSize: 100 * 1024})
    await pushImage(victimImage, 'test', repo('tamper/app:1'))
    const {manifest} = await manifestOf(victimImage, 'test')
    const victim = manifest.layers[1]!
    const onDisk = await readFile(registry.blobPath(victim.digest))
    onDisk[onDisk.length >> 1] ^= 0xff
    await writeFile(registry.blobPath(victim.digest), onDisk)

    const store = await freshStore('tamper-pulled')
    const error = await pullImage(repo('tamper/app:1'), store, {localReference: 'app'}).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(AegisError)
    expect((error as Error).message).toContain(victim.digest)
    const files = await store.blobFiles()
    expect(files).not.toContain(victim.digest.slice(7))
    expect(files.filter((f) => f.endsWith('.partial'))).toEqual([])
    await expect(store.resolve('app')).rejects.toThrow()
  })

  it('refuses such a blob when pulling into the local store too (it checks content itself), keeping nothing', async () => {
    await expectTamperedPullRefused('local', 100 * 1024)
  })

  // Blobs of 4 MiB and more are downloaded straight into the store's temp file (src/registry/direct-download.ts).
  it('pulls large blobs straight into the local store, with progress, retrying a dropped connection and handing a 401 back', async () => {
    const large = await makeImage(join(work, 'large-image'), {layers: 2, layerSize: 5 * 1024 * 1024})
    await pushImage(large, 'test', repo('large/app:1'))
    const layers = (await manifestOf(large, 'test')).manifest.layers
    let blobGets = 0
    const proxy = await startFaultProxy(registry.url, (request) => {
      // The second layer's first 2 MiB come in one go, the rest in small reads: its progress
      // must still be reported before its end.
      if (request.method === 'GET' && request.url?.endsWith(`/blobs/${layers[1]!.digest}`))
        return {kind: 'trickle', first: 2 * 1024 * 1024, piece: 32 * 1024}
      if (request.method !== 'GET' || !request.url?.endsWith(`/blobs/${layers[0]!.digest}`)) return {kind: 'pass'}
      blobGets++
      if (blobGets === 1) return {kind: 'drop'}
      if (blobGets === 2) return {kind: 'respond', status: 401, body: '{"errors":[{"code":"UNAUTHORIZED"}]}'}
      return {kind: 'pass'}
    })
    try {
      const store = new LocalStore(join(work, 'large-store'))
      const events: CopyProgress[] = []
      const result = await pullImage(new RemoteRepository(`${proxy.host}/large/app:1`, {client}), store, {
        localReference: 'large:1',
        progress: (e) => events.push(e),
      })
      for (const layer of layers) {
        expect(await store.exists(layer)).toBe(true)
        expect(result.copied).toContain(layer.digest)
      }
      expect(blobGets).toBe(3)
      expect(
        events.some(
          (e) =>
            e.kind === 'bytes' && e.descriptor.digest === layers[1]!.digest && e.bytes > 0 && e.bytes < layers[1]!.size,
        ),
      ).toBe(true)
      const last = events.at(-1)!
      expect(last.totals.bytesDone).toBe(last.totals.bytesKnown)
      expect(await readdir(store.paths.tmpDir)).toEqual([])
      expect((await store.resolve('large:1')).digest).toBe(result.root.digest)
    } finally {
      await proxy.close()
    }
  })

  // The direct download reads plain-HTTP bodies with a Content-Length off the socket itself; a chunked
  // answer goes through node:http instead. docker-registry always sends a length and never cuts
  // a body short, so a test proxy does both.
  it('pulls large blobs directly when the body is chunked (test proxy) or cut short once (test proxy)', async () => {
    const large = await makeImage(join(work, 'framing-image'), {layers: 2, layerSize: 5 * 1024 * 1024})
    await pushImage(large, 'test', repo('framing/app:1'))
    const layers = (await manifestOf(large, 'test')).manifest.layers
    const gets = new Map<string, number>()
    const proxy = await startFaultProxy(registry.url, (request) => {
      const layer = layers.findIndex((l) => request.method === 'GET' && request.url?.endsWith(`/blobs/${l.digest}`))
      if (layer === -1) return {kind: 'pass'}
      const seen = (gets.get(layers[layer]!.digest) ?? 0) + 1
      gets.set(layers[layer]!.digest, seen)
      if (layer === 0) return {kind: 'chunked'}
      return seen === 1 ? {kind: 'cut', bytes: 2 * 1024 * 1024} : {kind: 'pass'}
    })
    try {
      const store = new LocalStore(join(work, 'framing-store'))
      const result = await pullImage(new RemoteRepository(`${proxy.host}/framing/app:1`, {client}), store, {
        localReference: 'framing:1',
      })
      for (const layer of layers) expect(result.copied).toContain(layer.digest)
      // The chunked answer is asked for again through node:http; the cut one is retried.
      expect(gets.get(layers[0]!.digest)).toBe(2)
      expect(gets.get(layers[1]!.digest)).toBe(2)
      for (const layer of layers) expect(sha256Digest(await readFile(store.blobPath(layer)))).toBe(layer.digest)
      expect(await readdir(store.paths.tmpDir)).toEqual([])
    } finally {
      await proxy.close()
    }
  })

  it('refuses a large blob altered on the registry disk (direct download), naming the digest and leaving no temp file', async () => {
    await expectTamperedPullRefused('large', 5 * 1024 * 1024)
  })

  it('resumes a push cut off by the registry stopping, and never tags an incomplete image', async () => {
    const big = await makeImage(join(work, 'big-image'), {layers: 6, layerSize: 512 * 1024})
    let killed: Promise<void> | undefined
    const first = await pushImage(big, 'test', repo('resume/app:1'), {
      concurrency: 2,
      progress: (event) => {
        if (event.kind === 'done' && !killed) killed = registry.kill()
      },
    }).then(
      () => undefined,
      (e: unknown) => e,
    )
    await killed
    expect(first).toBeInstanceOf(RegistryError)
    expect((first as RegistryError).hint).toMatch(/resume/i)
    await registry.restart()
    await expect(repo('resume/app').resolve('1')).rejects.toMatchObject({status: 404})

    const second = await pushImage(big, 'test', repo('resume/app:1'))
    expect(second.skipped.length).toBeGreaterThanOrEqual(1)
    await skopeo(
      'copy',
      '--src-tls-verify=false',
      `docker://${registry.host}/resume/app:1`,
      `oci:${join(work, 'resume-out')}:x`,
    )
  })

  it('waits as a 429 Retry-After says (429 injected by a test proxy: docker-registry never sends it)', async () => {
    let limited = 0
    const proxy = await startFaultProxy(registry.url, (request) => {
      if (request.method === 'POST' && request.url?.includes('/blobs/uploads/') && limited++ === 0) {
        return {
          kind: 'respond',
          status: 429,
          headers: {'retry-after': '1', 'content-type': 'application/json'},
          body: '{"errors":[{"code":"TOOMANYREQUESTS","message":"slow down"}]}',
        }
      }
      return {kind: 'pass'}
    })
    try {
      await pushImage(image, 'test', new RemoteRepository(`${proxy.host}/limited/app:1`, {client}), {concurrency: 1})
      const posts = proxy.seen.filter((r) => r.method === 'POST')
      expect(posts[1]!.at - posts[0]!.at).toBeGreaterThanOrEqual(950)
      const {bytes} = await manifestOf(image, 'test')
      expect(await skopeoRawManifest(`${registry.host}/limited/app:1`)).toBe(bytes.toString('utf8'))
    } finally {
      await proxy.close()
    }
  })

  it('reports the registry error after the last retry (5xx injected by a test proxy)', async () => {
    const proxy = await startFaultProxy(registry.url, (request) =>
      request.method === 'POST'
        ? {
            kind: 'respond',
            status: 503,
            headers: {'content-type': 'application/json'},
            body: '{"errors":[{"code":"UNAVAILABLE","message":"maintenance"}]}',
          }
        : {kind: 'pass'},
    )
    try {
      const error = await pushImage(image, 'test', new RemoteRepository(`${proxy.host}/down/app:1`, {client})).then(
        () => undefined,
        (e: unknown) => e,
      )
      expect(error).toBeInstanceOf(RegistryError)
      expect((error as Error).message).toMatch(
        /POST http:\/\/127\.0\.0\.1:\d+\/v2\/down\/app\/blobs\/uploads\/ failed with 503.* after 3 attempts \(UNAVAILABLE: maintenance\)/,
      )
      expect((error as RegistryError).hint).toMatch(/skipped/)
    } finally {
      await proxy.close()
    }
  })

  it('retries a dropped connection (drop injected by a test proxy)', async () => {
    let dropped = 0
    const proxy = await startFaultProxy(registry.url, (request) =>
      request.method === 'GET' && request.url?.includes('/blobs/') && dropped++ < 2 ? {kind: 'drop'} : {kind: 'pass'},
    )
    try {
      const store = await freshStore('dropped')
      const result = await pullImage(new RemoteRepository(`${proxy.host}/umoci/app:1.0`, {client}), store, {
        localReference: 'x',
      })
      expect(dropped).toBeGreaterThanOrEqual(2)
      expect((await store.resolve('x')).digest).toBe(result.root.digest)
    } finally {
      await proxy.close()
    }
  })
})
