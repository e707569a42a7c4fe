// The one manifest model: parsing and validating untrusted manifests, successors, platforms,
// artifacts, and the image view over a local store.
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, describe, expect, it} from 'vitest'
import {AegisError} from '../../src/errors.js'
import {
  artifactManifest,
  emptyConfig,
  imageIndex,
  isReferrersTag,
  jsonBlob,
  referrersTag,
  type Blob,
} from '../../src/oci/artifact.js'
import {sha256Digest, sha256Hex} from '../../src/oci/digest.js'
import {openImage} from '../../src/oci/image.js'
import {
  MAX_CONFIG_BYTES,
  MAX_MANIFEST_BYTES,
  declaredMediaType,
  formatPlatform,
  isIndex,
  isManifest,
  matchesPlatform,
  parseManifest,
  parsePlatform,
  referrerDescriptor,
  selectPlatform,
  successors,
} from '../../src/oci/manifest.js'
import {Annotation, MediaType} from '../../src/oci/media-types.js'
import type {Descriptor, ImageConfig} from '../../src/oci/types.js'
import {LocalStore} from '../../src/store/index.js'

const digestOf = (byte: string) => `sha256:${byte.repeat(32)}`
const layer = (byte: string, size = 10): Descriptor => ({
  mediaType: MediaType.LayerTarGzip,
  digest: digestOf(byte),
  size,
})

function manifestBlob(body: Record<string, unknown>, mediaType: string = MediaType.ImageManifest): Blob {
  return jsonBlob(mediaType, {schemaVersion: 2, mediaType, ...body})
}

describe('parseManifest', () => {
  const config: Descriptor = {mediaType: MediaType.ImageConfig, digest: digestOf('cd'), size: 100}
  const subject: Descriptor = {mediaType: MediaType.ImageManifest, digest: digestOf('5a'), size: 500}

  it('parses a manifest and an index, and successors include the subject unless asked not to', () => {
    const image = manifestBlob({config, layers: [layer('ab'), layer('ef')], subject})
    const parsed = parseManifest(image.descriptor, image.bytes)
    expect(parsed.kind).toBe('manifest')
    expect(successors(parsed).map((d) => d.digest)).toEqual([
      config.digest,
      digestOf('ab'),
      digestOf('ef'),
      subject.digest,
    ])
    expect(successors(parsed, {subject: false}).map((d) => d.digest)).toEqual([
      config.digest,
      digestOf('ab'),
      digestOf('ef'),
    ])

    const index = manifestBlob(
      {manifests: [{...image.descriptor, platform: {os: 'linux', architecture: 'amd64'}}]},
      MediaType.ImageIndex,
    )
    const parsedIndex = parseManifest(index.descriptor, index.bytes)
    expect(parsedIndex.kind).toBe('index')
    expect(successors(parsedIndex)).toEqual([{...image.descriptor, platform: {os: 'linux', architecture: 'amd64'}}])
  })

  it('tells an index from a manifest by its fields when the descriptor does not say', () => {
    const index = jsonBlob('application/octet-stream', {schemaVersion: 2, manifests: []})
    expect(parseManifest(index.descriptor, index.bytes).kind).toBe('index')
    expect(declaredMediaType(index.bytes)).toBe(MediaType.ImageIndex)
    expect(declaredMediaType(Buffer.from('not json'))).toBeUndefined()
  })

  it('refuses bytes that are not what the descriptor names', () => {
    const image = manifestBlob({config, layers: []})
    expect(() => parseManifest({...image.descriptor, size: image.descriptor.size + 1}, image.bytes)).toThrow(
      /failed verification/,
    )
    expect(() => parseManifest({...image.descriptor, digest: digestOf('00')}, image.bytes)).toThrow(/hashes to/)
    expect(() => parseManifest({...image.descriptor, size: MAX_MANIFEST_BYTES + 1}, image.bytes)).toThrow(
      /more than the 4194304 a manifest may have/,
    )
  })

  it.each([
    ['not JSON', Buffer.from('{'), /is not JSON/],
    ['schemaVersion 1', Buffer.from(JSON.stringify({schemaVersion: 1, config, layers: []})), /schemaVersion is not 2/],
    [
      'no layers',
      Buffer.from(JSON.stringify({schemaVersion: 2, mediaType: MediaType.ImageManifest, config})),
      /needs a layers array/,
    ],
    [
      'a layer without a digest',
      Buffer.from(JSON.stringify({schemaVersion: 2, config, layers: [{mediaType: MediaType.LayerTar, size: 1}]})),
      /lists layer without a mediaType and digest/,
    ],
    [
      'a path for a digest',
      Buffer.from(
        JSON.stringify({schemaVersion: 2, config, layers: [{...layer('ab'), digest: 'sha256:../../etc/passwd'}]}),
      ),
      /invalid digest/,
    ],
    [
      'a sha512 digest',
      Buffer.from(
        JSON.stringify({schemaVersion: 2, config, layers: [{...layer('ab'), digest: `sha512:${'a'.repeat(128)}`}]}),
      ),
      /uses sha512/,
    ],
    [
      'a negative size',
      Buffer.from(JSON.stringify({schemaVersion: 2, config, layers: [layer('ef', -1)]})),
      /lists layer sha256:(ef)+, which has size -1, not a byte count/,
    ],
    [
      'a config of 100 MiB',
      Buffer.from(JSON.stringify({schemaVersion: 2, config: {...config, size: 100 * 1024 * 1024}, layers: []})),
      new RegExp(`which is 104857600 bytes: more than the ${MAX_CONFIG_BYTES} a config may have`),
    ],
    [
      'a subject of 5 MiB',
      Buffer.from(JSON.stringify({schemaVersion: 2, config, layers: [], subject: {...subject, size: 5 * 1024 * 1024}})),
      /lists subject .* more than the 4194304 a manifest may have/,
    ],
  ])('refuses %s', (_what, bytes, message) => {
    const desc: Descriptor = {mediaType: MediaType.ImageManifest, digest: sha256Digest(bytes), size: bytes.length}
    const error = (() => {
      try {
        parseManifest(desc, bytes)
      } catch (caught) {
        return caught
      }
      return undefined
    })()
    expect(error).toBeInstanceOf(AegisError)
    expect((error as Error).message).toMatch(message)
  })

  it('names a referrer by its artifactType, else its config type, with its annotations', () => {
    const sbom = artifactManifest(MediaType.SpdxJson, [layer('ab')], {
      subject,
      annotations: {[Annotation.Created]: '2026-01-01T00:00:00Z'},
    })
    expect(referrerDescriptor(sbom.descriptor, parseManifest(sbom.descriptor, sbom.bytes))).toEqual({
      ...sbom.descriptor,
      artifactType: MediaType.SpdxJson,
      annotations: {[Annotation.Created]: '2026-01-01T00:00:00Z'},
    })
    const image = manifestBlob({config, layers: []})
    expect(referrerDescriptor(image.descriptor, parseManifest(image.descriptor, image.bytes)).artifactType).toBe(
      MediaType.ImageConfig,
    )
  })
})

