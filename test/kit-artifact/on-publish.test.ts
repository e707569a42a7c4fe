/** A kit's on_publish hook on `aegis-kit push`: its report is printed, attached to the kit artifact, and pulled back. */
import {rm} from 'node:fs/promises'
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

beforeAll(async () => {
  registry = await startRegistry()
  sandbox = await createSandbox()
  kitDir = await copyHello({'hooks/on_publish.mjs': HOOK}, '  on_publish: hooks/on_publish.mjs\n')
  failingDir = await copyHello({'hooks/on_publish.mjs': 'export function on_publish() { throw new Error("release blocked: changelog missing") }\n'}, '  on_publish: hooks/on_publish.mjs\n')
})
afterAll(async () => {
  await registry?.stop()
  await sandbox?.cleanup()
  for (const dir of [kitDir, failingDir]) if (dir) await rm(join(dir, '..'), {recursive: true, force: true})
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
    const manifest = await registryJson<{layers: Array<{mediaType: string; digest: string}>}>(registry.url, 'kits/reported/manifests/r1')
    expect(manifest.layers.map((layer) => layer.mediaType)).toEqual(['application/vnd.aegis.kit.layer.v1.tar+gzip', REPORT_TYPE])
    const blob = await registryGet(registry.url, `kits/reported/blobs/${manifest.layers[1]!.digest}`)
    expect(JSON.parse(blob.body.toString('utf8'))).toEqual(report)
  })

  it('the same kit pushed again gives the same digests, report included; pull prints the report', async () => {
    const first = await sandbox.json<{digest: string; report: unknown}>(['push', kitDir, `${registry.host}/kits/reported:r1`])
    const again = await sandbox.json<{digest: string; report: unknown; transferred: string[]}>(['push', kitDir, `${registry.host}/kits/reported:r1`])
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
})
