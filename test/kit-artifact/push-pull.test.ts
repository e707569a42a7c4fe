/**
 * `aegis-kit push` and `pull` against a real docker-registry: the kit as an OCI artifact, alone
 * or in one index with its image, read back by skopeo; reproducible digests; a pulled kit that
 * `validate` and `hooks render-env` accept by reference.
 */
import {readFile, readdir, rm, symlink, utimes} from 'node:fs/promises'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {repoRoot} from '../helpers/cli.js'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'
import {createSandbox, makeUmociImage, skopeo, type CliSandbox} from '../cli-images/helpers.js'
import {copyHello} from './helpers.js'

interface PushReport {
  kit: string
  version: string
  remote: string
  digest: string
  mediaType: string
  kitArtifact: string
  image: string | null
  platforms: string[]
  transferred: string[]
  skipped: string[]
}
interface PullReport {
  kit: string
  version: string
  dir: string
  local: string
  digest: string
  kitArtifact: string
  platforms: string[]
  transferred: string[]
}

const INDEX = 'application/vnd.oci.image.index.v1+json'
const MANIFEST = 'application/vnd.oci.image.manifest.v1+json'

let registry: TestRegistry
let publisher: CliSandbox
let kitAlone: PushReport

beforeAll(async () => {
  registry = await startRegistry()
  publisher = await createSandbox()
})
afterAll(async () => {
  await registry?.stop()
  await publisher?.cleanup()
})

async function rawManifest(reference: string): Promise<Record<string, any>> {
  return JSON.parse(await skopeo('inspect', '--tls-verify=false', '--raw', `docker://${reference}`)) as Record<
    string,
    any
  >
}

