/**
 * Referrers (OCI 1.1 `subject`: an SBOM, a signature) travel with the image: push sends them and
 * keeps the registry's `sha256-<hex>` referrers tag (docker-registry 2.8 has no referrers API),
 * pull brings them back into the local store. A test proxy plays a registry that has the API.
 */
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {sha256Digest} from '../../src/oci/digest.js'
import {MediaType} from '../../src/oci/media-types.js'
import type {Descriptor, ImageIndex} from '../../src/oci/types.js'
import {RegistryClient} from '../../src/registry/auth.js'
import {pullImage, pushImage} from '../../src/registry/push-pull.js'
import {RemoteRepository} from '../../src/registry/repository.js'
import {LocalStore} from '../../src/store/local-store.js'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'
import {makeImage, type ProxyAction, skopeoRawManifest, startFaultProxy} from './fixtures.js'

let registry: TestRegistry
let work: string
let store: LocalStore
let image: Descriptor
let sbom: Descriptor
const client = new RegistryClient({retry: {maxAttempts: 3, minDelayMs: 50, maxDelayMs: 200}})
const repo = (reference: string, host = registry.host) => new RemoteRepository(`${host}/${reference}`, {client})
const SIGNATURE = 'application/vnd.example.signature.v1+json'

beforeAll(async () => {
  work = await mkdtemp(join(tmpdir(), 'aegis-referrers-test-'))
  registry = await startRegistry()
  const layout = await makeImage(join(work, 'image'), {layers: 2, layerSize: 64 * 1024})
  store = new LocalStore(join(work, 'store'))
  await store.importOciLayout(layout.dir, 'test', {as: 'app:1'})
  image = await store.resolve('app:1')
  sbom = await addArtifact(store, image, MediaType.SpdxJson, {spdxVersion: 'SPDX-2.3', name: 'app'}, 'app')
})

afterAll(async () => {
  await registry?.stop()
  await rm(work, {recursive: true, force: true})
})

/** JSON bytes and their descriptor. */
function json(mediaType: string, value: unknown): {desc: Descriptor; bytes: Buffer} {
  const bytes = Buffer.from(JSON.stringify(value))
  return {desc: {mediaType, digest: sha256Digest(bytes), size: bytes.length}, bytes}
}

/** An artifact manifest about `subject` (empty config, one JSON layer) and its pieces. */
function artifact(subject: Descriptor, artifactType: string, content: unknown) {
  const empty = {desc: {mediaType: MediaType.Empty, digest: sha256Digest('{}'), size: 2}, bytes: Buffer.from('{}')}
  const layer = json(artifactType, content)
  const manifest = json(MediaType.ImageManifest, {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    artifactType,
    config: empty.desc,
    layers: [layer.desc],
    subject,
  })
  return {blobs: [empty, layer], manifest}
}

/** Stores an artifact about `subject` and lists it the way `aegis-kit build` lists its SBOM: an index tagged NAME:sha256-<hex>. */
async function addArtifact(
  target: LocalStore,
  subject: Descriptor,
  artifactType: string,
  content: unknown,
  name: string,
): Promise<Descriptor> {
  const {blobs, manifest} = artifact(subject, artifactType, content)
  for (const blob of [...blobs, manifest]) await target.push(blob.desc, blob.bytes)
  const index = json(MediaType.ImageIndex, {
    schemaVersion: 2,
    mediaType: MediaType.ImageIndex,
    manifests: [{...manifest.desc, artifactType}],
  })
  await target.push(index.desc, index.bytes)
  await target.setTags([{desc: index.desc, reference: `${name}:sha256-${subject.digest.slice(7)}`}])
  return manifest.desc
}

async function referrersTagOnRegistry(repository: string, subject: Descriptor): Promise<ImageIndex> {
  return JSON.parse(
    await skopeoRawManifest(`${registry.host}/${repository}:sha256-${subject.digest.slice(7)}`),
  ) as ImageIndex
}