describe('media types and platforms', () => {
  it('knows manifests from indexes from blobs', () => {
    expect(
      [MediaType.ImageManifest, MediaType.DockerManifest, MediaType.ImageIndex, MediaType.DockerManifestList].map(
        (mediaType) => isManifest({mediaType}),
      ),
    ).toEqual([true, true, true, true])
    expect(isIndex({mediaType: MediaType.DockerManifestList})).toBe(true)
    expect(isManifest({mediaType: MediaType.LayerTarGzip})).toBe(false)
  })

  it('parses, formats, matches and selects platforms', () => {
    expect(parsePlatform('linux/arm64/v8')).toEqual({os: 'linux', architecture: 'arm64', variant: 'v8'})
    expect(() => parsePlatform('linux')).toThrow(/Invalid platform/)
    expect(formatPlatform({os: 'linux', architecture: 'amd64'})).toBe('linux/amd64')
    expect(
      matchesPlatform({os: 'linux', architecture: 'arm64', variant: 'v8'}, {os: 'linux', architecture: 'arm64'}),
    ).toBe(true)
    expect(
      matchesPlatform({os: 'linux', architecture: 'arm64'}, {os: 'linux', architecture: 'arm64', variant: 'v8'}),
    ).toBe(false)
    const amd64 = {...layer('01'), mediaType: MediaType.ImageManifest, platform: {os: 'linux', architecture: 'amd64'}}
    const index = {schemaVersion: 2 as const, mediaType: MediaType.ImageIndex, manifests: [amd64]}
    expect(selectPlatform(layer('99'), index, {os: 'linux', architecture: 'amd64'})).toBe(amd64)
    expect(() => selectPlatform(layer('99'), index, {os: 'linux', architecture: 'arm64'})).toThrow(
      /has no manifest for linux\/arm64 \(it has: linux\/amd64\)/,
    )
  })

  it('writes referrers tags and artifacts the same way every time', () => {
    expect(referrersTag(digestOf('ab'))).toBe(`sha256-${'ab'.repeat(32)}`)
    expect(isReferrersTag(referrersTag(digestOf('ab')))).toBe(true)
    expect(emptyConfig().bytes.toString()).toBe('{}')
    // Key order is part of the digest: schemaVersion, mediaType, artifactType, config, layers, subject, annotations.
    const artifact = artifactManifest('application/x-test', [layer('ab')], {
      subject: layer('cd'),
      annotations: {a: 'b'},
    })
    expect(Object.keys(JSON.parse(artifact.bytes.toString()) as object)).toEqual([
      'schemaVersion',
      'mediaType',
      'artifactType',
      'config',
      'layers',
      'subject',
      'annotations',
    ])
    expect(Object.keys(JSON.parse(imageIndex([]).bytes.toString()) as object)).toEqual([
      'schemaVersion',
      'mediaType',
      'manifests',
    ])
    expect(sha256Hex(artifact.descriptor.digest)).toHaveLength(64)
  })
})