describe('push KIT REF', () => {
  it('publishes a kit without a built image as one artifact manifest that skopeo reads', async () => {
    const result = await publisher.run(['push', 'hello', `${registry.host}/kits/hello-alone`])
    expect(result.exitCode, result.all).toBe(0)
    expect(result.stdout).toMatch(
      new RegExp(
        `^Pushed kit hello 0\\.1\\.0 alone \\(no image\\) to ${registry.host}/kits/hello-alone:0\\.1\\.0@sha256:[0-9a-f]{64} \\[3 pushed`,
      ),
    )
    const manifest = await rawManifest(`${registry.host}/kits/hello-alone:0.1.0`)
    expect(manifest).toMatchObject({
      schemaVersion: 2,
      mediaType: MANIFEST,
      artifactType: 'application/vnd.aegis.kit.v1',
      config: {
        mediaType: 'application/vnd.oci.empty.v1+json',
        size: 2,
        digest: 'sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a',
      },
      annotations: {
        'org.opencontainers.image.title': 'hello',
        'org.opencontainers.image.version': '0.1.0',
        'io.aegis.kit.schema-version': '1',
      },
    })
    expect(manifest.layers).toHaveLength(1)
    expect(manifest.layers[0]).toMatchObject({
      mediaType: 'application/vnd.aegis.kit.layer.v1.tar+gzip',
      annotations: {'org.opencontainers.image.title': 'hello-0.1.0.tar.gz'},
    })
    kitAlone = await publisher.json<PushReport>(['push', 'hello', `${registry.host}/kits/hello-alone`])
    expect(kitAlone).toMatchObject({
      kit: 'hello',
      version: '0.1.0',
      image: null,
      platforms: [],
      mediaType: MANIFEST,
      transferred: [],
    })
    expect(kitAlone.kitArtifact).toBe(kitAlone.digest)
  })

  it('pushing the same kit twice, from another store and another copy of the kit, gives the same digests', async () => {
    const other = await createSandbox()
    const copy = await copyHello()
    try {
      // Different mtimes and an ignored .git directory do not change the layer.
      await utimes(join(copy, 'aegis-kit.yaml'), new Date(2001, 1, 1), new Date(2001, 1, 1))
      await symlink('/nonexistent', join(copy, '.git')).catch(() => undefined)
      const again = await other.json<PushReport>(['push', copy, `${registry.host}/kits/hello-alone:again`])
      expect(again.digest).toBe(kitAlone.digest)
      expect(again.transferred).toEqual([])
    } finally {
      await other.cleanup()
      await rm(join(copy, '..'), {recursive: true, force: true})
    }
  })

  it('with the image built, one reference resolves to an index of the image (with platform) and the kit (with artifactType)', async () => {
    const layout = await makeUmociImage(publisher.dir, 'hello-image', {tag: '0.1.0', layers: 2})
    const imported = await publisher.json<{imported: Array<{digest: string}>}>([
      'images',
      'import',
      `oci-layout:${layout}:0.1.0`,
      '--tag',
      'hello:0.1.0',
    ])
    const imageDigest = imported.imported[0]!.digest

    const first = await publisher.json<PushReport>(['push', 'hello', `${registry.host}/kits/hello`])
    expect(first).toMatchObject({
      image: 'hello:0.1.0',
      platforms: ['linux/amd64'],
      mediaType: INDEX,
      kitArtifact: kitAlone.kitArtifact,
    })
    const second = await publisher.json<PushReport>(['push', 'hello', `${registry.host}/kits/hello:0.1.0`])
    expect(second.digest).toBe(first.digest)
    expect(second.transferred).toEqual([])

    const index = await rawManifest(`${registry.host}/kits/hello:0.1.0`)
    expect(index.mediaType).toBe(INDEX)
    expect(index.manifests).toEqual([
      {
        mediaType: MANIFEST,
        digest: imageDigest,
        size: expect.any(Number),
        platform: {os: 'linux', architecture: 'amd64'},
      },
      {
        mediaType: MANIFEST,
        digest: kitAlone.kitArtifact,
        size: expect.any(Number),
        artifactType: 'application/vnd.aegis.kit.v1',
      },
    ])
    // Image tools pick the platform's image from the same reference.
    const inspected = JSON.parse(
      await skopeo('inspect', '--tls-verify=false', `docker://${registry.host}/kits/hello:0.1.0`),
    ) as {Digest: string; Architecture: string}
    expect(inspected.Architecture).toBe('amd64')
    // The published release is in the local store under the destination's name.
    const {images} = await publisher.json<{images: Array<{name: string; tag: string; digest: string}>}>(['images'])
    expect(images).toContainEqual(
      expect.objectContaining({name: `${registry.host}/kits/hello`, tag: '0.1.0', digest: first.digest}),
    )
  })

  it('refuses a kit with a symlink leading out of it, and follows one that stays inside', async () => {
    const escaping = await copyHello()
    const inside = await copyHello()
    try {
      await symlink('/etc/passwd', join(escaping, 'www', 'passwd'))
      const refused = await publisher.run(['push', escaping, `${registry.host}/kits/escaping`])
      expect(refused.exitCode).toBe(1)
      expect(refused.stderr).toContain('www/passwd in the kit is a symlink to /etc/passwd, outside the kit')
      expect(await registryTags(`kits/escaping`)).toEqual([])

      await symlink('index.html', join(inside, 'www', 'alias.html'))
      const pushed = await publisher.json<PushReport>(['push', inside, `${registry.host}/kits/inside`])
      const pulled = await createSandbox()
      try {
        const report = await pulled.json<PullReport>(['pull', `${registry.host}/kits/inside:0.1.0`])
        expect(report.digest).toBe(pushed.digest)
        expect(await readFile(join(report.dir, 'www', 'alias.html'), 'utf8')).toBe(
          await readFile(join(inside, 'www', 'index.html'), 'utf8'),
        )
      } finally {
        await pulled.cleanup()
      }
    } finally {
      await rm(join(escaping, '..'), {recursive: true, force: true})
      await rm(join(inside, '..'), {recursive: true, force: true})
    }
  })
})