describe('referrers on a registry without the referrers API', () => {
  it('push sends the SBOM and merges it into the sha256-<hex> tag another client had written', async () => {
    await pushImage(store, 'app:1', repo('refs/app:1'), {referrers: false})
    // Another tool signs the image first: the tag then lists only its signature.
    const target = repo('refs/app')
    const signature = artifact(image, SIGNATURE, {signed: true})
    for (const blob of signature.blobs) await target.push(blob.desc, blob.bytes)
    await target.push(signature.manifest.desc, signature.manifest.bytes)
    expect((await referrersTagOnRegistry('refs/app', image)).manifests.map((m) => m.digest)).toEqual([
      signature.manifest.desc.digest,
    ])

    const result = await pushImage(store, 'app:1', repo('refs/app:1'))
    expect(result.referrers.map((r) => r.digest)).toEqual([sbom.digest])
    expect(result.copied).toContain(sbom.digest)
    const listed = await referrersTagOnRegistry('refs/app', image)
    expect(listed.manifests).toEqual([
      expect.objectContaining({digest: signature.manifest.desc.digest, artifactType: SIGNATURE}),
      expect.objectContaining({
        digest: sbom.digest,
        mediaType: MediaType.ImageManifest,
        artifactType: MediaType.SpdxJson,
      }),
    ])
    const sbomManifest = JSON.parse(await skopeoRawManifest(`${registry.host}/refs/app@${sbom.digest}`)) as {
      subject: Descriptor
    }
    expect(sbomManifest.subject.digest).toBe(image.digest)
  })

  it('an unchanged re-push is one HEAD without referrers, and only reads when they are all there', async () => {
    const plainLayout = await makeImage(join(work, 'plain-image'), {layers: 1, layerSize: 32 * 1024})
    const plainStore = new LocalStore(join(work, 'plain-store'))
    await plainStore.importOciLayout(plainLayout.dir, 'test', {as: 'plain:1'})
    const proxy = await startFaultProxy(registry.url, () => ({kind: 'pass'}))
    try {
      await pushImage(plainStore, 'plain:1', repo('unchanged/plain:1', proxy.host))
      proxy.seen.length = 0
      const again = await pushImage(plainStore, 'plain:1', repo('unchanged/plain:1', proxy.host))
      expect(proxy.seen.map((r) => `${r.method} ${r.path}`)).toEqual(['HEAD /v2/unchanged/plain/manifests/1'])
      expect(again).toMatchObject({copied: [], skipped: [again.root.digest], bytesTransferred: 0, referrers: []})

      await pushImage(store, 'app:1', repo('unchanged/app:1', proxy.host))
      proxy.seen.length = 0
      const withSbom = await pushImage(store, 'app:1', repo('unchanged/app:1', proxy.host))
      expect(withSbom.referrers.map((r) => r.digest)).toEqual([sbom.digest])
      expect(withSbom.copied).toEqual([])
      expect(proxy.seen.filter((r) => r.method !== 'HEAD' && r.method !== 'GET')).toEqual([])
      expect(proxy.seen.length).toBeLessThanOrEqual(4)
    } finally {
      await proxy.close()
    }
  })

  it('an unchanged re-push puts the SBOM back into a referrers tag that lost it', async () => {
    await pushImage(store, 'app:1', repo('repair/app:1'))
    const emptied = json(MediaType.ImageIndex, {schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests: []})
    await repo('repair/app').pushManifest(emptied.desc, emptied.bytes, `sha256-${image.digest.slice(7)}`)
    expect((await referrersTagOnRegistry('repair/app', image)).manifests).toEqual([])
    await pushImage(store, 'app:1', repo('repair/app:1'))
    expect((await referrersTagOnRegistry('repair/app', image)).manifests.map((m) => m.digest)).toEqual([sbom.digest])
  })

  it('pull into an empty store brings the SBOM back, listed under the pulled name', async () => {
    await pushImage(store, 'app:1', repo('pulled/app:1'))
    const pulled = new LocalStore(join(work, 'pulled-store'))
    const result = await pullImage(repo('pulled/app:1'), pulled, {localReference: 'copy/app:1'})
    expect(result.referrers).toEqual([expect.objectContaining({digest: sbom.digest, artifactType: MediaType.SpdxJson})])
    const inspected = await pulled.inspect('copy/app:1')
    expect(inspected.referrers).toEqual([
      expect.objectContaining({digest: sbom.digest, artifactType: MediaType.SpdxJson, subject: image.digest}),
    ])
    const tags = (await pulled.list()).map((entry) => `${entry.name}:${entry.tag}`)
    expect(tags).toEqual(expect.arrayContaining(['copy/app:1', `copy/app:sha256-${image.digest.slice(7)}`]))
    const sbomManifest = JSON.parse((await pulled.readManifest(sbom))!.toString('utf8')) as {layers: Descriptor[]}
    const layer = await pulled.fetch(sbomManifest.layers[0]!)
    const chunks: Buffer[] = []
    for await (const chunk of layer) chunks.push(chunk as Buffer)
    expect(JSON.parse(Buffer.concat(chunks).toString('utf8'))).toEqual({spdxVersion: 'SPDX-2.3', name: 'app'})

    // Pulled again: nothing moves and the store's referrers tag is not rewritten.
    const before = await pulled.readIndex()
    const again = await pullImage(repo('pulled/app:1'), pulled, {localReference: 'copy/app:1'})
    expect(again.copied).toEqual([])
    expect(again.referrers.map((r) => r.digest)).toEqual([sbom.digest])
    expect(await pulled.readIndex()).toEqual(before)
  })

  it('skips a listed referrer whose manifest is about another image', async () => {
    const otherLayout = await makeImage(join(work, 'other-image'), {layers: 1, layerSize: 16 * 1024})
    const otherStore = new LocalStore(join(work, 'other-store'))
    await otherStore.importOciLayout(otherLayout.dir, 'test', {as: 'other:1'})
    const other = await otherStore.resolve('other:1')
    await pushImage(otherStore, 'other:1', repo('claims/other:1'))
    await pushImage(store, 'app:1', repo('claims/other:app'))
    // The other image's referrers tag wrongly lists app's SBOM (which names app as its subject).
    const wrong = json(MediaType.ImageIndex, {
      schemaVersion: 2,
      mediaType: MediaType.ImageIndex,
      manifests: [{...sbom, artifactType: MediaType.SpdxJson}],
    })
    await repo('claims/other').pushManifest(wrong.desc, wrong.bytes, `sha256-${other.digest.slice(7)}`)
    const result = await pullImage(repo('claims/other:1'), new LocalStore(join(work, 'claims-store')))
    expect(result.referrers).toEqual([])
  })
})

