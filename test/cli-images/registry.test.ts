/**
 * `images push` and `images pull` against a real docker-registry: what aegis-kit pushes skopeo
 * reads back, what skopeo pushes aegis-kit pulls, re-pushes only check, failures say to re-run.
 */
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {hasStackTrace} from '../helpers/cli.js'
import {freePort, startRegistry, type TestRegistry} from '../helpers/registry.js'
import {createSandbox, makeUmociImage, skopeo, skopeoInspect, type CliSandbox} from './helpers.js'

interface Report {
  local: string
  remote: string
  digest: string
  transferred: string[]
  skipped: string[]
  mounted: string[]
  bytesTransferred: number
}

let sandbox: CliSandbox
let registry: TestRegistry
let layout: string
let localDigest: string

beforeAll(async () => {
  sandbox = await createSandbox()
  registry = await startRegistry()
  layout = await makeUmociImage(sandbox.dir, 'app', {tag: '1.0', layers: 3, layerSize: 512 * 1024})
  const imported = await sandbox.json<{imported: Array<{digest: string}>}>([
    'images',
    'import',
    `oci-layout:${layout}:1.0`,
    '--tag',
    'app:1.0',
  ])
  localDigest = imported.imported[0]!.digest
})
afterAll(async () => {
  await registry?.stop()
  await sandbox?.cleanup()
})

describe('images push', () => {
  it('pushes an imported image that skopeo then reads, with one quiet line per blob when not a TTY', async () => {
    const result = await sandbox.run(['images', 'push', 'app:1.0', `${registry.host}/team/app`])
    expect(result.exitCode, result.all).toBe(0)
    // DEST without a tag keeps the local one.
    expect(result.stdout).toBe(
      `Pushed app:1.0 to ${registry.host}/team/app:1.0@${localDigest} [5 pushed (1.6 MB), 0 already there]`,
    )
    const lines = result.stderr.trim().split('\n')
    expect(lines).toHaveLength(5) // three layers, config, manifest
    for (const line of lines)
      expect(line).toMatch(/^pushed\s+sha256:[0-9a-f]{12}\s+[\d.]+ (B|kB|MB)\s+(layer|config|manifest)$/)
    expect(result.stderr).not.toContain('\r')

    const inspected = await skopeoInspect(`${registry.host}/team/app:1.0`)
    expect(inspected.Digest).toBe(localDigest)
    expect(inspected.Layers).toHaveLength(3)
  })

  it('an unchanged re-push only checks, and --json prints just the result', async () => {
    const result = await sandbox.run(['images', 'push', 'app:1.0', `${registry.host}/team/app:1.0`, '--json'])
    expect(result.exitCode, result.all).toBe(0)
    expect(result.stderr).toBe('')
    const report = JSON.parse(result.stdout) as Report
    expect(report).toMatchObject({
      local: 'app:1.0',
      digest: localDigest,
      transferred: [],
      mounted: [],
      bytesTransferred: 0,
    })
    expect(report.skipped).toContain(localDigest)
    expect(report.remote).toBe(`${registry.host}/team/app:1.0@${localDigest}`)
  })

  it('--chunked pushes to another repository (layers mounted or uploaded in chunks)', async () => {
    const report = await sandbox.json<Report>([
      'images',
      'push',
      'app:1.0',
      `${registry.host}/chunked/app:c`,
      '--chunked',
    ])
    expect(report.digest).toBe(localDigest)
    expect((await skopeoInspect(`${registry.host}/chunked/app:c`)).Digest).toBe(localDigest)
  })

  it('a push to a registry that is down says what failed and that re-running resumes', async () => {
    const dead = `127.0.0.1:${await freePort()}` // nothing listens there
    const result = await sandbox.run(['images', 'push', 'app:1.0', `${dead}/team/app:1.0`])
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(
      new RegExp(`^Error: Push of app:1\\.0 to ${dead.replace(/\./g, '\\.')}/team/app:1\\.0 failed: `),
    )
    expect(result.stderr).toMatch(/hint: .*Re-run the same command to resume/)
    expect(result.stderr.match(/Re-run/g)).toHaveLength(1)
    expect(hasStackTrace(result.all)).toBe(false)
  }, 90_000)
})

describe('images pull', () => {
  it('pulls what skopeo pushed and lists it', async () => {
    const other = await makeUmociImage(sandbox.dir, 'other', {tag: 'v2', layers: 2})
    await skopeo('copy', '--dest-tls-verify=false', `oci:${other}:v2`, `docker://${registry.host}/skopeo/other:v2`)
    const pushedDigest = (await skopeoInspect(`${registry.host}/skopeo/other:v2`)).Digest

    const result = await sandbox.run(['images', 'pull', `${registry.host}/skopeo/other:v2`])
    expect(result.exitCode, result.all).toBe(0)
    expect(result.stdout).toMatch(
      new RegExp(
        `^Pulled ${registry.host}/skopeo/other:v2@${pushedDigest} as ${registry.host}/skopeo/other:v2 \\[4 pulled`,
      ),
    )
    expect(
      result.stderr
        .trim()
        .split('\n')
        .every((line) => /^pulled\s+sha256:/.test(line)),
    ).toBe(true)

    const {images} = await sandbox.json<{images: Array<{name: string; tag: string; digest: string}>}>(['images'])
    expect(images).toContainEqual(
      expect.objectContaining({name: `${registry.host}/skopeo/other`, tag: 'v2', digest: pushedDigest}),
    )
  })

  it('a pull by digest into an empty store, under --tag, with --json', async () => {
    const fresh = await createSandbox()
    try {
      const report = await fresh.json<Report>([
        'images',
        'pull',
        `${registry.host}/team/app@${localDigest}`,
        '--tag',
        'again:1',
      ])
      expect(report).toMatchObject({local: 'again:1', digest: localDigest, skipped: []})
      expect(report.transferred).toHaveLength(5)
      const inspected = await fresh.json<{tags: string[]}>(['images', 'inspect', 'again:1'])
      expect(inspected.tags).toEqual(['again:1'])
      // Pulling again transfers nothing.
      const again = await fresh.json<Report>(['images', 'pull', `${registry.host}/team/app:1.0`])
      expect(again.transferred).toEqual([])
      expect(again.local).toBe(`${registry.host}/team/app:1.0`)
    } finally {
      await fresh.cleanup()
    }
  })

  it('a missing image is a clear error', async () => {
    const result = await sandbox.run(['images', 'pull', `${registry.host}/team/nothing:1`])
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(/^Error: Pull of .*team\/nothing:1 failed: .*not found/)
    expect(hasStackTrace(result.all)).toBe(false)
  })
})
