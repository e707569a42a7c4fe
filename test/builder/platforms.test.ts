// `build --platform linux/amd64,linux/arm64`: one OCI index, one image per platform, each with
// its own architecture's binaries. Checked with skopeo and umoci, the arm64 programs run under
// qemu-aarch64-static (scripts/setup installs it and registers it with binfmt_misc).
import {createHash} from 'node:crypto'
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  closeSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  existsSync,
} from 'node:fs'
import {createServer} from 'node:http'
import type {AddressInfo} from 'node:net'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {execa} from 'execa'
import {describe, expect, it} from 'vitest'
import {emulationProblem} from '../../dist/builder/debian-base.js'
import {prepareTargetNode} from '../../dist/builder/target-node.js'
import {hasStackTrace, repoRoot, runCli} from '../helpers/cli.js'
import {nodeKit, testCache} from '../helpers/toolchain.js'

interface BuildReport {
  reference: string
  digest: string
  mediaType: string
  platforms: Array<{platform: string; manifest: {digest: string}; layers: Array<{step: string; digest: string}>}>
}

interface Index {
  mediaType: string
  manifests: Array<{mediaType: string; digest: string; platform?: {os: string; architecture: string}}>
}

function tempDir(prefix: string): string {
  return mkdtempSync(path.join(tmpdir(), prefix))
}

/** A home whose Node downloads and sysroots are shared across runs (fetching them twice per test is slow, not tested). */
function freshHome(): string {
  const home = tempDir('aegis-kit-platforms-')
  mkdirSync(path.join(home, 'cache'), {recursive: true})
  for (const [shared, name] of [
    ['build-downloads', 'downloads'],
    ['build-sysroots', 'sysroots'],
  ]) {
    mkdirSync(path.join(testCache, shared), {recursive: true})
    symlinkSync(path.join(testCache, shared), path.join(home, 'cache', name))
  }
  return home
}

function copyKit(name: string): string {
  const kit = path.join(tempDir('aegis-kit-kit-'), name)
  cpSync(path.join(repoRoot, 'kits', name), kit, {recursive: true})
  return kit
}

async function build(home: string, args: string[]): Promise<BuildReport> {
  const result = await runCli(['build', ...args, '--json'], {env: {AEGIS_KIT_HOME: home}, timeout: 600_000})
  expect(result.exitCode, result.stderr).toBe(0)
  return JSON.parse(result.stdout) as BuildReport
}

function blob(store: string, digest: string): Buffer {
  return readFileSync(path.join(store, 'blobs/sha256', digest.slice('sha256:'.length)))
}

/** e_machine of an ELF file: 62 x86-64, 183 AArch64. */
function elfMachine(file: string): number {
  const header = Buffer.alloc(20)
  const fd = openSync(file, 'r')
  try {
    readSync(fd, header, 0, 20, 0)
  } finally {
    closeSync(fd)
  }
  expect(header.subarray(0, 4).toString('latin1')).toBe('\x7fELF')
  return header.readUInt16LE(18)
}

/** One platform's root, the way image tools get it: skopeo picks the platform from the index, umoci unpacks it. */
async function unpackPlatform(store: string, reference: string, arch: string): Promise<string> {
  const work = tempDir(`aegis-kit-unpack-${arch}-`)
  await execa('skopeo', [
    'copy',
    '--override-os',
    'linux',
    '--override-arch',
    arch,
    `oci:${store}:${reference}`,
    `oci:${path.join(work, 'layout')}:image`,
  ])
  await execa('umoci', ['unpack', '--image', `${path.join(work, 'layout')}:image`, path.join(work, 'bundle')])
  return path.join(work, 'bundle', 'rootfs')
}

const PROBE = '@aegis-probe/arch'

/**
 * An npm registry on 127.0.0.1 with one package, PROBE, whose install script records the
 * `process.arch` of the Node that ran it (npm is pointed at it for PROBE's scope only).
 */
