// `aegis-kit build` on the small hello kit: real mmdebstrap, real layers, checked with umoci,
// skopeo and a chroot. Fast enough to run in full.
import {cpSync, existsSync, mkdtempSync, readFileSync, statSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {execa} from 'execa'
import {describe, expect, it} from 'vitest'
import {formatAge} from '../../src/cli/format.js'
import {hasStackTrace, repoRoot, runCli} from '../helpers/cli.js'
import {brokenHelloKit} from '../helpers/toolchain.js'

interface BuildReport {
  reference: string
  digest: string
  platforms: Array<{layers: Array<{step: string; digest: string; cached: boolean}>; sbom: {digest: string}}>
}

function freshHome(): string {
  return mkdtempSync(path.join(tmpdir(), 'aegis-kit-build-'))
}

async function build(home: string, args: string[]): Promise<BuildReport> {
  const result = await runCli(['build', ...args, '--json'], {env: {AEGIS_KIT_HOME: home}})
  expect(result.exitCode, result.stderr).toBe(0)
  return JSON.parse(result.stdout) as BuildReport
}

describe('build hello', () => {
  it('puts hello:0.1.0 in the store, readable by skopeo and umoci, runnable in a chroot', async () => {
    const home = freshHome()
    const report = await build(home, ['hello'])
    expect(report.reference).toBe('hello:0.1.0')
    expect(report.platforms[0].layers.map((layer) => layer.step)).toEqual(['base', 'files', 'aegis'])
    const store = path.join(home, 'store')
    const inspect = await execa('skopeo', ['inspect', `oci:${store}:hello:0.1.0`])
    const info = JSON.parse(inspect.stdout) as {Digest: string; Layers: string[]; Env: string[]; Created: string}
    expect(info.Digest).toBe(report.digest)
    expect(info.Layers).toHaveLength(3)
    // The kit's last commit (the checkout's kits/hello is committed), not the time of the build.
    const committed = await execa('git', ['log', '-1', '--format=%ct', '--', 'kits/hello'], {cwd: repoRoot})
    expect(info.Created).toBe(new Date(Number(committed.stdout) * 1000).toISOString().replace('.000Z', 'Z'))
    // The config's own created, what `images` shows: not the epoch (once shown as "56 years ago").
    const imageConfig = JSON.parse(
      (await execa('skopeo', ['inspect', '--config', `oci:${store}:hello:0.1.0`])).stdout,
    ) as {created: string}
    expect(Date.parse(imageConfig.created)).toBe(Date.parse(info.Created))
    expect(Date.parse(imageConfig.created)).toBeGreaterThan(Date.parse('2020-01-01T00:00:00Z'))
    const before = Date.now()
    const images = await runCli(['images'], {env: {AEGIS_KIT_HOME: home}})
    const after = Date.now()
    expect(images.exitCode, images.stderr).toBe(0)
    const row = images.stdout.split('\n').find((line) => /^hello\s+0\.1\.0\s/.test(line))
    expect(row, images.stdout).toBeDefined()
    expect(row).not.toContain(formatAge('1970-01-01T00:00:00Z', after))
    // CREATED, the last column: the config's time as an age.
    const shown = row
      ?.trim()
      .split(/\s{2,}/)
      .at(-1)
    expect([formatAge(imageConfig.created, before), formatAge(imageConfig.created, after)]).toContain(shown)
    const unpacked = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-unpack-')), 'bundle')
    await execa('umoci', ['unpack', '--image', `${store}:hello:0.1.0`, unpacked])
    const rootfs = path.join(unpacked, 'rootfs')
    expect(readFileSync(path.join(rootfs, 'srv/www/index.html'), 'utf8')).toContain('Hello from aegis-kit')
    expect(statSync(path.join(rootfs, 'workspace')).uid).toBe(1000)
    const config = JSON.parse(readFileSync(path.join(unpacked, 'config.json'), 'utf8')) as {
      process: {args: string[]; user: {uid: number}; cwd: string}
    }
    expect(config.process.args).toEqual(['busybox', 'httpd', '-f', '-v', '-p', '8080', '-h', '/srv/www'])
    expect(config.process.user.uid).toBe(1000)
    expect(config.process.cwd).toBe('/srv/www')
    const chroot = await execa('chroot', [rootfs, '/bin/busybox', 'cat', '/srv/www/index.html'])
    expect(chroot.stdout).toContain('<h1>Hello from aegis-kit</h1>')
  })

  it('a rebuild reuses every layer and gives the same digest; --no-cache rebuilds to the same digest', async () => {
    const home = freshHome()
    const first = await build(home, ['hello'])
    const again = await build(home, ['hello'])
    expect(again.digest).toBe(first.digest)
    expect(again.platforms[0].layers.every((layer) => layer.cached)).toBe(true)
    const forced = await build(home, ['hello', '--no-cache'])
    expect(forced.platforms[0].layers.some((layer) => layer.cached)).toBe(false)
    expect(forced.digest).toBe(first.digest)
  })

  it('two clean builds in two empty stores give the same manifest digest', async () => {
    const [a, b] = [await build(freshHome(), ['hello']), await build(freshHome(), ['hello'])]
    expect(a.digest).toMatch(/^sha256:[0-9a-f]{64}$/)
    expect(b.digest).toBe(a.digest)
  })

  it('changing one kit file rebuilds only the files layer', async () => {
    const home = freshHome()
    const kit = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-kit-')), 'hello')
    cpSync(path.join(repoRoot, 'kits/hello'), kit, {recursive: true})
    const first = await build(home, [kit])
    writeFileSync(path.join(kit, 'www/index.html'), '<h1>changed</h1>\n')
    const second = await build(home, [kit])
    const cached = Object.fromEntries(second.platforms[0].layers.map((layer) => [layer.step, layer.cached]))
    expect(cached).toEqual({base: true, files: false, aegis: true})
    expect(second.digest).not.toBe(first.digest)
  })

  it('stores an SPDX SBOM as a referrer of the image', async () => {
    const home = freshHome()
    const report = await build(home, ['hello'])
    const listing = await runCli(['images', '--all', '--json'], {env: {AEGIS_KIT_HOME: home}})
    const tags = (JSON.parse(listing.stdout) as {images: Array<{tag: string}>}).images.map((image) => image.tag)
    expect(tags).toContain(`sha256-${report.digest.slice(7)}`)
    const plain = await runCli(['images', '--json'], {env: {AEGIS_KIT_HOME: home}})
    expect((JSON.parse(plain.stdout) as {images: Array<{tag: string}>}).images.map((image) => image.tag)).toEqual([
      '0.1.0',
    ])
    const sbomManifest = JSON.parse(
      readFileSync(path.join(home, 'store/blobs/sha256', report.platforms[0].sbom.digest.slice(7)), 'utf8'),
    ) as {artifactType: string; subject: {digest: string}; layers: Array<{digest: string}>}
    expect(sbomManifest.artifactType).toBe('application/spdx+json')
    expect(sbomManifest.subject.digest).toBe(report.digest)
    const sbom = JSON.parse(
      readFileSync(path.join(home, 'store/blobs/sha256', sbomManifest.layers[0].digest.slice(7)), 'utf8'),
    ) as {spdxVersion: string; packages: Array<{name: string}>}
    expect(sbom.spdxVersion).toBe('SPDX-2.3')
    expect(sbom.packages.map((p) => p.name)).toContain('busybox-static')
  })

  it('a failing build leaves the store as it was', async () => {
    const home = freshHome()
    await build(home, ['hello'])
    const before = await runCli(['images', '--all', '--json'], {env: {AEGIS_KIT_HOME: home}})
    const kit = brokenHelloKit()
    const result = await runCli(['build', kit], {env: {AEGIS_KIT_HOME: home}})
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(/mmdebstrap failed/)
    expect(hasStackTrace(result.all)).toBe(false)
    const after = await runCli(['images', '--all', '--json'], {env: {AEGIS_KIT_HOME: home}})
    expect(after.stdout).toBe(before.stdout)
    expect(
      existsSync(path.join(home, 'cache/tmp')) ? (await execa('ls', [path.join(home, 'cache/tmp')])).stdout : '',
    ).toBe('')
  })
})
