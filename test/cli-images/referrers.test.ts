/**
 * The SPDX SBOM `aegis-kit build` stores as a referrer of the image travels with it: `images
 * push`/`images pull` and the kit's `push`/`pull`, against a real docker-registry (no referrers
 * API, so the `sha256-<hex>` tag), checked with skopeo.
 */
import {readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'
import {createSandbox, skopeo, type CliSandbox} from './helpers.js'

interface Descriptor {
  mediaType: string
  digest: string
  size: number
  artifactType?: string
}
interface TransferReport {
  digest: string
  transferred: string[]
  skipped: string[]
  referrers: string[]
}
interface InspectReport {
  referrers: Array<Descriptor & {subject: string}>
}

const SPDX = 'application/spdx+json'

let registry: TestRegistry
let builder: CliSandbox
const pullers: CliSandbox[] = []
let image: string
let sbom: string

beforeAll(async () => {
  registry = await startRegistry()
  builder = await createSandbox()
  const build = await builder.json<{digest: string; platforms: Array<{sbom: Descriptor}>}>(['build', 'hello'])
  image = build.digest
  sbom = build.platforms[0]!.sbom.digest
}, 300_000)

afterAll(async () => {
  await registry?.stop()
  await builder?.cleanup()
  for (const sandbox of pullers) await sandbox.cleanup()
})

async function emptySandbox(): Promise<CliSandbox> {
  const sandbox = await createSandbox()
  pullers.push(sandbox)
  return sandbox
}

/** The referrers index the registry keeps for `image` in `repository`, read by skopeo. */
async function referrersTag(repository: string): Promise<{manifests: Descriptor[]}> {
  return JSON.parse(
    await skopeo(
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${registry.host}/${repository}:sha256-${image.slice(7)}`,
    ),
  ) as {manifests: Descriptor[]}
}

/** The SBOM document as stored in a sandbox's store: its manifest, then its one layer. */
async function storedSbom(sandbox: CliSandbox): Promise<{spdxVersion: string; packages: Array<{name: string}>}> {
  const blob = (digest: string) =>
    readFile(join(sandbox.env.AEGIS_KIT_HOME, 'store/blobs/sha256', digest.slice(7)), 'utf8')
  const manifest = JSON.parse(await blob(sbom)) as {artifactType: string; subject: Descriptor; layers: Descriptor[]}
  expect(manifest).toMatchObject({artifactType: SPDX, subject: {digest: image}})
  return JSON.parse(await blob(manifest.layers[0]!.digest)) as {spdxVersion: string; packages: Array<{name: string}>}
}

describe('the SBOM travels with the image', () => {
  it('images push sends it and lists it in the sha256-<hex> tag; images pull into an empty store brings it back', async () => {
    const pushed = await builder.json<TransferReport>(['images', 'push', 'hello:0.1.0', `${registry.host}/sbom/hello`])
    expect(pushed.referrers).toEqual([sbom])
    expect(pushed.transferred).toContain(sbom)
    expect((await referrersTag('sbom/hello')).manifests).toEqual([
      expect.objectContaining({digest: sbom, artifactType: SPDX}),
    ])

    const again = await builder.run(['images', 'push', 'hello:0.1.0', `${registry.host}/sbom/hello`])
    expect(again.stdout).toMatch(/\[0 pushed \(0 B\), 2 already there, 1 referrer\]/)

    const puller = await emptySandbox()
    const pulled = await puller.json<TransferReport>(['images', 'pull', `${registry.host}/sbom/hello:0.1.0`])
    expect(pulled).toMatchObject({digest: image, referrers: [sbom]})
    const inspected = await puller.json<InspectReport>(['images', 'inspect', `${registry.host}/sbom/hello:0.1.0`])
    expect(inspected.referrers).toEqual([expect.objectContaining({digest: sbom, artifactType: SPDX, subject: image})])
    const shown = await puller.run(['images', 'inspect', `${registry.host}/sbom/hello:0.1.0`])
    expect(shown.stdout).toContain(`referrer    ${sbom.slice(0, 19)}  ${SPDX}`)
    const document = await storedSbom(puller)
    expect(document.spdxVersion).toBe('SPDX-2.3')
    expect(document.packages.map((p) => p.name)).toContain('busybox-static')

    const all = await puller.json<{images: Array<{name: string; tag: string}>}>(['images', '--all'])
    expect(all.images.map((entry) => `${entry.name}:${entry.tag}`)).toContain(
      `${registry.host}/sbom/hello:sha256-${image.slice(7)}`,
    )
    const plain = await puller.json<{images: Array<{tag: string}>}>(['images'])
    expect(plain.images.map((entry) => entry.tag)).toEqual(['0.1.0'])
  })

  it("push KIT sends the image's SBOM with the kit, and pull KIT brings it back", async () => {
    const pushed = await builder.json<TransferReport>(['push', 'hello', `${registry.host}/kits/hello`])
    expect(pushed.referrers).toEqual([sbom])
    expect((await referrersTag('kits/hello')).manifests).toEqual([
      expect.objectContaining({digest: sbom, artifactType: SPDX}),
    ])

    const puller = await emptySandbox()
    const pulled = await puller.json<TransferReport>(['pull', `${registry.host}/kits/hello:0.1.0`])
    expect(pulled.referrers).toEqual([sbom])
    const inspected = await puller.json<InspectReport>(['images', 'inspect', `${registry.host}/kits/hello:0.1.0`])
    expect(inspected.referrers).toEqual([expect.objectContaining({digest: sbom, artifactType: SPDX, subject: image})])
    expect((await storedSbom(puller)).spdxVersion).toBe('SPDX-2.3')
  })
})
