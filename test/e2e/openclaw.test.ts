// The real thing, end to end: `aegis-kit build openclaw` (Debian from Debian's archive, Node 24
// and OpenClaw from npm) checked with umoci, a chroot, skopeo and a real registry; then
// `aegis-kit run openclaw --expose` boots it in a microVM (TCG here: about two minutes) and the
// gateway answers through the exposed port; then a second clean build for reproducibility.
// Slow (several minutes), and part of the suite on purpose.
import {createHash} from 'node:crypto'
import {existsSync, mkdtempSync, readdirSync, readFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {runCli} from '../helpers/cli.js'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'
import {descendants, freePort, startRun, waitGone} from '../run/helpers.js'

const OPENCLAW = '2026.9.6'
const NODE = 'v24.21.0'

interface BuildReport {
  reference: string
  digest: string
  platforms: Array<{layers: Array<{step: string; digest: string}>; packages: {deb: number; npm: number}}>
}

let homeA: string
let reportA: BuildReport
let registry: TestRegistry

async function build(home: string): Promise<BuildReport> {
  const result = await runCli(['build', 'openclaw', '--json'], {env: {AEGIS_KIT_HOME: home}, timeout: 900_000})
  expect(result.exitCode, result.stderr.slice(-2000)).toBe(0)
  return JSON.parse(result.stdout) as BuildReport
}

beforeAll(async () => {
  homeA = mkdtempSync(path.join(tmpdir(), 'aegis-kit-openclaw-a-'))
  reportA = await build(homeA)
  registry = await startRegistry({auth: 'none'})
}, 900_000)

afterAll(async () => {
  await registry?.stop()
})

describe('build openclaw', () => {
  it(`puts openclaw:${OPENCLAW} in the store with base, node, npm and aegis layers and an SBOM`, () => {
    expect(reportA.reference).toBe(`openclaw:${OPENCLAW}`)
    expect(reportA.platforms[0].layers.map((layer) => layer.step)).toEqual(['base', 'node', 'npm', 'aegis'])
    expect(reportA.platforms[0].packages.deb).toBeGreaterThan(50)
    expect(reportA.platforms[0].packages.npm).toBeGreaterThan(100)
  })

  it('unpacked with umoci, its root runs node and openclaw at the pinned versions', async () => {
    const bundle = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-openclaw-root-')), 'bundle')
    await execa('umoci', ['unpack', '--image', `${path.join(homeA, 'store')}:openclaw:${OPENCLAW}`, bundle])
    const config = JSON.parse((await execa('cat', [path.join(bundle, 'config.json')])).stdout) as {process: {env: string[]; args: string[]}}
    const pathEnv = config.process.env.find((entry) => entry.startsWith('PATH='))!
    expect(config.process.args).toEqual(['openclaw', 'gateway', '--allow-unconfigured'])
    const run = (command: string) => execa('chroot', [path.join(bundle, 'rootfs'), '/usr/bin/env', '-i', pathEnv, 'HOME=/tmp', command, '--version'])
    expect((await run('node')).stdout.trim()).toBe(NODE)
    expect((await run('openclaw')).stdout).toContain(`OpenClaw ${OPENCLAW}`)
  }, 300_000)

  it('skopeo reads it and copies it to a registry; aegis-kit pushes it too', async () => {
    const store = `oci:${path.join(homeA, 'store')}:openclaw:${OPENCLAW}`
    const inspected = JSON.parse((await execa('skopeo', ['inspect', store])).stdout) as {Digest: string; Layers: string[]}
    expect(inspected.Digest).toBe(reportA.digest)
    await execa('skopeo', ['copy', '--dest-tls-verify=false', store, `docker://${registry.host}/skopeo/openclaw:${OPENCLAW}`])
    const pushed = await runCli(['images', 'push', `openclaw:${OPENCLAW}`, `${registry.host}/aegis/openclaw:${OPENCLAW}`, '--json'], {env: {AEGIS_KIT_HOME: homeA}, timeout: 600_000})
    expect(pushed.exitCode, pushed.stderr).toBe(0)
    for (const repo of ['skopeo/openclaw', 'aegis/openclaw']) {
      const remote = JSON.parse((await execa('skopeo', ['inspect', '--tls-verify=false', `docker://${registry.host}/${repo}:${OPENCLAW}`])).stdout) as {Layers: string[]}
      expect(remote.Layers).toEqual(inspected.Layers)
    }
    const raw = (await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/aegis/openclaw:${OPENCLAW}`], {stripFinalNewline: false})).stdout
    expect(`sha256:${createHash('sha256').update(raw).digest('hex')}`).toBe(reportA.digest)
  }, 600_000)

  // Under TCG (no usable KVM here) the gateway takes minutes: the kit patches OpenClaw's 5 s
  // worker start-up limit (image.npm.patches) and allows its healthcheck 600 s.
  it('run openclaw --expose: /healthz answers 200 and / serves the Control UI from inside the VM', async () => {
    const port = await freePort()
    const key = 'sk-ant-api03-E2E-KNOWN-SECRET-9f8e7d6c5b4a'
    const workspace = mkdtempSync(path.join(tmpdir(), 'aegis-kit-openclaw-ws-'))
    const run = startRun(['openclaw', '--expose', `${port}:18789`, '--secret', 'ANTHROPIC_API_KEY', '--workspace', workspace], {AEGIS_KIT_HOME: homeA, ANTHROPIC_API_KEY: key})
    try {
      const [, url, token] = await run.waitFor(/Control UI: (http:\/\/127\.0\.0\.1:\d+\/)#token=([0-9a-f]{64})/, 840_000)
      expect(url).toBe(`http://127.0.0.1:${port}/`)
      const health = await fetch(`${url}healthz`)
      expect(health.status).toBe(200)
      expect(await health.json()).toMatchObject({ok: true})
      const page = await fetch(url)
      expect(page.status).toBe(200)
      expect(await page.text()).toMatch(/<html/i)
      // The workload writes its state into /workspace: it appears in the host directory.
      expect(existsSync(path.join(workspace, '.openclaw/openclaw.json'))).toBe(true)
      const written = readdirSync(path.join(workspace, '.openclaw'), {recursive: true}).map(String)
      expect(written.filter((entry) => entry !== 'openclaw.json').length).toBeGreaterThan(0)
      expect(readFileSync(path.join(workspace, '.openclaw/openclaw.json'), 'utf8')).not.toContain(token)
      const helpers = descendants(run.child.pid!)
      run.child.kill('SIGINT')
      await run.child
      expect(await waitGone(helpers, 30_000)).toEqual([])
      expect(run.output()).not.toContain(key)
    } finally {
      run.child.kill('SIGKILL')
    }
  }, 960_000)

  it('a second clean build in another empty store gives the same manifest digest', async () => {
    const reportB = await build(mkdtempSync(path.join(tmpdir(), 'aegis-kit-openclaw-b-')))
    expect(reportB.platforms[0].layers).toEqual(reportA.platforms[0].layers.map((layer) => expect.objectContaining({step: layer.step, digest: layer.digest})))
    expect(reportB.digest).toBe(reportA.digest)
  }, 900_000)
})
