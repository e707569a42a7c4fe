// `aegis-kit doctor` on this machine, as a user runs it: every part probed for real. Here KVM is
// unusable (no /dev/kvm, or a nested one QEMU aborts on), so the accelerator is TCG with why.
import {spawnSync} from 'node:child_process'
import {mkdirSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'

import {resolveGuest} from '../../src/guest/guest-store.js'
import {sha256Digest} from '../../src/oci/digest.js'
import {MediaType} from '../../src/oci/media-types.js'
import type {Descriptor} from '../../src/oci/types.js'
import {InstanceRegistry} from '../../src/runner/instances.js'
import {LocalStore} from '../../src/store/index.js'
import {runCli} from '../helpers/cli.js'
import {emptyDir, pathWithout} from '../run/helpers.js'

const PARTS = [
  'node',
  'qemu',
  'accelerator',
  'virtiofsd',
  'gvproxy',
  'mke2fs',
  'mmdebstrap',
  'arm64 emulation',
  'apt lists',
  'guest kernel',
  'disk',
  'store',
  'instances',
  'credential helpers',
]

interface Report {
  ok: boolean
  checks: Array<{part: string; status: string; found: string; fix?: string}>
}

function tempDir(prefix: string): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix))
}

async function doctorJson(env: Record<string, string>): Promise<{exitCode: number; report: Report}> {
  const result = await runCli(['doctor', '--json'], {env})
  return {exitCode: result.exitCode, report: JSON.parse(result.stdout) as Report}
}

function part(report: Report, name: string): Report['checks'][number] {
  const check = report.checks.find((entry) => entry.part === name)
  if (!check) throw new Error(`no ${name} check in ${JSON.stringify(report)}`)
  return check
}

/** A data directory whose store holds this host's guest, as after a first `run`. */
const home = tempDir('aegis-kit-doctor-')

beforeAll(async () => {
  await resolveGuest({store: new LocalStore(path.join(home, 'store')), cacheDir: path.join(home, 'cache', 'guest')})
}, 600_000)

describe('aegis-kit doctor on this machine', {timeout: 120_000}, () => {
  it('prints every part, names TCG and why, and exits 0', async () => {
    const result = await runCli(['doctor'], {env: {AEGIS_KIT_HOME: home}})
    expect(result.stderr).toBe('')
    expect(result.exitCode).toBe(0)
    const lines = result.stdout.split('\n')
    for (const name of PARTS)
      expect(
        lines.some((line) => new RegExp(`^(OK|WARN|MISSING) +${name} +\\S`).test(line)),
        name,
      ).toBe(true)
    expect(result.stdout).toMatch(
      /^WARN +accelerator +TCG software emulation, not KVM: (\/dev\/kvm does not exist|\/dev\/kvm is not readable|a test boot under KVM (failed|printed)).*\n +fix: none needed: run works under TCG/m,
    )
    expect(result.stdout).toMatch(
      /^OK +guest kernel +linux-image-\S+-cloud-amd64 \S+, assembled in the store as aegis-guest:/m,
    )
    expect(result.stdout).toMatch(/^OK +arm64 emulation +qemu-aarch64 through binfmt_misc .*a test arm64 program ran$/m)
    expect(result.stdout).toMatch(/^OK +store +\d+ tags? in .*, every one complete$/m)
    expect(result.stdout).toMatch(/run and build have every part they need\n?$/)
  })

  it('--json: {ok, checks} with part, status, found, and a fix exactly where the status is not OK', async () => {
    const {exitCode, report} = await doctorJson({AEGIS_KIT_HOME: home})
    expect(exitCode).toBe(0)
    expect(report.ok).toBe(true)
    expect(report.checks.map((check) => check.part)).toEqual(PARTS)
    for (const check of report.checks) {
      expect(Object.keys(check).sort()).toEqual(
        check.status === 'OK' ? ['found', 'part', 'status'] : ['fix', 'found', 'part', 'status'],
      )
      expect(['OK', 'WARN']).toContain(check.status)
      expect(check.found).not.toBe('')
    }
    expect(part(report, 'accelerator').status).toBe('WARN')
  })

  it('without gvproxy (not on PATH, nowhere podman puts it) exits 1 and names the fix', async () => {
    const env = {AEGIS_KIT_HOME: home, PATH: pathWithout('gvproxy'), AEGIS_KIT_HELPER_DIRS: emptyDir()}
    const result = await runCli(['doctor'], {env})
    expect(result.exitCode).toBe(1)
    expect(result.stdout).toMatch(
      /^MISSING +gvproxy +gvproxy is not installed \(looked on PATH and in .*aegis-kit-empty-.*\)\n +fix: \/\S+\/scripts\/install-gvproxy /m,
    )
    expect(result.stdout).toMatch(/run or build cannot work until these are fixed: gvproxy\n?$/)
    const {exitCode, report} = await doctorJson(env)
    expect(exitCode).toBe(1)
    expect(report.ok).toBe(false)
    expect(report.checks.filter((check) => check.status === 'MISSING').map((check) => check.part)).toEqual(['gvproxy'])
  })
})