async function probeRegistry(): Promise<{url: string; close: () => Promise<void>}> {
  const work = tempDir('aegis-kit-probe-')
  mkdirSync(path.join(work, 'package'))
  const manifest = {name: PROBE, version: '1.0.0', license: 'MIT', scripts: {install: 'node record.js'}}
  writeFileSync(path.join(work, 'package', 'package.json'), JSON.stringify(manifest))
  writeFileSync(
    path.join(work, 'package', 'record.js'),
    "require('node:fs').writeFileSync('install-arch.json', JSON.stringify({arch: process.arch, platform: process.platform}))\n",
  )
  await execa('tar', ['czf', path.join(work, 'probe.tgz'), '-C', work, 'package'])
  const tarball = readFileSync(path.join(work, 'probe.tgz'))
  const tarballPath = `/${PROBE}/-/arch-1.0.0.tgz`
  let url = ''
  const server = createServer((request, response) => {
    const wanted = decodeURIComponent(request.url ?? '')
    if (wanted === `/${PROBE}`) {
      const version = {
        ...manifest,
        hasInstallScript: true,
        dist: {
          tarball: `${url}${tarballPath.slice(1)}`,
          integrity: `sha512-${createHash('sha512').update(tarball).digest('base64')}`,
        },
      }
      response
        .writeHead(200, {'content-type': 'application/json'})
        .end(JSON.stringify({name: PROBE, 'dist-tags': {latest: '1.0.0'}, versions: {'1.0.0': version}}))
    } else if (wanted === tarballPath) {
      response.writeHead(200, {'content-type': 'application/octet-stream'}).end(tarball)
    } else {
      response.writeHead(404).end()
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`
  return {url, close: () => new Promise((resolve) => server.close(() => resolve()))}
}

describe('build for several platforms', () => {
  it('builds hello for amd64 and arm64 into one index that skopeo and umoci read, with arm64 binaries that run under qemu', async () => {
    const home = freshHome()
    const kit = copyKit('hello')
    const report = await build(home, [kit, '--platform', 'linux/amd64,linux/arm64'])
    expect(report.mediaType).toBe('application/vnd.oci.image.index.v1+json')
    expect(report.platforms.map((p) => p.platform)).toEqual(['linux/amd64', 'linux/arm64'])

    const store = path.join(home, 'store')
    const index = JSON.parse(blob(store, report.digest).toString('utf8')) as Index
    expect(index.manifests.map((m) => [m.mediaType, m.platform])).toEqual([
      ['application/vnd.oci.image.manifest.v1+json', {os: 'linux', architecture: 'amd64'}],
      ['application/vnd.oci.image.manifest.v1+json', {os: 'linux', architecture: 'arm64'}],
    ])
    // Each image's config says the same architecture as its index entry.
    for (const entry of index.manifests) {
      const manifest = JSON.parse(blob(store, entry.digest).toString('utf8')) as {config: {digest: string}}
      const config = JSON.parse(blob(store, manifest.config.digest).toString('utf8')) as {
        os: string
        architecture: string
      }
      expect({os: config.os, architecture: config.architecture}).toEqual(entry.platform)
    }
    // The two base layers differ (different architectures); the kit's own files are the same layer.
    const layers = (p: number, step: string) => report.platforms[p].layers.find((layer) => layer.step === step)!.digest
    expect(layers(0, 'base')).not.toBe(layers(1, 'base'))
    expect(layers(0, 'files')).toBe(layers(1, 'files'))

    const raw = await execa('skopeo', ['inspect', '--raw', `oci:${store}:hello:0.1.0`])
    expect(JSON.parse(raw.stdout)).toEqual(index)
    // skopeo picks the arm64 image out of the index.
    const arm = JSON.parse(
      (await execa('skopeo', ['inspect', '--override-arch', 'arm64', `oci:${store}:hello:0.1.0`])).stdout,
    ) as {Architecture: string; Layers: string[]}
    expect(arm.Architecture).toBe('arm64')
    expect(arm.Layers).toEqual(report.platforms[1].layers.map((layer) => layer.digest))

    const amd64Root = await unpackPlatform(store, 'hello:0.1.0', 'amd64')
    const arm64Root = await unpackPlatform(store, 'hello:0.1.0', 'arm64')
    expect(elfMachine(path.join(amd64Root, 'bin/busybox'))).toBe(62)
    expect(elfMachine(path.join(arm64Root, 'bin/busybox'))).toBe(183)
    expect(readFileSync(path.join(arm64Root, 'srv/www/index.html'), 'utf8')).toContain('Hello from aegis-kit')
    expect((await execa('qemu-aarch64-static', [path.join(arm64Root, 'bin/busybox'), 'echo', 'ok'])).stdout).toBe('ok')
    // In a chroot, through binfmt_misc (the F flag: the chroot has no qemu of its own).
    expect((await execa('chroot', [arm64Root, '/bin/busybox', 'echo', 'ok'])).stdout).toBe('ok')

    // The lock has each platform's own packages.
    const lock = JSON.parse(readFileSync(path.join(kit, 'aegis-kit.lock.json'), 'utf8')) as {
      base: {platforms: Record<string, {packages: Array<{name: string; architecture: string}>}>}
    }
    expect(Object.keys(lock.base.platforms)).toEqual(['linux/amd64', 'linux/arm64'])
    expect(lock.base.platforms['linux/arm64'].packages).toEqual([
      expect.objectContaining({name: 'busybox-static', architecture: 'arm64'}),
    ])
  }, 180_000)

  it('image.platforms is the default for --platform, and a rebuild of the index reuses every layer', async () => {
    const home = freshHome()
    const kit = copyKit('hello')
    const file = path.join(kit, 'aegis-kit.yaml')
    writeFileSync(
      file,
      readFileSync(file, 'utf8').replace(
        '  workdir: /srv/www\n',
        '  workdir: /srv/www\n  platforms: [linux/arm64, linux/amd64]\n',
      ),
    )
    const report = await build(home, [kit])
    expect(report.platforms.map((p) => p.platform)).toEqual(['linux/arm64', 'linux/amd64'])
    const again = await build(home, [kit])
    expect(again.digest).toBe(report.digest)
    const only = await build(home, [kit, '--platform', 'linux/amd64'])
    expect(only.mediaType).toBe('application/vnd.oci.image.manifest.v1+json')
    expect(only.digest).toBe(report.platforms[1].manifest.digest)
  }, 180_000)

  it('an arm64 image gets the arm64 Node and the arm64 build of a native npm package', async () => {
    const home = freshHome()
    const kit = nodeKit('native', '{packages: [esbuild@0.25.12]}')
    const report = await build(home, [kit, '--platform', 'linux/arm64'])
    expect(report.platforms[0].layers.map((layer) => layer.step)).toEqual(['base', 'node', 'npm', 'aegis'])
    const root = await unpackPlatform(path.join(home, 'store'), 'native:0.1.0', 'arm64')
    expect(elfMachine(path.join(root, 'opt/aegis/node/bin/node'))).toBe(183)
    const modules = path.join(root, 'opt/aegis/npm/lib/node_modules')
    expect(
      existsSync(path.join(modules, 'esbuild/node_modules/@esbuild/linux-arm64')) ||
        existsSync(path.join(modules, '@esbuild/linux-arm64')),
    ).toBe(true)
    const binary = [
      path.join(modules, '@esbuild/linux-arm64/bin/esbuild'),
      path.join(modules, 'esbuild/node_modules/@esbuild/linux-arm64/bin/esbuild'),
    ].find((file) => existsSync(file))!
    expect(elfMachine(binary)).toBe(183)
    expect(
      existsSync(path.join(modules, '@esbuild/linux-x64')) ||
        existsSync(path.join(modules, 'esbuild/node_modules/@esbuild/linux-x64')),
    ).toBe(false)
    const node = await execa('chroot', [root, '/opt/aegis/node/bin/node', '--version'])
    expect(node.stdout).toBe('v24.21.0')
    const esbuild = await execa('chroot', [
      root,
      '/opt/aegis/node/bin/node',
      '/opt/aegis/npm/lib/node_modules/esbuild/bin/esbuild',
      '--version',
    ])
    expect(esbuild.stdout).toBe('0.25.12')
  }, 300_000)

  it("allowed install scripts run with the image's Node: arm64 in the arm64 image, x64 in the amd64 one", async () => {
    const registry = await probeRegistry()
    try {
      const home = freshHome()
      // esbuild's postinstall puts the binary of the platform its Node reports at bin/esbuild
      // (fetching it when npm did not install it): the host's, if the host's Node ran it.
      const kit = nodeKit(
        'scripts',
        `{packages: ['${PROBE}@1.0.0', esbuild@0.25.12], allow_scripts: ['${PROBE}', esbuild]}`,
      )
      const result = await runCli(['build', kit, '--platform', 'linux/amd64,linux/arm64', '--json'], {
        env: {AEGIS_KIT_HOME: home, [`npm_config_${PROBE.split('/')[0]}:registry`]: registry.url},
        timeout: 600_000,
      })
      expect(result.exitCode, result.stderr).toBe(0)
      const report = JSON.parse(result.stdout) as BuildReport
      expect(report.platforms.map((p) => p.platform)).toEqual(['linux/amd64', 'linux/arm64'])
      const store = path.join(home, 'store')
      const modules = (root: string) => path.join(root, 'opt/aegis/npm/lib/node_modules')
      const recorded = (root: string) =>
        JSON.parse(readFileSync(path.join(modules(root), PROBE, 'install-arch.json'), 'utf8')) as {
          arch: string
          platform: string
        }

      const arm64Root = await unpackPlatform(store, 'scripts:0.1.0', 'arm64')
      expect(recorded(arm64Root)).toEqual({arch: 'arm64', platform: 'linux'})
      expect(elfMachine(path.join(modules(arm64Root), 'esbuild/bin/esbuild'))).toBe(183)
      expect(existsSync(path.join(modules(arm64Root), 'esbuild/node_modules/@esbuild/linux-x64'))).toBe(false)
      expect((await execa('chroot', [arm64Root, '/opt/aegis/npm/bin/esbuild', '--version'])).stdout).toBe('0.25.12')

      const amd64Root = await unpackPlatform(store, 'scripts:0.1.0', 'amd64')
      expect(recorded(amd64Root)).toEqual({arch: 'x64', platform: 'linux'})
      expect(elfMachine(path.join(modules(amd64Root), 'esbuild/bin/esbuild'))).toBe(62)
    } finally {
      await registry.close()
    }
  }, 600_000)

  it('refuses a platform it cannot build, in one line', async () => {
    const result = await runCli(['build', 'hello', '--platform', 'linux/riscv64'], {
      env: {AEGIS_KIT_HOME: tempDir('aegis-kit-platforms-')},
    })
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(/cannot build for linux\/riscv64/)
    expect(result.stderr).toMatch(/linux\/amd64 and linux\/arm64/)
    expect(hasStackTrace(result.all)).toBe(false)
  })
})

describe('emulation for foreign-architecture Debian bases', () => {
  function binfmt(entries: Record<string, string>, status = 'enabled'): string {
    const dir = tempDir('aegis-kit-binfmt-')
    writeFileSync(path.join(dir, 'status'), `${status}\n`)
    writeFileSync(path.join(dir, 'register'), '')
    for (const [name, text] of Object.entries(entries)) writeFileSync(path.join(dir, name), text)
    return dir
  }
  const aarch64 = (flags: string, state = 'enabled') =>
    `${state}\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: ${flags}\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n`

  it('needs qemu-aarch64 registered, enabled, with the F flag', async () => {
    expect(await emulationProblem('arm64', binfmt({'qemu-aarch64': aarch64('POF')}))).toBeUndefined()
    expect(await emulationProblem('arm64', binfmt({'qemu-aarch64': aarch64('PO')}))).toMatch(
      /qemu-aarch64 is registered with binfmt_misc without the F \(fix-binary\) flag/,
    )
    expect(await emulationProblem('arm64', binfmt({'qemu-aarch64': aarch64('POF', 'disabled')}))).toMatch(
      /qemu-aarch64 is registered with binfmt_misc but disabled/,
    )
    expect(
      await emulationProblem(
        'arm64',
        binfmt({python3: 'enabled\ninterpreter /usr/bin/python3.11\nflags: \noffset 0\nmagic a70d0d0a\n'}),
      ),
    ).toMatch(/no qemu-aarch64 is registered/)
    expect(await emulationProblem('arm64', binfmt({'qemu-aarch64': aarch64('POF')}, 'disabled'))).toBe(
      'binfmt_misc is disabled',
    )
    const missing = tempDir('aegis-kit-binfmt-')
    rmSync(missing, {recursive: true})
    expect(await emulationProblem('arm64', missing)).toMatch(/binfmt_misc is not mounted/)
    // x86-64 programs need their own handler (an arm64 host building amd64).
    expect(await emulationProblem('amd64', binfmt({'qemu-aarch64': aarch64('POF')}))).toMatch(
      /no qemu-x86_64 is registered/,
    )
  })

  it("a foreign platform's install scripts need emulation: one line saying which scripts and why", async () => {
    const binfmtDir = binfmt({'qemu-aarch64': aarch64('POF', 'disabled')})
    const failure = await prepareTargetNode('24.21.0', 'linux/arm64', {
      cacheDir: tempDir('aegis-kit-target-'),
      packages: ['openclaw'],
      binfmtDir,
    }).catch((error: Error) => error)
    expect(failure).toBeInstanceOf(Error)
    expect((failure as Error).message).toBe(
      'cannot run the install scripts of openclaw for linux/arm64: they run with the arm64 Node under qemu-user emulation, and qemu-aarch64 is registered with binfmt_misc but disabled',
    )
  })

  it('this machine can run arm64 programs in a chroot (scripts/setup registered qemu-aarch64)', async () => {
    expect(await emulationProblem('arm64')).toBeUndefined()
  })
})
