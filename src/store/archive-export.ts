/**
 * Exports one image to a file: an OCI archive (a tar of an OCI layout holding just that image)
 * or a docker-archive (`docker save` format: manifest.json with RepoTags, the config as
 * `<hex>.json`, and uncompressed layer tars `<diff_id hex>.tar`), which `docker load`,
 * `podman load` and `skopeo ... docker-archive:FILE` read.
 */
import {createReadStream} from 'node:fs'
import {open, unlink} from 'node:fs/promises'
import {join} from 'node:path'
import {pipeline} from 'node:stream/promises'
import {Transform} from 'node:stream'
import {createHash} from 'node:crypto'
import {createGunzip} from 'node:zlib'
import {AegisError} from '../errors.js'
import {sha256Hex, shortDigest} from '../oci/digest.js'
import {formatPlatform} from '../oci/manifest.js'
import {MediaType} from '../oci/media-types.js'
import {hostOciPlatform} from '../oci/platform.js'
import {formatRefName, parseLocalReference, REF_NAME_ANNOTATION} from '../oci/reference.js'
import type {Descriptor, ImageManifest} from '../oci/types.js'
import {tempFileName} from '../fs-util.js'
import {walkGraph} from './graph.js'
import {OCI_LAYOUT_VERSION} from './layout.js'
import type {LocalStore} from './local-store.js'
import {writeTarAtomically} from './tar-io.js'
import type {DockerExportOptions} from './types.js'

export async function exportOciArchive(store: LocalStore, reference: string, file: string): Promise<Descriptor> {
  const desc = await store.resolve(reference)
  const parsed = parseLocalReference(reference)
  const annotations =
    parsed.kind === 'tag' ? {[REF_NAME_ANNOTATION]: formatRefName(parsed.name, parsed.tag)} : undefined
  const nodes: Descriptor[] = []
  await walkGraph(
    desc,
    (d) => store.readManifest(d),
    (node) => void nodes.push(node.desc),
  )
  await writeTarAtomically(file, async (tar) => {
    await tar.addBytes('oci-layout', JSON.stringify({imageLayoutVersion: OCI_LAYOUT_VERSION}))
    const index = {
      schemaVersion: 2,
      mediaType: MediaType.ImageIndex,
      manifests: [{...desc, ...(annotations ? {annotations} : {})}],
    }
    await tar.addBytes('index.json', JSON.stringify(index))
    await tar.addDirectory('blobs')
    await tar.addDirectory('blobs/sha256')
    for (const node of nodes) {
      if (!(await store.exists(node))) throw store.missingBlob(node)
      await tar.addFile(`blobs/sha256/${sha256Hex(node.digest)}`, store.blobPath(node), node.size)
    }
  })
  return desc
}

export async function exportDockerArchive(
  store: LocalStore,
  reference: string,
  file: string,
  options: DockerExportOptions = {},
): Promise<Descriptor> {
  const resolved = await store.resolve(reference)
  const parsed = parseLocalReference(reference)
  const {desc, manifest} = await pickImage(
    store,
    resolved,
    options.platform ?? formatPlatform(hostOciPlatform()),
    reference,
  )
  const config = await store.readImageConfig(manifest.config)
  if (!config) {
    throw new AegisError(`${reference} is not a container image (config ${manifest.config.mediaType})`, {
      hint: 'a docker-archive can only carry images; export it as an OCI archive instead',
    })
  }
  const diffIds = config.rootfs?.diff_ids ?? []
  if (diffIds.length !== manifest.layers.length) {
    throw new AegisError(
      `${reference}: the config lists ${diffIds.length} layers, the manifest ${manifest.layers.length}`,
      {
        hint: 'the image is malformed',
      },
    )
  }
  const configName = `${sha256Hex(manifest.config.digest)}.json`
  const layerNames = diffIds.map((diffId) => `${sha256Hex(diffId)}.tar`)
  const repoTags = parsed.kind === 'tag' ? [formatRefName(parsed.name, parsed.tag)] : []
  await writeTarAtomically(file, async (tar) => {
    const written = new Set<string>()
    for (const [i, layer] of manifest.layers.entries()) {
      const name = layerNames[i] as string
      if (written.has(name)) continue
      written.add(name)
      await addUncompressedLayer(store, layer, diffIds[i] as string, (path, size) => tar.addFile(name, path, size))
    }
    await tar.addFile(configName, store.blobPath(manifest.config), manifest.config.size)
    await tar.addBytes('manifest.json', JSON.stringify([{Config: configName, RepoTags: repoTags, Layers: layerNames}]))
  })
  return desc
}

