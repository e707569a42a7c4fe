// `aegis-kit run` with the hello kit in real QEMU microVMs (TCG here): the page through
// --expose, secrets that reach only the workload, the workspace, what a guest may reach on the
// host, and no process left behind, also when the CLI is killed.
import {randomBytes} from 'node:crypto'
import {copyFileSync, cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync} from 'node:fs'
import {createServer, type Server} from 'node:http'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {finalLines, hasStackTrace, onTerminal, repoRoot, runCli} from '../helpers/cli.js'
import {startRegistry} from '../helpers/registry.js'
import {
  alive,
  descendants,
  emptyDir,
  execa,
  filesContaining,
  freePort,
  lingeringWithEnv,
  pathWithout,
  startRun,
  waitGone,
} from './helpers.js'

const SECRET = 'hello-secret-0f3c9a7e5d1b'
/** Why KVM is not used on these machines: some have a nested /dev/kvm that fails the probe boot, some none. */
const NO_KVM_HERE = /a test boot under KVM|\/dev\/kvm does not exist/
let home: string

beforeAll(async () => {
  home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-run-'))
  const built = await runCli(['build', 'hello'], {env: {AEGIS_KIT_HOME: home}})
  expect(built.exitCode, built.stderr).toBe(0)
}, 300_000)

function env(extra: Record<string, string> = {}): Record<string, string> {
  return {AEGIS_KIT_HOME: home, ...extra}
}

let bare: Promise<string> | undefined
/** A second home with hello built and no guest kernel in its store (made once, on first use). */
function bareHome(): Promise<string> {
  bare ??= (async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'aegis-kit-bare-'))
    const built = await runCli(['build', 'hello'], {env: {AEGIS_KIT_HOME: dir}, timeout: 300_000})
    expect(built.exitCode, built.stderr).toBe(0)
    return dir
  })()
  return bare
}

interface GuestInfo {
  reference: string
  digest: string
  kernelRelease: string
  kernelVersion: string
  layers: Array<{mediaType: string; digest: string; annotations?: Record<string, string>}>
}

/** The aegis-guest artifact in `home`'s store, as `images` and `images inspect` show it. */
async function storedGuest(kitHome: string): Promise<GuestInfo | undefined> {
  const listed = await runCli(['images', '--json'], {env: {AEGIS_KIT_HOME: kitHome}})
  expect(listed.exitCode, listed.stderr).toBe(0)
  const entry = (JSON.parse(listed.stdout) as {images: Array<{name: string; tag: string; digest: string}>}).images.find(
    (image) => image.name === 'aegis-guest',
  )
  if (!entry) return undefined
  const inspected = await runCli(['images', 'inspect', `aegis-guest:${entry.tag}`, '--json'], {
    env: {AEGIS_KIT_HOME: kitHome},
  })
  expect(inspected.exitCode, inspected.stderr).toBe(0)
  const manifest = (
    JSON.parse(inspected.stdout) as {
      images: Array<{
        manifest: {artifactType?: string; annotations?: Record<string, string>; layers: GuestInfo['layers']}
      }>
    }
  ).images[0]!.manifest
  expect(manifest.artifactType).toBe('application/vnd.aegis.guest.v1')
  return {
    reference: `aegis-guest:${entry.tag}`,
    digest: entry.digest,
    kernelRelease: manifest.annotations?.['io.aegis.guest.kernel.release'] ?? '',
    kernelVersion: manifest.annotations?.['io.aegis.guest.kernel.version'] ?? '',
    layers: manifest.layers,
  }
}

/** QEMU's -kernel and -initrd among the processes below `pid`. */
function bootFilesOf(pid: number): {kernel?: string; initrd?: string} {
  for (const child of descendants(pid)) {
    const args = readFileSync(`/proc/${child}/cmdline`, 'utf8').split('\0')
    if (!args[0]?.includes('qemu-system')) continue
    return {kernel: args[args.indexOf('-kernel') + 1], initrd: args[args.indexOf('-initrd') + 1]}
  }
  return {}
}

