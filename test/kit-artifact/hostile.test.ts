/**
 * Hostile kit layers, crafted with tar-stream and pushed with the registry client: `pull` refuses
 * each one, writes nothing outside its staging directory, leaves no tag and no pulled kit.
 */
import {randomBytes} from 'node:crypto'
import {existsSync} from 'node:fs'
import {readdir} from 'node:fs/promises'
import {join} from 'node:path'
import {gzipSync} from 'node:zlib'
import tar from 'tar-stream'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {MediaType} from '../../src/oci/media-types.js'
import type {Descriptor} from '../../src/oci/types.js'
import {RegistryClient} from '../../src/registry/auth.js'
import {RemoteRepository} from '../../src/registry/repository.js'
import {sha256Digest} from '../../src/registry/verify.js'
import {hasStackTrace} from '../helpers/cli.js'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'
import {createSandbox, type CliSandbox} from '../cli-images/helpers.js'

type Entry = {
  name: string
  type?: 'file' | 'directory' | 'symlink' | 'link' | 'fifo'
  linkname?: string
  content?: string
}

const MANIFEST_YAML = 'name: evil\nversion: 1.0.0\ndescription: "looks harmless"\n'
const outsideName = `aegis-escape-${randomBytes(4).toString('hex')}`

const CASES: Record<string, Entry[]> = {
  'a name with ..': [
    {name: 'aegis-kit.yaml', content: MANIFEST_YAML},
    {name: `../../../${outsideName}`, content: 'escaped'},
  ],
  'an absolute name': [
    {name: 'aegis-kit.yaml', content: MANIFEST_YAML},
    {name: `/tmp/${outsideName}`, content: 'escaped'},
  ],
  'a symlink out, then a file through it': [
    {name: 'aegis-kit.yaml', content: MANIFEST_YAML},
    {name: 'hooks', type: 'symlink', linkname: '../../../..'},
    {name: `hooks/${outsideName}`, content: 'escaped'},
  ],
  'a hard link to a host file': [
    {name: 'aegis-kit.yaml', content: MANIFEST_YAML},
    {name: 'passwd', type: 'link', linkname: '/etc/passwd'},
  ],
  'a fifo': [
    {name: 'aegis-kit.yaml', content: MANIFEST_YAML},
    {name: 'pipe', type: 'fifo'},
  ],
}

let registry: TestRegistry
let sandbox: CliSandbox

beforeAll(async () => {
  registry = await startRegistry()
  sandbox = await createSandbox()
})
afterAll(async () => {
  await registry?.stop()
  await sandbox?.cleanup()
})

async function craftLayer(entries: Entry[]): Promise<Buffer> {
  const pack = tar.pack()
  const chunks: Buffer[] = []
  const done = (async () => {
    for await (const chunk of pack as AsyncIterable<Buffer>) chunks.push(chunk)
  })()
  for (const entry of entries) {
    const type = entry.type ?? 'file'
    await new Promise<void>((resolve, reject) => {
      const header = {name: entry.name, type, mode: 0o644, ...(entry.linkname ? {linkname: entry.linkname} : {})}
      const callback = (error?: Error | null) => (error ? reject(error) : resolve())
      if (type === 'file') pack.entry(header, entry.content ?? '', callback)
      else pack.entry(header, callback)
    })
  }
  pack.finalize()
  await done
  return gzipSync(Buffer.concat(chunks))
}

/** Pushes a kit artifact whose layer is `layer` to `repository:tag` with the registry client. */
async function pushArtifact(repository: string, tag: string, layer: Buffer): Promise<void> {
  const repo = new RemoteRepository(`${registry.host}/${repository}`, {client: new RegistryClient()})
  const blob = (mediaType: string, bytes: Buffer): Descriptor => ({
    mediaType,
    digest: sha256Digest(bytes),
    size: bytes.length,
  })
  const config = Buffer.from('{}')
  const configDesc = blob(MediaType.Empty, config)
  const layerDesc = blob(MediaType.KitLayer, layer)
  await repo.pushBlob(configDesc, config)
  await repo.pushBlob(layerDesc, layer)
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: MediaType.ImageManifest,
      artifactType: MediaType.KitArtifact,
      config: configDesc,
      layers: [layerDesc],
      annotations: {'org.opencontainers.image.title': 'evil', 'org.opencontainers.image.version': '1.0.0'},
    }),
  )
  await repo.pushManifest(blob(MediaType.ImageManifest, manifest), manifest, tag)
}

async function filesUnder(dir: string): Promise<string[]> {
  if (!existsSync(dir)) return []
  return (await readdir(dir, {recursive: true})).map(String)
}

describe('pull refuses hostile kit layers', () => {
  for (const [label, entries] of Object.entries(CASES)) {
    it(`${label}`, async () => {
      const tag = label.replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '')
      await pushArtifact('hostile/kit', tag, await craftLayer(entries))
      const result = await sandbox.run(['pull', `${registry.host}/hostile/kit:${tag}`])
      expect(result.exitCode, result.all).toBe(1)
      expect(result.stderr).toContain('the kit layer is not a safe kit archive')
      expect(hasStackTrace(result.all)).toBe(false)

      // Nothing escaped, nothing half-unpacked stayed, nothing was tagged or recorded.
      expect(existsSync(join('/tmp', outsideName))).toBe(false)
      const everything = await filesUnder(sandbox.dir)
      expect(
        everything.filter((path) => path.includes(outsideName) || path.endsWith('passwd') || path.endsWith('pipe')),
      ).toEqual([])
      const kits = join(sandbox.env.AEGIS_KIT_HOME, 'store', 'kits')
      expect(await filesUnder(kits)).toEqual(expect.not.arrayContaining([expect.stringMatching(/^evil/), 'refs.json']))
      expect(await filesUnder(join(kits, '.tmp'))).toEqual([])
      const {images} = await sandbox.json<{images: unknown[]}>(['images'])
      expect(images).toEqual([])
    })
  }
})