describe('referrers on a registry with the referrers API (played by a proxy)', () => {
  it('push leaves no sha256-<hex> tag when the registry answers OCI-Subject, and pull asks GET /referrers/', async () => {
    const proxy = await startFaultProxy(registry.url, (request): ProxyAction => {
      if (request.method === 'PUT' && request.url?.endsWith(`/manifests/${sbom.digest}`))
        return {kind: 'pass', headers: {'oci-subject': image.digest}}
      if (request.method === 'GET' && request.url?.includes('/referrers/')) {
        // As the spec says: an empty list for a subject without referrers.
        const manifests = request.url.includes(`/referrers/${image.digest}`)
          ? [{...sbom, artifactType: MediaType.SpdxJson}]
          : []
        const body = JSON.stringify({schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests})
        return {kind: 'respond', status: 200, headers: {'content-type': MediaType.ImageIndex}, body}
      }
      return {kind: 'pass'}
    })
    try {
      const pushed = await pushImage(store, 'app:1', repo('api/app:1', proxy.host))
      expect(pushed.referrers.map((r) => r.digest)).toEqual([sbom.digest])
      expect(proxy.seen.some((r) => r.path.includes('/manifests/sha256-'))).toBe(false)
      await expect(skopeoRawManifest(`${registry.host}/api/app:sha256-${image.digest.slice(7)}`)).rejects.toThrow(
        /manifest unknown/i,
      )

      proxy.seen.length = 0
      const pulled = new LocalStore(join(work, 'api-store'))
      const result = await pullImage(repo('api/app:1', proxy.host), pulled, {localReference: 'api/app:1'})
      expect(result.referrers.map((r) => r.digest)).toEqual([sbom.digest])
      expect(proxy.seen.some((r) => r.path.startsWith(`/v2/api/app/referrers/${image.digest}`))).toBe(true)
      expect(proxy.seen.some((r) => r.path.includes('/manifests/sha256-'))).toBe(false)
      expect((await pulled.inspect('api/app:1')).referrers.map((r) => r.digest)).toEqual([sbom.digest])
    } finally {
      await proxy.close()
    }
  })
})