/** The single-platform image to export: the manifest itself, or the index's entry for `platform`. */
async function pickImage(
  store: LocalStore,
  desc: Descriptor,
  platform: string,
  reference: string,
): Promise<{desc: Descriptor; manifest: ImageManifest}> {
  const candidates: Array<{desc: Descriptor; manifest: ImageManifest; platform?: string}> = []
  const platformOf = new Map<string, string>()
  await walkGraph(
    desc,
    (d) => store.readManifest(d),
    async (node) => {
      if (node.role !== 'manifest') return
      if (node.parsed.kind === 'index') {
        for (const child of node.parsed.index.manifests)
          if (child.platform) platformOf.set(child.digest, formatPlatform(child.platform))
        return
      }
      const config = await store.readImageConfig(node.parsed.manifest.config)
      const imagePlatform = platformOf.get(node.desc.digest) ?? (config ? formatPlatform(config) : undefined)
      candidates.push({
        desc: node.desc,
        manifest: node.parsed.manifest,
        ...(imagePlatform ? {platform: imagePlatform} : {}),
      })
    },
  )
  const images = candidates.filter((c) => !c.platform?.startsWith('unknown/'))
  const match = images.length === 1 ? images[0] : images.find((c) => c.platform === platform)
  if (match) return match
  throw new AegisError(`${reference} has no image for ${platform}`, {
    hint: `pick one of: ${images.map((c) => c.platform ?? shortDigest(c.desc.digest)).join(', ') || '(none)'}`,
  })
}

/**
 * Hands `add` an uncompressed copy of a layer, checked against its diff_id: the blob itself when
 * it is a plain tar, else a gunzipped temp file in the store's `.tmp/` (deleted afterwards).
 */
async function addUncompressedLayer(
  store: LocalStore,
  layer: Descriptor,
  diffId: string,
  add: (path: string, size: number) => Promise<void>,
): Promise<void> {
  if (!(await store.exists(layer))) throw store.missingBlob(layer)
  const blobPath = store.blobPath(layer)
  if (layer.mediaType.endsWith('.tar') || layer.mediaType === MediaType.DockerLayer) {
    return add(blobPath, layer.size)
  }
  if (!layer.mediaType.endsWith('+gzip') && layer.mediaType !== MediaType.DockerLayerGzip) {
    throw new AegisError(
      `layer ${shortDigest(layer.digest)} is ${layer.mediaType}, which a docker-archive cannot carry`,
      {
        hint: 'export it as an OCI archive instead',
      },
    )
  }
  const temp = join(store.paths.tmpDir, tempFileName('.layer.tar'))
  try {
    const hash = createHash('sha256')
    let size = 0
    const measure = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        hash.update(chunk)
        size += chunk.length
        callback(null, chunk)
      },
    })
    const output = await open(temp, 'wx', 0o644)
    await pipeline(createReadStream(blobPath), createGunzip(), measure, output.createWriteStream())
    if (`sha256:${hash.digest('hex')}` !== diffId) {
      throw new AegisError(
        `layer ${shortDigest(layer.digest)} does not uncompress to its diff_id ${shortDigest(diffId)}`,
        {
          hint: 'the image is malformed',
        },
      )
    }
    await add(temp, size)
  } finally {
    await unlink(temp).catch(() => undefined)
  }
}