describe('pull REF', () => {
  let consumer: CliSandbox
  let pulled: PullReport
  beforeAll(async () => {
    consumer = await createSandbox()
  })
  afterAll(async () => {
    await consumer?.cleanup()
  })

  it('pulls the kit and its image into an empty AEGIS_KIT_HOME and unpacks the kit under the store', async () => {
    const result = await consumer.run(['pull', `${registry.host}/kits/hello:0.1.0`])
    expect(result.exitCode, result.all).toBe(0)
    expect(result.stdout).toMatch(/^Pulled kit hello 0\.1\.0 with image \(linux\/amd64\) from /)
    pulled = await consumer.json<PullReport>(['pull', `${registry.host}/kits/hello:0.1.0`])
    expect(pulled).toMatchObject({
      kit: 'hello',
      version: '0.1.0',
      local: `${registry.host}/kits/hello:0.1.0`,
      platforms: ['linux/amd64'],
      transferred: [],
    })
    expect(pulled.dir).toMatch(new RegExp(`^${consumer.env.AEGIS_KIT_HOME}/store/kits/hello/0\\.1\\.0-[0-9a-f]{12}$`))
    for (const file of ['aegis-kit.yaml', 'hooks/render_env.mjs', 'hooks/validate_config.mjs', 'www/index.html']) {
      expect(await readFile(join(pulled.dir, file), 'utf8')).toBe(
        await readFile(join(repoRoot, 'kits/hello', file), 'utf8'),
      )
    }
    const {images} = await consumer.json<{images: Array<{name: string; platforms: string[]}>}>(['images'])
    expect(images).toEqual([expect.objectContaining({name: `${registry.host}/kits/hello`, platforms: ['linux/amd64']})])
  })

  it('validate and hooks render-env (with --trust) accept the pulled reference, and NAME:VERSION', async () => {
    const validated = await consumer.json<{valid: boolean; name: string}>([
      'validate',
      `${registry.host}/kits/hello:0.1.0`,
    ])
    expect(validated).toMatchObject({valid: true, name: 'hello'})
    expect(await consumer.json(['validate', 'hello:0.1.0'])).toMatchObject({valid: true, name: 'hello'})
    // A pulled kit's hooks are someone else's code: they run once the user trusts the kit.
    const rendered = await consumer.json<{kit: string; env: Record<string, string>}>([
      'hooks',
      'render-env',
      `${registry.host}/kits/hello:0.1.0`,
      '--trust',
    ])
    expect(rendered).toMatchObject({kit: 'hello', env: {HELLO_TITLE: 'Hello from aegis-kit'}})
    const missing = await consumer.run(['validate', `${registry.host}/kits/never-pulled:1`])
    expect(missing.exitCode).toBe(1)
    expect(missing.stderr).toContain('no pulled kit of that reference')
  })

  it('--kit-only pulls just the kit artifact', async () => {
    const other = await createSandbox()
    try {
      const report = await other.json<PullReport>(['pull', `${registry.host}/kits/hello:0.1.0`, '--kit-only'])
      expect(report).toMatchObject({digest: kitAlone.kitArtifact, platforms: []})
      expect(await readdir(join(report.dir, 'hooks'))).toEqual(['render_env.mjs', 'validate_config.mjs'])
    } finally {
      await other.cleanup()
    }
  })

  it('an image that is not a kit is refused with a pointer to images pull', async () => {
    const layout = await makeUmociImage(consumer.dir, 'plain', {tag: '1', layers: 1})
    await skopeo('copy', '--dest-tls-verify=false', `oci:${layout}:1`, `docker://${registry.host}/plain/image:1`)
    const result = await consumer.run(['pull', `${registry.host}/plain/image:1`])
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toContain(`${registry.host}/plain/image:1 is not a kit`)
    expect(result.stderr).toContain('aegis-kit images pull')
  })
})

async function registryTags(repository: string): Promise<string[]> {
  const response = await fetch(`${registry.url}/v2/${repository}/tags/list`)
  if (response.status === 404) return []
  return ((await response.json()) as {tags?: string[] | null}).tags ?? []
}
