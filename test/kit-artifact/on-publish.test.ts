/** A kit's on_publish hook on `aegis-kit push`: its report is printed, attached to the kit artifact, and pulled back. */
import {randomBytes} from 'node:crypto'
import {existsSync} from 'node:fs'
import {rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {hasStackTrace} from '../helpers/cli.js'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'
import {createSandbox, type CliSandbox} from '../cli-images/helpers.js'
import {copyHello, registryGet, registryJson} from './helpers.js'

const REPORT_TYPE = 'application/vnd.aegis.kit.report.v1+json'
const HOOK = `export function on_publish(app, release, artifacts) {
  return {kit: app.name + '@' + app.version, reference: release.reference, tag: release.tag, artifacts: artifacts.map((a) => a.kind + ' ' + a.digest)}
}
`

let registry: TestRegistry
let sandbox: CliSandbox
let kitDir: string
let failingDir: string
let markingDir: string
const marker = join(tmpdir(), `aegis-on-publish-ran-${randomBytes(4).toString('hex')}`)

beforeAll(async () => {
  registry = await startRegistry()
  sandbox = await createSandbox()
  kitDir = await copyHello({'hooks/on_publish.mjs': HOOK}, '  on_publish: hooks/on_publish.mjs\n')
  failingDir = await copyHello(
    {
      'hooks/on_publish.mjs':
        'export function on_publish() { throw new Error("release blocked: changelog missing") }\n',
    },
    '  on_publish: hooks/on_publish.mjs\n',
  )
  const marking = `import {writeFileSync} from 'node:fs'\nexport function on_publish() {\n  writeFileSync(${JSON.stringify(marker)}, 'ran')\n  return {ran: true}\n}\n`
  markingDir = await copyHello({'hooks/on_publish.mjs': marking}, '  on_publish: hooks/on_publish.mjs\n')
})
afterAll(async () => {
  await registry?.stop()
  await sandbox?.cleanup()
  await rm(marker, {force: true})
  for (const dir of [kitDir, failingDir, markingDir]) if (dir) await rm(join(dir, '..'), {recursive: true, force: true})
})

describe('on_publish', () => {
  it('runs on push; the report is printed and attached to the kit artifact as a JSON layer', async () => {
    const result = await sandbox.run(['push', kitDir, `${registry.host}/kits/reported:r1`])
    expect(result.exitCode, result.all).toBe(0)
    const printed = /^on_publish report:\n([\s\S]*?\n\})\n/.exec(result.stdout)?.[1]
    expect(printed).toBeDefined()
    const report = JSON.parse(printed!) as {kit: string; reference: string; tag: string; artifacts: string[]}
    expect(report).toMatchObject({kit: 'hello@0.1.0', reference: `${registry.host}/kits/reported:r1`, tag: 'r1'})
    expect(report.artifacts).toEqual([expect.stringMatching(/^kit sha256:[0-9a-f]{64}$/)])

    // Retrievable from the registry: manifest → report layer → blob.
    const manifest = await registryJson<{layers: Array<{mediaType: string; digest: string}>}>(
      registry.url,
      'kits/reported/manifests/r1',
    )
    expect(manifest.layers.map((layer) => layer.mediaType)).toEqual([
      'application/vnd.aegis.kit.layer.v1.tar+gzip',
      REPORT_TYPE,
    ])
    const blob = await registryGet(registry.url, `kits/reported/blobs/${manifest.layers[1]!.digest}`)
    expect(JSON.parse(blob.body.toString('utf8'))).toEqual(report)
  })

  it('the same kit pushed again gives the same digests, report included; pull prints the report', async () => {
    const first = await sandbox.json<{digest: string; report: unknown}>([
      'push',
      kitDir,
      `${registry.host}/kits/reported:r1`,
    ])
    const again = await sandbox.json<{digest: string; report: unknown; transferred: string[]}>([
      'push',
      kitDir,
      `${registry.host}/kits/reported:r1`,
    ])
    expect(again.digest).toBe(first.digest)
    expect(again.transferred).toEqual([])

    const consumer = await createSandbox()
    try {
      const pulled = await consumer.run(['pull', `${registry.host}/kits/reported:r1`])
      expect(pulled.exitCode, pulled.all).toBe(0)
      expect(pulled.stdout).toContain('on_publish report:')
      const json = await consumer.json<{report: unknown}>(['pull', `${registry.host}/kits/reported:r1`])
      expect(json.report).toEqual(first.report)
    } finally {
      await consumer.cleanup()
    }
  })

  it('a failing on_publish stops the push before anything is sent', async () => {
    const result = await sandbox.run(['push', failingDir, `${registry.host}/kits/blocked:1`])
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toContain('on_publish')
    expect(result.stderr).toContain('release blocked: changelog missing')
    expect(hasStackTrace(result.all)).toBe(false)
    expect((await registryGet(registry.url, 'kits/blocked/manifests/1')).status).toBe(404)
  })

  it('pushing a pulled kit elsewhere never runs its on_publish: the push succeeds without a report and says so', async () => {
    const published = await sandbox.run(['push', markingDir, `${registry.host}/kits/marking:1`])
    expect(published.exitCode, published.all).toBe(0)
    // The publisher's own push ran it (where a hook can write the host's /tmp); only the re-push matters.
    await rm(marker, {force: true})

    const consumer = await createSandbox()
    try {
      expect((await consumer.run(['pull', `${registry.host}/kits/marking:1`])).exitCode).toBe(0)
      const pushed = await consumer.run([
        'push',
        `${registry.host}/kits/marking:1`,
        `${registry.host}/mirror/marking:1`,
      ])
      expect(pushed.exitCode, pushed.all).toBe(0)
      expect(existsSync(marker)).toBe(false)
      expect(pushed.stdout).not.toContain('on_publish report:')
      expect(pushed.stderr).toContain('aegis-kit: on_publish of kit hello 0.1.0 was not run: it is a pulled kit')
      const manifest = await registryJson<{layers: Array<{mediaType: string}>}>(
        registry.url,
        'mirror/marking/manifests/1',
      )
      expect(manifest.layers.map((layer) => layer.mediaType)).toEqual(['application/vnd.aegis.kit.layer.v1.tar+gzip'])
    } finally {
      await consumer.cleanup()
    }
  })
})
