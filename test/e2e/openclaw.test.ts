// The real thing, end to end: `aegis-kit build openclaw` (Debian from Debian's archive, Node 24
// and OpenClaw from npm) checked with umoci, a chroot, skopeo and a real registry; then
// `aegis-kit run openclaw --expose` boots it in a microVM (TCG here: about two minutes) and the
// gateway answers through the exposed port, and the printed Control UI URL's token authenticates
// there (the Control UI's WebSocket handshake and an HTTP call); then a second clean build for
// reproducibility.
// Slow (several minutes), and part of the suite on purpose.
import {createHash} from 'node:crypto'
import {existsSync, mkdtempSync, readdirSync, readFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {runCli} from '../helpers/cli.js'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'
import {NODE24_VERSION, nodeRuntime} from '../helpers/toolchain.js'
import type {Attempt, Outcome} from '../kits/openclaw-control-ui-connect.js'
import {descendants, freePort, startRun, waitGone} from '../run/helpers.js'

/** The Control UI's WebSocket handshake, run by Node 24 (Node 20 has no WebSocket). */
const controlUiConnect = fileURLToPath(new URL('../kits/openclaw-control-ui-connect.ts', import.meta.url))

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
  it(`puts openclaw:${OPENCLAW} in the store with base, node, npm and aegis layers`, () => {
    expect(reportA.reference).toBe(`openclaw:${OPENCLAW}`)
    expect(reportA.platforms[0].layers.map((layer) => layer.step)).toEqual(['base', 'node', 'npm', 'aegis'])
    expect(reportA.platforms[0].packages.deb).toBeGreaterThan(50)
    expect(reportA.platforms[0].packages.npm).toBeGreaterThan(100)
  })

  it('its SBOM is an SPDX document filed as a referrer of the image manifest, listing the openclaw npm package', async () => {
    const inspected = await runCli(['images', 'inspect', `openclaw:${OPENCLAW}`, '--json'], {
      env: {AEGIS_KIT_HOME: homeA},
    })
    expect(inspected.exitCode, inspected.stderr).toBe(0)
    const {images, referrers} = JSON.parse(inspected.stdout) as {
      images: Array<{digest: string}>
      referrers: Array<{digest: string; artifactType?: string; subject: string}>
    }
    expect(images).toHaveLength(1)
    const sboms = referrers.filter((referrer) => referrer.artifactType === 'application/spdx+json')
    expect(sboms.map((referrer) => referrer.subject)).toEqual([images[0].digest])
    const blob = (digest: string) =>
      JSON.parse(readFileSync(path.join(homeA, 'store/blobs/sha256', digest.slice('sha256:'.length)), 'utf8'))
    const manifest = blob(sboms[0].digest) as {
      artifactType: string
      subject: {digest: string}
      layers: Array<{mediaType: string; digest: string}>
    }
    expect(manifest.artifactType).toBe('application/spdx+json')
    expect(manifest.subject.digest).toBe(images[0].digest)
    expect(manifest.layers.map((layer) => layer.mediaType)).toEqual(['application/spdx+json'])
    const sbom = blob(manifest.layers[0].digest) as {
      spdxVersion: string
      packages: Array<{name: string; versionInfo: string; externalRefs?: Array<{referenceLocator: string}>}>
    }
    expect(sbom.spdxVersion).toBe('SPDX-2.3')
    const purls = sbom.packages.flatMap((entry) => entry.externalRefs ?? []).map((ref) => ref.referenceLocator)
    expect(purls).toContain(`pkg:npm/openclaw@${OPENCLAW}`)
    expect(purls.filter((purl) => purl.startsWith('pkg:npm/')).length).toBeGreaterThan(100)
    expect(purls.filter((purl) => purl.startsWith('pkg:deb/debian/')).length).toBeGreaterThan(50)
  })

  it('unpacked with umoci, its root runs node and openclaw at the pinned versions', async () => {
    const bundle = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-openclaw-root-')), 'bundle')
    await execa('umoci', ['unpack', '--image', `${path.join(homeA, 'store')}:openclaw:${OPENCLAW}`, bundle])
    const config = JSON.parse((await execa('cat', [path.join(bundle, 'config.json')])).stdout) as {
      process: {env: string[]; args: string[]}
    }
    const pathEnv = config.process.env.find((entry) => entry.startsWith('PATH='))!
    expect(config.process.args).toEqual(['openclaw', 'gateway', '--allow-unconfigured'])
    const run = (command: string) =>
      execa('chroot', [path.join(bundle, 'rootfs'), '/usr/bin/env', '-i', pathEnv, 'HOME=/tmp', command, '--version'])
    expect((await run('node')).stdout.trim()).toBe(NODE)
    expect((await run('openclaw')).stdout).toContain(`OpenClaw ${OPENCLAW}`)
  }, 300_000)

  it('skopeo reads it and copies it to a registry; aegis-kit pushes it too', async () => {
    const store = `oci:${path.join(homeA, 'store')}:openclaw:${OPENCLAW}`
    const inspected = JSON.parse((await execa('skopeo', ['inspect', store])).stdout) as {
      Digest: string
      Layers: string[]
    }
    expect(inspected.Digest).toBe(reportA.digest)
    await execa('skopeo', [
      'copy',
      '--dest-tls-verify=false',
      store,
      `docker://${registry.host}/skopeo/openclaw:${OPENCLAW}`,
    ])
    const pushed = await runCli(
      ['images', 'push', `openclaw:${OPENCLAW}`, `${registry.host}/aegis/openclaw:${OPENCLAW}`, '--json'],
      {env: {AEGIS_KIT_HOME: homeA}, timeout: 600_000},
    )
    expect(pushed.exitCode, pushed.stderr).toBe(0)
    for (const repo of ['skopeo/openclaw', 'aegis/openclaw']) {
      const remote = JSON.parse(
        (await execa('skopeo', ['inspect', '--tls-verify=false', `docker://${registry.host}/${repo}:${OPENCLAW}`]))
          .stdout,
      ) as {Layers: string[]}
      expect(remote.Layers).toEqual(inspected.Layers)
    }
    const raw = (
      await execa(
        'skopeo',
        ['inspect', '--raw', '--tls-verify=false', `docker://${registry.host}/aegis/openclaw:${OPENCLAW}`],
        {stripFinalNewline: false},
      )
    ).stdout
    expect(`sha256:${createHash('sha256').update(raw).digest('hex')}`).toBe(reportA.digest)
  }, 600_000)

  // Under TCG (no usable KVM here) the gateway takes minutes: the kit patches OpenClaw's 5 s
  // worker start-up limit (image.npm.patches) and allows its healthcheck 600 s.
  it('run openclaw --expose: /healthz answers 200, / serves the Control UI and the token in the printed URL authenticates, from inside the VM', async () => {
    const node24 = await nodeRuntime(NODE24_VERSION)
    const port = await freePort()
    const key = 'sk-ant-api03-E2E-KNOWN-SECRET-9f8e7d6c5b4a'
    const workspace = mkdtempSync(path.join(tmpdir(), 'aegis-kit-openclaw-ws-'))
    const run = startRun(
      ['openclaw', '--expose', `${port}:18789`, '--secret', 'ANTHROPIC_API_KEY', '--workspace', workspace],
      {AEGIS_KIT_HOME: homeA, ANTHROPIC_API_KEY: key},
    )
    try {
      const [, url, token] = await run.waitFor(
        /Control UI: (http:\/\/127\.0\.0\.1:\d+\/)#token=([0-9a-f]{64})/,
        840_000,
      )
      expect(url).toBe(`http://127.0.0.1:${port}/`)
      const health = await fetch(`${url}healthz`)
      expect(health.status).toBe(200)
      expect(await health.json()).toMatchObject({ok: true})
      const page = await fetch(url)
      expect(page.status).toBe(200)
      expect(await page.text()).toMatch(/<html/i)

      // The printed token authenticates through the exposed port, the way a browser opening the
      // URL uses it: the Control UI's WebSocket handshake from the URL's origin gets hello-ok, and
      // /tools/invoke takes it as a bearer token (a 500 while the gateway's startup sidecars come
      // up). The token is tried first: the gateway rate-limits failed attempts from an address
      // other than its own loopback, which this port's connections are.
      const origin = `http://127.0.0.1:${port}`
      const handshakes = async (attempts: Attempt[]): Promise<Outcome[]> => {
        const connected = await execa(
          path.join(node24, 'bin', 'node'),
          [controlUiConnect, JSON.stringify({url: `ws://127.0.0.1:${port}/`, attempts})],
          {env: {LANG: 'C.UTF-8'}, extendEnv: false, timeout: 120_000},
        )
        return connected.stdout
          .trim()
          .split('\n')
          .map((line) => JSON.parse(line) as Outcome)
      }
      // The gateway answers UNAVAILABLE ("gateway starting; retry shortly") for a while after /healthz,
      // and while its startup sidecars hold its event loop (18 s stalls under TCG on a busy machine)
      // it closes a handshake it could not finish in 15 s ("handshake timeout ... phase=auth_validated"):
      // both are tried again. A refused token is an AUTH_* code, never retried.
      const notYet = (outcome?: Outcome) => outcome?.code === 'UNAVAILABLE' || outcome?.code?.startsWith('closed')
      let withToken = await handshakes([{origin, token}])
      for (const deadline = Date.now() + 180_000; notYet(withToken[0]) && Date.now() < deadline; ) {
        await new Promise((resolve) => setTimeout(resolve, 2000))
        withToken = await handshakes([{origin, token}])
      }
      expect(withToken, JSON.stringify(withToken)).toMatchObject([
        {ok: true, helloType: 'hello-ok', serverVersion: OPENCLAW},
      ])
      const invoke = (authorization?: string) =>
        fetch(`${url}tools/invoke`, {
          method: 'POST',
          headers: {'content-type': 'application/json', ...(authorization ? {authorization} : {})},
          body: JSON.stringify({tool: 'sessions_list', args: {}}),
        })
      let accepted = await invoke(`Bearer ${token}`)
      for (const deadline = Date.now() + 120_000; accepted.status === 500 && Date.now() < deadline; ) {
        await new Promise((resolve) => setTimeout(resolve, 1000))
        accepted = await invoke(`Bearer ${token}`)
      }
      const answer = await accepted.json()
      expect(accepted.status, JSON.stringify(answer)).toBe(200)
      expect(answer).toMatchObject({ok: true})
      // Refused without the token, or with another.
      expect((await invoke()).status).toBe(401)
      const without = await handshakes([{origin}, {origin, token: 'f'.repeat(64)}])
      expect(without, JSON.stringify(without)).toMatchObject([{ok: false, code: 'AUTH_TOKEN_MISSING'}, {ok: false}])
      expect(without[1]?.code, JSON.stringify(without)).toMatch(/^AUTH_(TOKEN_MISMATCH|RATE_LIMITED)$/)

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
    } catch (error) {
      // The gateway's own log says why it refused or closed a connection (a restart, a rate limit).
      if (error instanceof Error)
        error.message += `\n--- the end of aegis-kit run's output ---\n${run.output().slice(-4000)}`
      throw error
    } finally {
      run.child.kill('SIGKILL')
    }
  }, 1_200_000)

  it('a second clean build in another empty store gives the same manifest digest', async () => {
    const reportB = await build(mkdtempSync(path.join(tmpdir(), 'aegis-kit-openclaw-b-')))
    expect(reportB.platforms[0].layers).toEqual(
      reportA.platforms[0].layers.map((layer) => expect.objectContaining({step: layer.step, digest: layer.digest})),
    )
    expect(reportB.digest).toBe(reportA.digest)
  }, 900_000)
})
