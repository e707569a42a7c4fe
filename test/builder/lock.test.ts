// The kit's lock (aegis-kit.lock.json): written on the first build, held to on later builds,
// rewritten by --update-lock. Real mmdebstrap against Debian's archive, a real registry.
import {cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {hasStackTrace, repoRoot, runCli} from '../helpers/cli.js'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'

interface BuildReport {
  reference: string
  digest: string
  lockWritten?: string
  platforms: Array<{layers: Array<{step: string; cached: boolean}>; sbom: {digest: string}}>
}

interface Lock {
  lockVersion: number
  base: {
    debian?: {suite: string; variant: string; packages: string[]}
    image?: string
    platforms: Record<
      string,
      {packages?: Array<{name: string; version: string; architecture: string}>; digest?: string}
    >
  }
}

function tempDir(prefix: string): string {
  return mkdtempSync(path.join(tmpdir(), prefix))
}

/** kits/hello without its committed lock, in a directory of its own. */
function unlockedHello(name = 'hello'): string {
  const kit = path.join(tempDir('aegis-kit-kit-'), name)
  cpSync(path.join(repoRoot, 'kits/hello'), kit, {recursive: true})
  rmSync(path.join(kit, 'aegis-kit.lock.json'), {force: true})
  return kit
}

async function build(home: string, args: string[]): Promise<BuildReport> {
  const result = await runCli(['build', ...args, '--json'], {env: {AEGIS_KIT_HOME: home}})
  expect(result.exitCode, result.stderr).toBe(0)
  return JSON.parse(result.stdout) as BuildReport
}

function readLock(kit: string): Lock {
  return JSON.parse(readFileSync(path.join(kit, 'aegis-kit.lock.json'), 'utf8')) as Lock
}

function blobJson<T>(home: string, digest: string): T {
  return JSON.parse(readFileSync(path.join(home, 'store/blobs/sha256', digest.slice(7)), 'utf8')) as T
}

async function storeState(home: string): Promise<string> {
  const images = await runCli(['images', '--all', '--json'], {env: {AEGIS_KIT_HOME: home}})
  return `${images.stdout}\n${readdirSync(path.join(home, 'store/blobs/sha256')).sort().join('\n')}`
}

describe('the Debian package lock', () => {
  it("is written on the first build with each package's exact version, and left alone by the next", async () => {
    const home = tempDir('aegis-kit-lock-')
    const kit = unlockedHello()
    const first = await build(home, [kit])
    expect(first.lockWritten).toBe(path.join(kit, 'aegis-kit.lock.json'))
    const lock = readLock(kit)
    expect(lock.lockVersion).toBe(1)
    expect(lock.base.debian).toEqual({suite: 'bookworm', variant: 'extract', packages: ['busybox-static']})
    const [busybox] = lock.base.platforms['linux/amd64'].packages!
    expect(busybox).toMatchObject({name: 'busybox-static', architecture: 'amd64'})
    expect(busybox.version).toMatch(/^1:1\.\d+/)
    // The SBOM names the same version: the lock describes what the image holds.
    const sbomManifest = blobJson<{layers: Array<{digest: string}>}>(home, first.platforms[0].sbom.digest)
    const sbom = blobJson<{packages: Array<{name: string; versionInfo: string}>}>(home, sbomManifest.layers[0].digest)
    expect(sbom.packages.find((p) => p.name === 'busybox-static')?.versionInfo).toBe(busybox.version)

    const text = readFileSync(path.join(kit, 'aegis-kit.lock.json'), 'utf8')
    const again = await build(home, [kit])
    expect(again.lockWritten).toBeUndefined()
    expect(again.platforms[0].layers.every((layer) => layer.cached)).toBe(true)
    expect(again.digest).toBe(first.digest)
    expect(readFileSync(path.join(kit, 'aegis-kit.lock.json'), 'utf8')).toBe(text)
  }, 120_000)

  it('a locked version the archive no longer has: --locked fails in one line and changes nothing; a plain build warns and updates the lock; --update-lock resolves again', async () => {
    const home = tempDir('aegis-kit-lock-')
    const kit = unlockedHello()
    const first = await build(home, [kit])
    const file = path.join(kit, 'aegis-kit.lock.json')
    const good = readFileSync(file, 'utf8')
    const real = readLock(kit).base.platforms['linux/amd64'].packages![0].version
    const bogus = good.replace(JSON.stringify(real), '"1:0.0.1-aegis-bogus"')
    expect(bogus).not.toBe(good)
    writeFileSync(file, bogus)
    const before = await storeState(home)

    // The lock is part of the base layer's cache key: the cached layer is not used for it.
    const failed = await runCli(['build', kit, '--locked'], {env: {AEGIS_KIT_HOME: home}})
    expect(failed.exitCode).toBe(1)
    // After the step's progress line: the error in one line, then the fix.
    expect(failed.stderr.trim().split('\n').slice(-2)).toEqual([
      `Error: Debian package busybox-static 1:0.0.1-aegis-bogus (amd64), locked in ${file}, is no longer in the archive (it has ${real})`,
      `  hint: resolve the base again and rewrite the lock: aegis-kit build ${kit} --update-lock (or pin image.base.debian.snapshot)`,
    ])
    expect(hasStackTrace(failed.all)).toBe(false)
    expect(await storeState(home)).toBe(before)
    expect(readFileSync(file, 'utf8')).toBe(bogus)
    expect(existsSync(path.join(home, 'cache/tmp')) ? readdirSync(path.join(home, 'cache/tmp')) : []).toEqual([])

    // Without --locked (as after a Debian point release): built, said so, lock brought up to date
    const warned = await runCli(['build', kit], {env: {AEGIS_KIT_HOME: home}})
    expect(warned.exitCode, warned.stderr).toBe(0)
    expect(warned.stderr).toContain(
      `warning: Debian package busybox-static 1:0.0.1-aegis-bogus (amd64), locked in ${file}, is no longer in the archive (it has ${real}); built with the archive's versions and updating the lock (--locked makes this an error)`,
    )
    expect(readFileSync(file, 'utf8')).toBe(good)

    writeFileSync(file, bogus)
    const fixed = await build(home, [kit, '--update-lock'])
    expect(fixed.lockWritten).toBe(file)
    expect(readFileSync(file, 'utf8')).toBe(good)
    expect(fixed.digest).toBe(first.digest)
  }, 180_000)

  it('a changed image.base is resolved again and the lock rewritten', async () => {
    const home = tempDir('aegis-kit-lock-')
    const kit = unlockedHello()
    await build(home, [kit])
    const manifest = path.join(kit, 'aegis-kit.yaml')
    writeFileSync(
      manifest,
      readFileSync(manifest, 'utf8').replace('packages: [busybox-static]', 'packages: [busybox-static, hello]'),
    )
    const report = await build(home, [kit])
    expect(report.lockWritten).toBeDefined()
    const lock = readLock(kit)
    expect(lock.base.debian?.packages).toEqual(['busybox-static', 'hello'])
    expect(lock.base.platforms['linux/amd64'].packages!.map((p) => p.name)).toEqual(
      expect.arrayContaining(['busybox-static', 'hello']),
    )
  }, 120_000)

  it('rejects a malformed lock with the fix', async () => {
    const kit = unlockedHello()
    writeFileSync(
      path.join(kit, 'aegis-kit.lock.json'),
      '{"lockVersion": 1, "base": {"debian": {}, "platforms": {"linux/amd64": {"packages": [{"name": "x"}]}}}}',
    )
    const result = await runCli(['build', kit], {env: {AEGIS_KIT_HOME: tempDir('aegis-kit-lock-')}})
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(
      /aegis-kit\.lock\.json is not a valid lock: base\.platforms\["linux\/amd64"\]\.packages must list \{name, version, architecture\}/,
    )
    expect(result.stderr).toMatch(/--update-lock/)
    expect(hasStackTrace(result.all)).toBe(false)
  })

  it("the committed locks match their kits' bases", () => {
    for (const name of ['hello', 'openclaw']) {
      const lock = readLock(path.join(repoRoot, 'kits', name))
      expect(lock.base.platforms['linux/amd64'].packages!.length).toBeGreaterThan(0)
      const manifest = readFileSync(path.join(repoRoot, 'kits', name, 'aegis-kit.yaml'), 'utf8')
      for (const wanted of lock.base.debian!.packages) expect(manifest).toContain(wanted)
    }
  })
})

describe('the registry base lock', () => {
  let registry: TestRegistry
  beforeAll(async () => {
    registry = await startRegistry()
  })
  afterAll(async () => {
    await registry?.stop()
  })

  it('pins a registry base to the digest its tag had, until --update-lock', async () => {
    const home = tempDir('aegis-kit-lock-')
    const env = {AEGIS_KIT_HOME: home}
    const baseRef = `${registry.host}/bases/hello:1`
    // Two base images pushed to the same tag, one after the other.
    const first = await build(home, [unlockedHello('base-a'), '--tag', 'a'])
    const changed = unlockedHello('base-b')
    writeFileSync(path.join(changed, 'www/index.html'), '<h1>the second base</h1>\n')
    const second = await build(home, [changed, '--tag', 'b'])
    expect(second.digest).not.toBe(first.digest)
    const push = async (ref: string) => expect((await runCli(['images', 'push', ref, baseRef], {env})).exitCode).toBe(0)
    await push(first.reference)

    const kit = path.join(tempDir('aegis-kit-kit-'), 'app')
    cpSync(path.join(repoRoot, 'kits/hello'), kit, {recursive: true})
    rmSync(path.join(kit, 'aegis-kit.lock.json'), {force: true})
    const file = path.join(kit, 'aegis-kit.yaml')
    writeFileSync(
      file,
      readFileSync(file, 'utf8')
        .replace(/ {2}base:\n {4}debian:\n(?: {6}.*\n)+/, `  base: ${baseRef}\n`)
        .replace('name: hello', 'name: app'),
    )
    const baseDigest = async (report: BuildReport) =>
      blobJson<{annotations: Record<string, string>}>(home, report.digest).annotations[
        'org.opencontainers.image.base.digest'
      ]

    const app = await build(home, [kit])
    expect(app.lockWritten).toBeDefined()
    expect(readLock(kit).base).toEqual({image: baseRef, platforms: {'linux/amd64': {digest: first.digest}}})
    expect(await baseDigest(app)).toBe(first.digest)

    // The tag moves; the lock does not.
    await push(second.reference)
    const held = await build(home, [kit])
    expect(await baseDigest(held)).toBe(first.digest)
    expect(held.lockWritten).toBeUndefined()

    const updated = await build(home, [kit, '--update-lock'])
    expect(await baseDigest(updated)).toBe(second.digest)
    expect(readLock(kit).base.platforms['linux/amd64'].digest).toBe(second.digest)
  }, 180_000)
})
