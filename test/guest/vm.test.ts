/**
 * Real microVMs under TCG: the guest as `run` gets it (assembled from Debian's packages into a
 * store), then boots of a tiny root (static busybox plus a glibc program). Needs: apt-get install
 * qemu-system-x86 busybox-static gcc libc6-dev e2fsprogs, and apt lists (apt-get update). One VM at a time.
 */

import {execFileSync, spawn, spawnSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import type {StoredGuest} from '../../src/guest/guest-store.js'
import {userNetwork} from '../../src/guest/network.js'
import {runVm, startVm, type VmOptions} from '../../src/guest/qemu.js'
import {buildTestRoot, cpuTimeMs, hostGuest, freePort, processesMentioning, snapshotTree, waitFor} from './helpers.js'

const repoRoot = path.resolve(import.meta.dirname, '../..')
const scratch = mkdtempSync(path.join(os.tmpdir(), 'aegis-vm-test-'))
/** On every QEMU command line of this file, to find leftover processes. */
const marker = `aegis.test=${randomBytes(6).toString('hex')}`
const rootDir = path.join(scratch, 'root')
let guest: StoredGuest

function vmOptions(options: Partial<VmOptions> & Pick<VmOptions, 'spec'>): VmOptions {
  return {kernel: guest.kernel, initrd: guest.initrd, rootDir, memoryMib: 256, extraKernelArgs: [marker], ...options}
}

beforeAll(async () => {
  const started = Date.now()
  guest = await hostGuest()
  console.log(`guest resolved (assembled and stored the first time) in ${Date.now() - started} ms: ${guest.version}`)
  buildTestRoot(rootDir)
})

afterEach(() => {
  expect(processesMentioning(marker)).toEqual([])
  expect(processesMentioning(scratch)).toEqual([])
})

afterAll(() => rmSync(scratch, {recursive: true, force: true}))

describe('guest VM', {timeout: 120_000}, () => {
  it('runs a glibc and a busybox program, reports the exit code, never touches the host root', async () => {
    const before = snapshotTree(rootDir)
    const result = await runVm(
      vmOptions({
        spec: {
          // `env` is glibc's, found on PATH in /usr/bin; `sh` is busybox's, in /bin.
          command: [
            'env',
            'GREETING=hi',
            'sh',
            '-c',
            'echo "$GREETING from $FOO"; rm /bin/true; echo changed > /www/index.html; mkdir /newdir; exit 7',
          ],
          env: {FOO: 'the image'},
        },
      }),
    )
    console.log(
      `boot to exit: ${result.timings.exitedMs} ms (harness ready ${result.timings.readyMs} ms, workload started ${result.timings.startedMs} ms)`,
    )
    expect(result.console).toContain('hi from the image')
    expect(result).toMatchObject({exitCode: 7, oomKilled: false, killedByHost: false})
    expect(snapshotTree(rootDir)).toEqual(before)
  })

  it('boots a root given as a read-only ext4 disk', async () => {
    const disk = path.join(scratch, 'root.ext4')
    execFileSync('mke2fs', ['-q', '-t', 'ext4', '-d', rootDir, disk, '64M'])
    const result = await runVm({
      ...vmOptions({spec: {command: ['sh', '-c', 'echo from-disk > /tmp/x; touch /new; cat /tmp/x; exit 3']}}),
      rootDir: undefined,
      rootDisk: disk,
    })
    expect(result.console).toContain('from-disk')
    expect(result.exitCode).toBe(3)
  })

  it('limits the writable layer to writableLayer.bytes, and leaves no disk file behind', async () => {
    // With a virtiofs root the layer's disk is the VM's only one (vda, not vdb): the harness finds it by its serial.
    const layerDir = mkdtempSync(path.join(scratch, 'layer-'))
    // A disk whose process died during a boot goes; one of a live process stays.
    const abandoned = `rw-${spawnSync('true').pid}-killed.ext4`
    const live = `rw-${process.pid}-booting.ext4`
    for (const name of [abandoned, live]) writeFileSync(path.join(layerDir, name), '')
    const script = 'dd if=/dev/zero of=/big bs=1M count=100; echo "dd-rc=$?"; rm /big && echo rm-ok'
    const result = await runVm(
      vmOptions({writableLayer: {bytes: 32 * 1024 ** 2, dir: layerDir}, spec: {command: ['sh', '-c', script]}}),
    )
    // 100 MiB fit in this VM's 256 MiB of memory: only a 32 MiB disk makes dd fail.
    expect(result.console).toMatch(/No space left on device/)
    expect(result.console).toContain('dd-rc=1')
    expect(result.console).toContain('rm-ok')
    expect(result.exitCode).toBe(0)
    expect(readdirSync(layerDir)).toEqual([live])
  })

  it('says plainly when the command does not exist', async () => {
    const result = await runVm(vmOptions({spec: {command: ['no-such-program']}}))
    expect(result.exitCode).toBe(127)
    expect(result.harnessError).toMatch(/no-such-program: No such file or directory/)
  })

  it('gives secrets to the workload only, as its user, and shares the workspace', async () => {
    const secret = `sk-test-${randomBytes(12).toString('hex')}`
    const workspaceDir = mkdtempSync(path.join(scratch, 'workspace-'))
    const script = [
      'set -e',
      'echo "user=$(id -u):$(id -g) pwd=$(pwd)"',
      'stat -c "secret-file %a %u:%g" /run/secrets/API_TOKEN',
      '[ "$(cat /run/secrets/API_TOKEN)" = "$API_TOKEN" ] && echo secret-env-matches-file',
      'echo "cmdline: $(cat /proc/cmdline)"',
      'echo "written by $(id -u)" > /workspace/from-guest.txt',
    ].join('\n')
    const result = await runVm(
      vmOptions({
        workspaceDir,
        spec: {
          command: ['/bin/sh', '-c', script],
          secrets: {API_TOKEN: secret},
          user: {uid: 1000, gid: 1000},
          workdir: '/workspace',
        },
      }),
    )
    expect(result.exitCode, result.console).toBe(0)
    expect(result.console).toContain('user=1000:1000 pwd=/workspace')
    expect(result.console).toContain('secret-file 400 1000:1000')
    expect(result.console).toContain('secret-env-matches-file')
    expect(result.console).toMatch(/cmdline: .*console=ttyS0/)
    expect(result.console).not.toContain(secret)
    expect(readFileSync(path.join(workspaceDir, 'from-guest.txt'), 'utf8')).toBe('written by 1000\n')
  })

  it('relays a forwarded port to an app bound to 127.0.0.1, and stops it with SIGTERM', async () => {
    const hostPort = await freePort()
    const vm = await startVm(
      vmOptions({
        network: userNetwork({forwards: [{hostPort, guestPort: 8080}]}),
        spec: {command: ['httpd', '-f', '-p', '127.0.0.1:8080', '-h', '/www'], ports: [8080]},
      }),
    )
    const started = Date.now()
    const body = await waitFor(
      'the guest HTTP server',
      async () => {
        try {
          const response = await fetch(`http://127.0.0.1:${hostPort}/`, {signal: AbortSignal.timeout(2000)})
          return await response.text()
        } catch {
          return undefined
        }
      },
      60_000,
    )
    console.log(`first HTTP answer ${Date.now() - started} ms after startVm returned`)
    expect(body).toBe('hello-from-guest\n')
    const upload = randomBytes(200 * 1024) // well past the ~32 KB that broke libkrun's TSI
    const echoed = await fetch(`http://127.0.0.1:${hostPort}/cgi-bin/echo`, {
      method: 'POST',
      body: upload,
      signal: AbortSignal.timeout(30_000),
    })
    expect(echoed.status).toBe(200)
    expect(Buffer.from(await echoed.arrayBuffer()).equals(upload)).toBe(true)
    const result = await vm.stop(30_000)
    expect(result).toMatchObject({exitCode: 143, killedByHost: false})
  })

  it('pauses (QMP stop: no answer, no CPU), resumes, and stops a paused VM', async () => {
    const hostPort = await freePort()
    const vm = await startVm(
      vmOptions({
        network: userNetwork({forwards: [{hostPort, guestPort: 8080}]}),
        spec: {command: ['httpd', '-f', '-p', '8080', '-h', '/www'], ports: []},
      }),
    )
    const get = async (timeoutMs: number) => {
      try {
        const response = await fetch(`http://127.0.0.1:${hostPort}/`, {signal: AbortSignal.timeout(timeoutMs)})
        return await response.text()
      } catch {
        return undefined
      }
    }
    expect(await waitFor('the guest HTTP server', () => get(2000), 60_000)).toBe('hello-from-guest\n')
    expect(await vm.status()).toMatchObject({status: 'running', running: true})
    await vm.pause()
    expect(await vm.status()).toMatchObject({status: 'paused', running: false})
    const [qemu] = processesMentioning(marker)
    const cpuBefore = cpuTimeMs(qemu!)
    expect(await get(3000)).toBeUndefined()
    const pausedCpuMs = cpuTimeMs(qemu!) - cpuBefore
    console.log(`QEMU used ${pausedCpuMs} ms of CPU in 3 s paused`)
    // Stopped vCPUs run no guest code; the margin is for QEMU's own main loop.
    expect(pausedCpuMs).toBeLessThan(100)
    await vm.resume()
    expect(await vm.status()).toMatchObject({running: true})
    expect(await waitFor('the resumed guest', () => get(5000), 30_000)).toBe('hello-from-guest\n')
    await vm.pause()
    const result = await vm.stop(30_000)
    expect(result).toMatchObject({exitCode: 143, killedByHost: false})
  })

  it('reports an out-of-memory kill plainly', async () => {
    const result = await runVm(
      vmOptions({
        memoryMib: 160,
        spec: {command: ['sh', '-c', 'x=0123456789abcdef; while true; do x="$x$x"; done']},
      }),
    )
    expect(result).toMatchObject({exitCode: 137, oomKilled: true})
    expect(result.console).toMatch(/killed by the kernel's OOM killer/)
  })

  it('leaves no QEMU or virtiofsd behind when the process that started them is SIGKILLed', async () => {
    // The child needs plain JavaScript: compile the guest module once into the scratch dir.
    const outDir = path.join(scratch, 'compiled')
    execFileSync(
      path.join(repoRoot, 'node_modules/.bin/tsc'),
      [
        '--outDir',
        outDir,
        '--rootDir',
        path.join(repoRoot, 'src'),
        '--module',
        'NodeNext',
        '--moduleResolution',
        'NodeNext',
        '--target',
        'ES2022',
        '--skipLibCheck',
        path.join(repoRoot, 'src/guest/qemu.ts'),
      ],
      {cwd: repoRoot},
    )
    const childMarker = `aegis.test=${randomBytes(6).toString('hex')}`
    const childRoot = path.join(scratch, 'child-root')
    mkdirSync(childRoot)
    buildTestRoot(childRoot)
    const script = path.join(scratch, 'child.mjs')
    writeFileSync(
      script,
      `
      import {startVm} from ${JSON.stringify(path.join(outDir, 'guest/qemu.js'))}
      await startVm({kernel: ${JSON.stringify(guest.kernel)}, initrd: ${JSON.stringify(guest.initrd)}, rootDir: ${JSON.stringify(childRoot)},
        memoryMib: 256, extraKernelArgs: [${JSON.stringify(childMarker)}], spec: {command: ['sleep', '600']},
        onConsole: (text) => process.stdout.write(text)})
    `,
    )
    const child = spawn(process.execPath, [script], {stdio: ['ignore', 'pipe', 'inherit']})
    let output = ''
    child.stdout.setEncoding('utf8').on('data', (text: string) => {
      output += text
    })
    try {
      await waitFor('the workload to start', () => (output.includes('AEGIS_STARTED') ? true : undefined), 60_000)
      expect(processesMentioning(childMarker).length).toBe(1) // qemu
      expect(processesMentioning(childRoot).length).toBe(1) // virtiofsd for the root
      child.kill('SIGKILL')
      await waitFor(
        'QEMU and virtiofsd to go',
        () =>
          processesMentioning(childMarker).length + processesMentioning(childRoot).length === 0 ? true : undefined,
        15_000,
      )
    } finally {
      child.kill('SIGKILL')
      for (const pid of [...processesMentioning(childMarker), ...processesMentioning(childRoot)])
        process.kill(pid, 'SIGKILL')
    }
  })
})