describe('aegis-kit doctor on a data directory with problems', {timeout: 120_000}, () => {
  const broken = tempDir('aegis-kit-doctor-broken-')
  const dockerConfig = tempDir('aegis-kit-doctor-docker-')
  let report: Report
  let exitCode: number

  beforeAll(async () => {
    // An image whose layer blob is gone (a disk cleaned by hand, a copy interrupted).
    const store = new LocalStore(path.join(broken, 'store'))
    const blob = (mediaType: string, data: Buffer): Descriptor => ({
      mediaType,
      digest: sha256Digest(data),
      size: data.length,
    })
    const layerBytes = Buffer.from('not really a layer')
    const configBytes = Buffer.from('{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}')
    const layer = blob(MediaType.LayerTarGzip, layerBytes)
    const config = blob(MediaType.ImageConfig, configBytes)
    const manifestBytes = Buffer.from(
      JSON.stringify({schemaVersion: 2, mediaType: MediaType.ImageManifest, config, layers: [layer]}),
    )
    const manifest = blob(MediaType.ImageManifest, manifestBytes)
    await store.push(layer, layerBytes)
    await store.push(config, configBytes)
    await store.push(manifest, manifestBytes)
    await store.tag(manifest, 'half-gone:1.0')
    rmSync(store.blobPath(layer))

    // An instance whose process is gone without recording an end (SIGKILL, a reboot).
    const gone = spawnSync('true').pid
    await InstanceRegistry.forDataDir(broken).claim({
      name: 'ghost',
      kit: 'hello',
      pid: gone,
      pidStart: '1',
      startedAt: new Date().toISOString(),
      status: 'running',
      detached: true,
      ports: [],
      urls: [],
    })

    // A docker config naming a credential helper that is not installed.
    writeFileSync(
      path.join(dockerConfig, 'config.json'),
      JSON.stringify({credHelpers: {'registry.example.com': 'aegis-nosuch'}}),
    )
    ;({exitCode, report} = await doctorJson({AEGIS_KIT_HOME: broken, DOCKER_CONFIG: dockerConfig}))
  }, 120_000)

  it('a tag pointing at a missing blob is reported with the command that removes it', () => {
    const store = part(report, 'store')
    expect(store.status).toBe('WARN')
    expect(store.found).toMatch(
      /^1 tag in .*; 1 point at missing content: half-gone:1\.0 \(sha256:[0-9a-f]{12} application\/vnd\.oci\.image\.layer\.v1\.tar\+gzip is missing\)$/,
    )
    expect(store.fix).toBe('aegis-kit images rm half-gone:1.0, then build or pull them again')
  })

  it('an instance record whose process is gone is reported as stale', () => {
    const instances = part(report, 'instances')
    expect(instances.status).toBe('WARN')
    expect(instances.found).toMatch(/^0 running; 1 stale \(process gone\): ghost \(pid \d+\)$/)
    expect(instances.fix).toContain('aegis-kit rm ghost')
  })

  it('a credential helper the docker config names but PATH lacks is a warning naming it', () => {
    const helpers = part(report, 'credential helpers')
    expect(helpers.status).toBe('WARN')
    expect(helpers.found).toContain('docker-credential-aegis-nosuch not on PATH')
    expect(helpers.fix).toContain(`remove "aegis-nosuch" from ${path.join(dockerConfig, 'config.json')}`)
  })

  it('warnings alone do not fail: exit 0', () => {
    expect(exitCode).toBe(0)
    expect(report.ok).toBe(true)
  })

  it('an index.json that does not parse makes the store MISSING and doctor exit 1', async () => {
    const corrupt = tempDir('aegis-kit-doctor-corrupt-')
    mkdirSync(path.join(corrupt, 'store'))
    writeFileSync(path.join(corrupt, 'store', 'index.json'), '{"manifests": [')
    const result = await doctorJson({AEGIS_KIT_HOME: corrupt})
    expect(result.exitCode).toBe(1)
    const store = part(result.report, 'store')
    expect(store.status).toBe('MISSING')
    expect(store.found).toMatch(/index\.json/)
    expect(store.fix).toMatch(/^move the unreadable index aside \(mv \S+index\.json \S+index\.json\.bad\)/)
  })
})