describe('run hello', () => {
  it('serves its page through --expose, stops on Ctrl-C, and leaves no process behind', async () => {
    const port = await freePort()
    const run = startRun(['hello', '--expose', `${port}:8080`], env())
    const [, url] = await run.waitFor(/UI: (http:\/\/127\.0\.0\.1:\d+\/)/, 120_000)
    expect(url).toBe(`http://127.0.0.1:${port}/`)
    const page = await fetch(url)
    expect(page.status).toBe(200)
    expect(await page.text()).toContain('<h1>Hello from aegis-kit</h1>')
    const helpers = descendants(run.child.pid!)
    expect(helpers.length).toBeGreaterThanOrEqual(3) // qemu, virtiofsd (root, workspace), gvproxy
    run.child.kill('SIGINT')
    const result = await run.child
    expect(result.exitCode).toBe(143) // the workload's: busybox httpd ended by SIGTERM
    expect(run.output()).toMatch(/hello: the workload exited with code 143/)
    // These machines' /dev/kvm is missing or fails the probe boot: TCG, and the output says why.
    expect(run.output()).toMatch(
      new RegExp(
        `warning: running under TCG software emulation \\(Node workloads start 8-14x slower\\): (${NO_KVM_HERE.source}).+; --accel tcg skips this check`,
      ),
    )
    expect(run.output()).toMatch(/booting hello: \d+ MiB, 1 vCPU, TCG, workspace /)
    expect(await waitGone(helpers, 10_000)).toEqual([])
    await expect(fetch(url)).rejects.toThrow()
    expect(readFileSync(path.join(home, 'workspaces/hello/hello.json'), 'utf8')).toContain(
      '"title":"Hello from aegis-kit"',
    )
  }, 180_000)

  it("prints a UI port's URL in the scheme routing.expose[].protocol declares", async () => {
    const kit = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-kit-')), 'hello')
    cpSync(path.join(repoRoot, 'kits/hello'), kit, {recursive: true})
    const manifestPath = path.join(kit, 'aegis-kit.yaml')
    const manifest = readFileSync(manifestPath, 'utf8')
    expect(manifest).toContain('      protocol: http\n')
    writeFileSync(manifestPath, manifest.replace('      protocol: http\n', '      protocol: https\n'))
    // A home of its own: this variant of hello must not take the hello tag the other tests use.
    const variantHome = mkdtempSync(path.join(tmpdir(), 'aegis-kit-run-'))
    const port = await freePort()
    const run = startRun([kit, '--expose', `${port}:8080`], {AEGIS_KIT_HOME: variantHome})
    // hello's httpd speaks plain HTTP: the scheme printed is the manifest's word, not a probe's.
    const [, url] = await run.waitFor(/UI: (\S+)/, 240_000)
    expect(url).toBe(`https://127.0.0.1:${port}/`)
    run.child.kill('SIGINT')
    expect((await run.child).exitCode).toBe(143)
  }, 300_000)

  it('leaves no process behind when the CLI itself is killed', async () => {
    const port = await freePort()
    const run = startRun(['hello', '--name', 'killed', '--expose', `${port}:8080`], env())
    await run.waitFor(/UI: http/, 120_000)
    const helpers = descendants(run.child.pid!)
    expect(alive(helpers).length).toBeGreaterThanOrEqual(3)
    run.child.kill('SIGKILL')
    await run.child
    expect(await waitGone(helpers, 15_000)).toEqual([])
  }, 180_000)

  it('a secret reaches the workload environment and /run/secrets, and no log, layer, config or /proc/cmdline', async () => {
    const workspace = mkdtempSync(path.join(tmpdir(), 'aegis-kit-ws-'))
    const script = [
      'printf %s "$HELLO_GREETING" | busybox sha256sum > /workspace/env.sha',
      'busybox sha256sum < /run/secrets/HELLO_GREETING > /workspace/file.sha',
      'busybox stat -c "%a %u" /run/secrets/HELLO_GREETING > /workspace/secret.stat',
      'busybox cat /proc/cmdline > /workspace/cmdline',
      'echo "the greeting is $HELLO_GREETING"',
      'busybox id -u > /workspace/uid',
    ].join('; ')
    const result = await runCli(
      [
        'run',
        'hello',
        '--secret',
        'HELLO_GREETING=MY_GREETING',
        '--workspace',
        workspace,
        '--',
        'busybox',
        'sh',
        '-c',
        script,
      ],
      {env: env({MY_GREETING: SECRET}), timeout: 180_000},
    )
    expect(result.exitCode, result.all).toBe(0)
    const digest = (await execa('sha256sum', {input: SECRET})).stdout.split(' ')[0]
    expect(readFileSync(path.join(workspace, 'env.sha'), 'utf8').split(' ')[0]).toBe(digest)
    expect(readFileSync(path.join(workspace, 'file.sha'), 'utf8').split(' ')[0]).toBe(digest)
    expect(readFileSync(path.join(workspace, 'secret.stat'), 'utf8').trim()).toBe('400 1000')
    expect(readFileSync(path.join(workspace, 'uid'), 'utf8').trim()).toBe('1000')
    expect(readFileSync(path.join(workspace, 'cmdline'), 'utf8')).not.toContain(SECRET)
    // The workload printed it: the runner masks it.
    expect(result.stdout).toContain('the greeting is ****')
    expect(result.all).not.toContain(SECRET)
    expect(filesContaining(path.join(home, 'store'), SECRET)).toEqual([])
    expect(filesContaining(path.join(home, 'cache'), SECRET)).toEqual([])
    expect(filesContaining(workspace, SECRET)).toEqual([])
  }, 180_000)

  it('a guest reaches a host loopback service only when the kit declares it, and cannot open host ports', async () => {
    let hits = 0
    const server: Server = createServer((_, response) => {
      hits++
      response.end('host-service-answer\n')
    })
    const servicePort = await freePort()
    await new Promise<void>((resolve) => server.listen(servicePort, '127.0.0.1', resolve))
    const stolenPort = await freePort()
    try {
      const kit = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-kit-')), 'hello')
      cpSync(path.join(repoRoot, 'kits/hello'), kit, {recursive: true})
      const probe = [
        `busybox wget -q -O /workspace/declared http://192.168.127.254:${servicePort}/ ; echo declared=$? > /workspace/declared.rc`,
        `busybox wget -q -O- --post-data '{"local":"127.0.0.1:${stolenPort}","remote":"192.168.127.2:8080","protocol":"tcp"}' http://192.168.127.1/services/forwarder/expose ; echo expose=$? > /workspace/expose.rc`,
      ].join('; ')
      const undeclared = mkdtempSync(path.join(tmpdir(), 'aegis-kit-ws-'))
      const first = await runCli(['run', kit, '--workspace', undeclared, '--', 'busybox', 'sh', '-c', probe], {
        env: env(),
        timeout: 180_000,
      })
      expect(first.exitCode, first.all).toBe(0)
      expect(readFileSync(path.join(undeclared, 'declared.rc'), 'utf8').trim()).not.toBe('declared=0')
      expect(readFileSync(path.join(undeclared, 'expose.rc'), 'utf8').trim()).not.toBe('expose=0')
      expect(hits).toBe(0)
      await expect(fetch(`http://127.0.0.1:${stolenPort}/`)).rejects.toThrow()

      const manifest = readFileSync(path.join(kit, 'aegis-kit.yaml'), 'utf8')
      writeFileSync(
        path.join(kit, 'aegis-kit.yaml'),
        `${manifest}\nnetworking:\n  internal_hosts:\n    - 127.0.0.1:${servicePort}\n`,
      )
      const declared = mkdtempSync(path.join(tmpdir(), 'aegis-kit-ws-'))
      const second = await runCli(['run', kit, '--workspace', declared, '--', 'busybox', 'sh', '-c', probe], {
        env: env(),
        timeout: 180_000,
      })
      expect(second.exitCode, second.all).toBe(0)
      expect(readFileSync(path.join(declared, 'declared.rc'), 'utf8').trim()).toBe('declared=0')
      expect(readFileSync(path.join(declared, 'declared'), 'utf8')).toBe('host-service-answer\n')
      expect(readFileSync(path.join(declared, 'expose.rc'), 'utf8').trim()).not.toBe('expose=0')
      expect(hits).toBe(1)
    } finally {
      server.close()
    }
  }, 400_000)

  it('reports the workload exit code, and an out-of-memory kill in plain words', async () => {
    const exit = await runCli(['run', 'hello', '--', 'busybox', 'sh', '-c', 'exit 7'], {env: env(), timeout: 180_000})
    expect(exit.exitCode).toBe(7)
    expect(exit.stderr).toMatch(/hello: the workload exited with code 7/)
    const oom = await runCli(
      ['run', 'hello', '--memory', '160mb', '--', 'busybox', 'sh', '-c', 'x=a; while true; do x="$x$x"; done'],
      {env: env(), timeout: 180_000},
    )
    expect(oom.exitCode).toBe(137)
    expect(oom.stderr).toMatch(/killed because the VM ran out of memory \(160 MiB\).*--memory/)
  }, 400_000)

  it("on a terminal, shows each start-up step as a live line, then its time, and the workload's output", async () => {
    const {exitCode, screen} = await onTerminal(['run', 'hello', '--', 'busybox', 'uname', '-m'], home, 180_000)
    expect(exitCode, screen).toBe(0)
    // Live: a spinner and the time so far, redrawn in place.
    expect(screen).toMatch(/\x1b\[K[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] aegis-kit: building hello \(cached layers are reused\)\s+\d+\.\ds/)
    // What stays on screen: each step's one line with its time (a first run in this home also
    // assembles the guest: a step of its own), then the workload's output and how it ended.
    const lines = finalLines(screen).filter((line) => line !== '' && !/^(aegis-kit: )?warning:/.test(line))
    expect(lines[0]).toMatch(/^aegis-kit: building hello \(cached layers are reused\): \d+\.\ds$/)
    expect(lines.slice(-3)).toEqual([
      expect.stringMatching(/^aegis-kit: booting hello: 256 MiB, 1 vCPU, (TCG|KVM), workspace .*: \d+\.\ds$/),
      'hello | x86_64',
      'aegis-kit: hello: the workload exited with code 0',
    ])
    expect(lines.every((line) => !line.includes('\x1b'))).toBe(true)
  }, 200_000)
})

describe('run rejects bad input with a one-line error and the fix', () => {
  type Case = {
    name: string
    args: (port: number) => string[]
    error: RegExp
    hint?: RegExp
    env?: () => Record<string, string>
    setup?: (port: number) => Promise<() => void>
  }
  const cases: Case[] = [
    {name: 'unknown kit', args: () => ['no-such-kit'], error: /no kit "no-such-kit"/},
    {
      name: 'bad --expose',
      args: () => ['hello', '--expose', '80:99999'],
      error: /--expose 80:99999: expected HOST\[:GUEST\]/,
    },
    {
      name: 'memory too small',
      args: () => ['hello', '--memory', '64mb'],
      error: /--memory 64mb is 64 MiB; a VM needs at least 128 MiB/,
    },
    {
      name: 'workspace not a directory',
      args: () => ['hello', '--workspace', path.join(repoRoot, 'package.json')],
      error: /--workspace .*package\.json is not a directory/,
    },
    {name: 'undeclared secret', args: () => ['hello', '--secret', 'NOPE'], error: /does not declare a secret NOPE/},
    {
      name: 'krun without libkrun',
      args: () => ['hello', '--backend', 'krun'],
      error: /libkrun, which is not installed/,
    },
    // These machines' /dev/kvm is nested PVM: QEMU aborts on it (REFERENCE.md).
    {
      name: '--accel kvm where KVM cannot boot the guest',
      args: () => ['hello', '--accel', 'kvm'],
      error: new RegExp(`Error: --accel kvm: KVM cannot boot the guest here: (${NO_KVM_HERE.source})`),
      hint: /hint: use --accel tcg/,
    },
    {
      name: 'host port in use',
      args: (port) => ['hello', '--expose', `${port}:8080`],
      error: /port \d+ is already in use on 127\.0\.0\.1/,
      setup: async (port) => {
        const server = createServer().listen(port, '127.0.0.1')
        await new Promise((resolve) => server.once('listening', resolve))
        return () => server.close()
      },
    },
    // Real machines without the tool: a PATH that lacks it (and no podman directories for gvproxy).
    {
      name: 'gvproxy not installed',
      args: () => ['hello'],
      env: () => ({PATH: pathWithout('gvproxy'), AEGIS_KIT_HELPER_DIRS: emptyDir()}),
      error: /Error: gvproxy is not installed \(looked on PATH and in .*aegis-kit-empty-/,
      hint: /hint: run scripts\/install-gvproxy/,
    },
    // A stand-in: the real gvproxy cannot be made to fail at start. QEMU is already booting by
    // then (it does not wait for gvproxy): the run must stop it and leave nothing behind.
    {
      name: 'gvproxy that exits at start (a stand-in script)',
      args: () => ['hello'],
      env: () => {
        const dir = emptyDir()
        writeFileSync(
          path.join(dir, 'gvproxy'),
          '#!/bin/sh\necho "gvproxy: cannot listen: stand-in failure" >&2\nexit 1\n',
          {mode: 0o755},
        )
        return {PATH: pathWithout('gvproxy'), AEGIS_KIT_HELPER_DIRS: dir}
      },
      error: /Error: gvproxy did not start: .*stand-in failure/,
      hint: /hint: check that .*gvproxy is gvproxy 0\.7 or newer/,
    },
    {
      name: 'qemu not installed',
      args: () => ['hello'],
      env: () => ({PATH: pathWithout('qemu-system-x86_64')}),
      error: /Error: qemu-system-x86_64 is not installed/,
      hint: /hint: install it: apt-get install qemu-system-x86/,
    },
    {
      name: '--kernel missing',
      args: () => ['hello', '--kernel', '/nonexistent/vmlinux'],
      error: /--kernel \/nonexistent\/vmlinux does not exist/,
      hint: /drop --kernel/,
    },
    {
      name: '--kernel not a kernel',
      args: () => ['hello', '--kernel', path.join(repoRoot, 'package.json')],
      error: /--kernel .*package\.json is not a Linux kernel/,
    },
    {
      name: '--kernel a program, not a kernel',
      args: () => ['hello', '--kernel', '/bin/ls'],
      error: /--kernel \/bin\/ls is an ELF file but not a kernel QEMU can boot/,
    },
    {
      name: '--initrd not an initramfs',
      args: () => ['hello', '--initrd', path.join(repoRoot, 'package.json')],
      error: /--initrd .*package\.json is not an initramfs/,
    },
    {
      name: '--guest not a guest',
      args: () => ['hello', '--guest', 'hello:0.1.0'],
      error: /hello:0\.1\.0 is not an aegis-kit guest/,
    },
    {
      name: '--guest unknown',
      args: () => ['hello', '--guest', 'aegis-guest:nope'],
      error: /no image aegis-guest:nope in the store/,
    },
  ]
  for (const testCase of cases) {
    it(testCase.name, async () => {
      const port = await freePort()
      const cleanup = await testCase.setup?.(port)
      const marker = `AEGIS_TEST_MARK=${randomBytes(6).toString('hex')}`
      try {
        const result = await runCli(['run', ...testCase.args(port)], {
          env: env({...testCase.env?.(), [marker.split('=')[0]!]: marker.split('=')[1]!}),
          timeout: 60_000,
        })
        expectOneLineError(result, testCase.error, testCase.hint)
        expect(await lingeringWithEnv(marker)).toEqual([])
      } finally {
        cleanup?.()
      }
    }, 120_000)
  }

  it('a config validate_config rejects: its problems, and nothing left running (gvproxy and virtiofsd start alongside the hooks)', async () => {
    const config = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-config-')), 'config.json')
    writeFileSync(config, JSON.stringify({title: ''}))
    const port = await freePort()
    const marker = `marker-${randomBytes(6).toString('hex')}`
    const result = await runCli(['run', 'hello', '--config', config, '--expose', `${port}:8080`], {
      env: env({AEGIS_TEST_MARK: marker}),
      timeout: 120_000,
    })
    expect(result.exitCode, result.all).toBe(1)
    expect(result.stderr).toMatch(
      /Error: the hello config has 1 problem \(validate_config\):\n {2}title: title must be a non-empty string\n {2}hint: /,
    )
    expect(hasStackTrace(result.all)).toBe(false)
    expect(await lingeringWithEnv(`AEGIS_TEST_MARK=${marker}`)).toEqual([])
    // The host port gvproxy may have bound is free again.
    await new Promise<void>((resolve, reject) => {
      const server = createServer()
        .once('error', reject)
        .listen(port, '127.0.0.1', () => server.close(() => resolve()))
    })
  }, 180_000)

  it('a config validate_config rejects costs no build and no guest kernel in a home that has neither', async () => {
    const empty = mkdtempSync(path.join(tmpdir(), 'aegis-kit-empty-'))
    const config = path.join(empty, 'config.json')
    writeFileSync(config, JSON.stringify({title: ''}))
    const result = await runCli(['run', 'hello', '--config', config], {
      env: {AEGIS_KIT_HOME: path.join(empty, 'home')},
      timeout: 120_000,
    })
    expect(result.exitCode, result.all).toBe(1)
    expect(result.stderr).toMatch(/Error: the hello config has 1 problem \(validate_config\)/)
    expect(result.all).not.toMatch(/assembling the guest|base|debian/)
    const listed = await runCli(['images', '--json'], {env: {AEGIS_KIT_HOME: path.join(empty, 'home')}})
    expect(JSON.parse(listed.stdout)).toEqual({images: []})
  }, 180_000)

  it("guest kernel unavailable: Debian's archive unreachable", async () => {
    // A real apt that cannot reach the archive: its own proxy setting points at a closed port.
    // The second home has hello built but no guest yet, so run has to download the kernel.
    const kitHome = await bareHome()
    const aptConfig = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-apt-')), 'apt.conf')
    writeFileSync(aptConfig, `Acquire::http::Proxy "http://127.0.0.1:${await freePort()}";\nAcquire::Retries "0";\n`)
    const marker = `marker-${randomBytes(6).toString('hex')}`
    const result = await runCli(['run', 'hello'], {
      env: {AEGIS_KIT_HOME: kitHome, APT_CONFIG: aptConfig, AEGIS_TEST_MARK: marker},
      timeout: 120_000,
    })
    expectOneLineError(
      result,
      /Error: downloading the guest kernel \(apt-get download linux-image-\S+\) failed: E: Failed to fetch .*Could not connect/,
      /hint: check that Debian's package archive is reachable .*--kernel FILE --initrd FILE/,
    )
    expect(await lingeringWithEnv(`AEGIS_TEST_MARK=${marker}`)).toEqual([])
    expect(await storedGuest(kitHome)).toBeUndefined()
  }, 400_000)
})

function expectOneLineError(
  result: {exitCode: number; stderr: string; all: string},
  error: RegExp,
  hint = /hint: /,
): void {
  expect(result.exitCode, result.all).toBe(1)
  expect(result.stderr).toMatch(error)
  expect(result.stderr).toMatch(hint)
  // Progress lines may come first; the error itself is one line and its hint.
  const reported = result.stderr.slice(result.stderr.indexOf('Error: ')).trim()
  expect(reported.split('\n').length, result.stderr).toBeLessThanOrEqual(2)
  expect(hasStackTrace(result.all)).toBe(false)
}

describe('the guest kernel and initramfs are an artifact in the store', () => {
  it("run boots the store's guest, which images lists and prune keeps while it is tagged", async () => {
    const first = await runCli(['run', 'hello', '--', 'busybox', 'uname', '-r'], {env: env(), timeout: 300_000})
    expect(first.exitCode, first.all).toBe(0)
    const guest = await storedGuest(home)
    expect(guest?.reference).toMatch(/^aegis-guest:\d[\w.-]*-amd64-[0-9a-f]{12}$/)
    expect(
      guest?.layers.map((layer) => [layer.mediaType, layer.annotations?.['org.opencontainers.image.title']]),
    ).toEqual([
      ['application/vnd.aegis.guest.kernel.v1', 'vmlinux'],
      ['application/vnd.aegis.guest.initrd.v1.cpio+gzip', 'initrd.img'],
    ])
    expect(first.stdout).toContain(`hello | ${guest!.kernelRelease}`)

    const pruned = await runCli(['images', 'prune'], {env: env()})
    expect(pruned.exitCode, pruned.stderr).toBe(0)
    expect((await storedGuest(home))?.digest).toBe(guest!.digest)
    for (const layer of guest!.layers)
      expect(existsSync(path.join(home, 'store/blobs/sha256', layer.digest.slice(7)))).toBe(true)

    // Booted from the store, not assembled again.
    const again = await runCli(['run', 'hello', '--', 'busybox', 'uname', '-r'], {env: env(), timeout: 180_000})
    expect(again.exitCode, again.all).toBe(0)
    expect(again.stdout).toContain(`hello | ${guest!.kernelRelease}`)
    expect(again.stderr).not.toMatch(/assembling/)
  }, 500_000)

  it('--kernel and --initrd boot the files exported from the guest artifact', async () => {
    const guest = await storedGuest(home)
    expect(guest).toBeDefined()
    const dir = mkdtempSync(path.join(tmpdir(), 'aegis-kit-bootfiles-'))
    const exported = await runCli(['images', 'export', guest!.reference, '-o', path.join(dir, 'guest.tar')], {
      env: env(),
    })
    expect(exported.exitCode, exported.stderr).toBe(0)
    await execa('tar', ['-xf', 'guest.tar'], {cwd: dir})
    const kernel = path.join(dir, 'vmlinux')
    const initrd = path.join(dir, 'initrd.img')
    copyFileSync(path.join(dir, 'blobs/sha256', guest!.layers[0]!.digest.slice(7)), kernel)
    copyFileSync(path.join(dir, 'blobs/sha256', guest!.layers[1]!.digest.slice(7)), initrd)

    const port = await freePort()
    const run = startRun(['hello', '--expose', `${port}:8080`, '--kernel', kernel, '--initrd', initrd], env())
    await run.waitFor(/UI: http/, 120_000)
    expect(bootFilesOf(run.child.pid!)).toEqual({kernel, initrd})
    expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(200)
    const helpers = descendants(run.child.pid!)
    run.child.kill('SIGINT')
    expect((await run.child).exitCode).toBe(143)
    expect(await waitGone(helpers, 10_000)).toEqual([])
  }, 300_000)

  it('images push and pull carry it like any image, and --guest boots a pulled one', async () => {
    const guest = await storedGuest(home)
    expect(guest).toBeDefined()
    const registry = await startRegistry()
    try {
      const remote = `${registry.host}/aegis/guest:${guest!.reference.split(':')[1]}`
      const pushed = await runCli(['images', 'push', guest!.reference, remote], {env: env()})
      expect(pushed.exitCode, pushed.stderr).toBe(0)

      const elsewhere = await bareHome()
      const pulled = await runCli(['images', 'pull', remote, '--json'], {env: {AEGIS_KIT_HOME: elsewhere}})
      expect(pulled.exitCode, pulled.stderr).toBe(0)
      expect((JSON.parse(pulled.stdout) as {digest: string}).digest).toBe(guest!.digest)

      const run = await runCli(['run', 'hello', '--guest', remote, '--', 'busybox', 'uname', '-r'], {
        env: {AEGIS_KIT_HOME: elsewhere},
        timeout: 180_000,
      })
      expect(run.exitCode, run.all).toBe(0)
      expect(run.stdout).toContain(`hello | ${guest!.kernelRelease}`)
      expect(run.stderr).not.toMatch(/assembling/)
      expect(await storedGuest(elsewhere)).toBeUndefined() // only the pulled reference, nothing assembled
    } finally {
      await registry.stop()
    }
  }, 400_000)
})