describe('openImage over the local store', () => {
  const dirs: string[] = []
  afterAll(async () => {
    for (const dir of dirs) await rm(dir, {recursive: true, force: true})
  })

  async function storeWithImages(): Promise<{store: LocalStore; amd64: Descriptor; layerBlob: Blob}> {
    const root = await mkdtemp(join(tmpdir(), 'aegis-oci-image-'))
    dirs.push(root)
    const store = new LocalStore(join(root, 'store'))
    const layerBlob = jsonBlob(MediaType.LayerTar, 'not really a tar')
    const blobs: Blob[] = [layerBlob]
    const manifests: Descriptor[] = []
    for (const architecture of ['amd64', 'arm64']) {
      const config: ImageConfig = {
        architecture,
        os: 'linux',
        rootfs: {type: 'layers', diff_ids: [layerBlob.descriptor.digest]},
      }
      const configBlob = jsonBlob(MediaType.ImageConfig, config)
      const manifest = manifestBlob({config: configBlob.descriptor, layers: [layerBlob.descriptor]})
      blobs.push(configBlob, manifest)
      manifests.push({...manifest.descriptor, platform: {os: 'linux', architecture}})
    }
    const index = imageIndex(manifests)
    for (const blob of [...blobs, index]) await store.push(blob.descriptor, blob.bytes)
    await store.tag(index.descriptor, 'app:1')
    return {store, amd64: manifests[0] as Descriptor, layerBlob}
  }

  it("goes from a reference through an index to a platform's manifest, config and layers", async () => {
    const {store, amd64, layerBlob} = await storeWithImages()
    const image = await openImage(store, 'app:1', {platform: {os: 'linux', architecture: 'amd64'}})
    expect(image.descriptor.digest).toBe(amd64.digest)
    expect(image.layers).toEqual([layerBlob.descriptor])
    expect((await image.config()).architecture).toBe('amd64')
    expect(image.blobPath(layerBlob.descriptor)).toBe(store.blobPath(layerBlob.descriptor))
    const chunks: Buffer[] = []
    for await (const chunk of await image.open(layerBlob.descriptor)) chunks.push(chunk as Buffer)
    expect(Buffer.concat(chunks)).toEqual(layerBlob.bytes)
    // A manifest's own descriptor needs no platform.
    expect((await openImage(store, amd64)).descriptor.digest).toBe(amd64.digest)
  })

  it('refuses an index without a platform, or without the platform asked for', async () => {
    const {store} = await storeWithImages()
    await expect(openImage(store, 'app:1')).rejects.toThrow(/is a multi-platform index/)
    await expect(openImage(store, 'app:1', {platform: {os: 'linux', architecture: 's390x'}})).rejects.toThrow(
      /has no manifest for linux\/s390x \(it has: linux\/amd64, linux\/arm64\)/,
    )
    await expect(
      openImage(store, 'app:1', {
        platform: {os: 'linux', architecture: 's390x'},
        noPlatform: () => new AegisError('custom'),
      }),
    ).rejects.toThrow('custom')
  })

  it('lookup answers undefined where resolve throws', async () => {
    const {store} = await storeWithImages()
    expect(await store.lookup('app:2')).toBeUndefined()
    expect((await store.lookup('app:1'))?.mediaType).toBe(MediaType.ImageIndex)
    await expect(store.resolve('app:2')).rejects.toThrow(/no image app:2/)
  })
})
