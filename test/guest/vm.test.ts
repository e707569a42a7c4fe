/**
 * Real microVMs under TCG: the guest as `run` gets it (assembled from Debian's packages into a
 * store), then boots of a tiny root (static busybox plus a glibc program). Needs: apt-get install
 * qemu-system-x86 busybox-static gcc libc6-dev e2fsprogs, and apt lists (apt-get update). One VM at a time.
 */

import {execFileSync, spawn, spawnSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import http from 'node:http'
import net from 'node:net'
import {mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import {afterAll, afterEach, beforeAll, describe, expect, it} from 'vitest'

import type {HeartbeatSample} from '../../src/guest/control-channel.js'
import type {StoredGuest} from '../../src/guest/guest-store.js'
import {userNetwork} from '../../src/guest/network.js'
import {runVm, startVm, type RunningVm, type VmOptions} from '../../src/guest/qemu.js'
import {
  buildTestRoot,
  cpuTimeMs,
  hostGuest,
  freePort,
  processesMentioning,
  snapshotTree,
  compileForChild,
} from './helpers.js'
import {waitFor} from '../helpers/wait.js'

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
    // 60 s of grace: under TCG, with the suite's other VMs on the same 2 cores, the guest's power
    // off after the workload's exit once took longer than 30 s (CI on 5806c22).
    const result = await vm.stop(60_000)
    expect(result).toMatchObject({exitCode: 143, killedByHost: false})
  })

  it('pauses (QMP stop: no answer, no CPU), resumes, and stops a paused VM', async () => {
    const hostPort = await freePort()
    const vm = await startVm(
      vmOptions({
        network: userNetwork({forwards: [{hostPort, guestPort: 8080}]}),
        // One sample at the start, then none for 10 minutes: only resume() asks for another.
        spec: {command: ['httpd', '-f', '-p', '8080', '-h', '/www'], ports: [], heartbeatMs: 600_000},
      }),
    )
    const samples: number[] = []
    vm.onHeartbeat((sample) => samples.push(sample.atMs))
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
    const beforeResume = samples.length
    await vm.resume()
    expect(await vm.status()).toMatchObject({running: true})
    await waitFor('a heartbeat after the resume', () => samples.length > beforeResume, 10_000)
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
    compileForChild(outDir, ['src/guest/qemu.ts'])
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
      await waitFor('the workload to start', () => output.includes('AEGIS_STARTED'), 60_000)
      expect(processesMentioning(childMarker).length).toBe(1) // qemu
      expect(processesMentioning(childRoot).length).toBe(1) // virtiofsd for the root
      child.kill('SIGKILL')
      await waitFor(
        'QEMU and virtiofsd to go',
        () => processesMentioning(childMarker).length + processesMentioning(childRoot).length === 0,
        15_000,
      )
    } finally {
      child.kill('SIGKILL')
      for (const pid of [...processesMentioning(childMarker), ...processesMentioning(childRoot)])
        process.kill(pid, 'SIGKILL')
    }
  })
})

/** Everything an exec session printed, and how it ended. */
async function collect(
  session: ReturnType<RunningVm['exec']>,
): Promise<{stdout: string; stderr: string; exitCode: number}> {
  let stdout = ''
  let stderr = ''
  session.stdout.setEncoding('utf8').on('data', (text: string) => {
    stdout += text
  })
  session.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr += text
  })
  const {exitCode} = await session.exit
  return {stdout, stderr, exitCode}
}

/**
 * The control channel against one long-lived VM (a TCG boot per test would cost more than the
 * tests): its workload is busybox httpd as user 1000 with a secret, heartbeats every 500 ms.
 * The VM has its own marker and directory, so the file's per-test leftover check ignores it.
 */
describe('control channel', {timeout: 120_000}, () => {
  const channelScratch = mkdtempSync(path.join(os.tmpdir(), 'aegis-vm-channel-'))
  const channelMarker = `aegis.test=${randomBytes(6).toString('hex')}`
  const secret = `sk-exec-${randomBytes(12).toString('hex')}`
  const samples: HeartbeatSample[] = []
  let vm: RunningVm
  let hostPort: number
  let consoleText = ''

  beforeAll(async () => {
    const channelRoot = path.join(channelScratch, 'root')
    buildTestRoot(channelRoot)
    symlinkSync('busybox', path.join(channelRoot, 'bin/wget')) // gvproxy.test.ts adds its own: not in buildTestRoot
    hostPort = await freePort()
    vm = await startVm({
      ...vmOptions({
        network: userNetwork({forwards: [{hostPort, guestPort: 8080}]}),
        spec: {
          command: ['httpd', '-f', '-p', '8080', '-h', '/www'],
          env: {FOO: 'from-the-spec'},
          secrets: {API_TOKEN: secret},
          user: {uid: 1000, gid: 1000},
          workdir: '/www',
          heartbeatMs: 500,
        },
        onConsole: (text) => {
          consoleText += text
        },
      }),
      rootDir: channelRoot,
      extraKernelArgs: [channelMarker],
    })
    vm.onHeartbeat((sample) => samples.push(sample))
    await waitFor('the first heartbeat', () => samples.length > 0, 60_000)
  })

  afterAll(async () => {
    const result = await vm?.stop(30_000)
    expect(result).toMatchObject({exitCode: 143, killedByHost: false})
    expect(consoleText).not.toContain(secret)
    expect(processesMentioning(channelMarker)).toEqual([])
    rmSync(channelScratch, {recursive: true, force: true})
  })

  it('execs a command: its stdout, its stderr and its exit code', async () => {
    const started = Date.now()
    const result = await collect(vm.exec({command: ['sh', '-c', 'echo to-stdout; echo to-stderr >&2; exit 5']}))
    console.log(`exec round trip: ${Date.now() - started} ms`)
    expect(result).toEqual({stdout: 'to-stdout\n', stderr: 'to-stderr\n', exitCode: 5})
    const missing = await collect(vm.exec({command: ['no-such-program']}))
    expect(missing.exitCode).toBe(127)
    expect(missing.stderr).toMatch(/no-such-program: No such file or directory/)
  })

  it("runs as the workload's user, in its workdir, with its environment and secrets plus the request's", async () => {
    const script = 'echo "$(id -u):$(id -g) $(pwd) $FOO $EXTRA token=$API_TOKEN"'
    const result = await collect(vm.exec({command: ['sh', '-c', script], env: {EXTRA: 'added'}}))
    expect(result.stdout).toBe(`1000:1000 /www from-the-spec added token=${secret}\n`)
    const asRoot = await collect(vm.exec({command: ['sh', '-c', 'id -u; pwd'], user: {uid: 0, gid: 0}, workdir: '/'}))
    expect(asRoot.stdout).toBe('0\n/\n')
  })

  it('feeds stdin, and passes its EOF', async () => {
    const session = vm.exec({command: ['sh', '-c', 'cat; echo after-eof']})
    const done = collect(session)
    const payload = randomBytes(300 * 1024).toString('hex') // past the window: credit must flow back
    session.stdin.end(payload)
    const result = await done
    expect(result.exitCode).toBe(0)
    expect(result.stdout).toBe(`${payload}after-eof\n`)
  })

  it('runs a command on a terminal, and the terminal takes a new size', async () => {
    const session = vm.exec({
      command: ['sh', '-c', 'test -t 0 && test -t 1 && echo on-a-tty; tty; stty size; read line; stty size'],
      tty: {rows: 24, cols: 80},
    })
    let output = ''
    session.stdout.setEncoding('utf8').on('data', (text: string) => {
      output += text
    })
    await waitFor('the first size', () => output.includes('24 80'), 30_000)
    session.resize(40, 120)
    session.stdin.write('\n')
    const {exitCode} = await session.exit
    expect(exitCode).toBe(0)
    expect(output).toContain('on-a-tty')
    expect(output).toMatch(/\/dev\/pts\/\d+/)
    expect(output).toMatch(/24 80\r?\n[\s\S]*40 120/)
  })

  it('ends a command with a signal, and kills what it started when the host closes the session', async () => {
    const sleeping = vm.exec({command: ['sleep', '600']})
    await new Promise((resolve) => setTimeout(resolve, 1000))
    sleeping.signal('TERM')
    expect(await sleeping.exit).toEqual({exitCode: 143})

    const tree = vm.exec({command: ['sh', '-c', 'sleep 601 & sleep 602']})
    const count = async () => (await collect(vm.exec({command: ['ps']}))).stdout.match(/sleep 60[12]/g)?.length ?? 0
    await waitFor('both sleeps', async () => (await count()) === 2, 30_000)
    tree.close()
    await expect(tree.exit).rejects.toThrow(/closed/)
    await waitFor('the tree to be killed', async () => (await count()) === 0, 30_000)
  })

  it('holds up only the session whose reader is slow', async () => {
    const size = 4 * 1024 * 1024
    const flood = vm.exec({command: ['head', '-c', String(size), '/dev/zero']})
    await new Promise((resolve) => setTimeout(resolve, 1500)) // nobody reads it: it fills its window and waits
    const quick = await collect(vm.exec({command: ['echo', 'not-blocked']}))
    expect(quick).toEqual({stdout: 'not-blocked\n', stderr: '', exitCode: 0})
    expect(flood.stdout.readableLength).toBeLessThanOrEqual(256 * 1024 + 64 * 1024)
    const started = Date.now()
    let received = 0
    flood.stdout.on('data', (chunk: Buffer) => {
      received += chunk.length
    })
    expect(await flood.exit).toEqual({exitCode: 0})
    const seconds = (Date.now() - started) / 1000
    console.log(
      `exec stdout: ${size} bytes in ${seconds.toFixed(2)} s (${(size / 1024 / 1024 / seconds).toFixed(1)} MiB/s)`,
    )
    expect(received).toBe(size)
  })

  it('runs two sessions at once, each with its own streams', async () => {
    const first = vm.exec({command: ['sh', '-c', 'read x; echo "first got $x"']})
    const second = vm.exec({command: ['sh', '-c', 'read x; echo "second got $x"']})
    const results = [collect(first), collect(second)]
    second.stdin.write('two\n') // the second is answered while the first still waits
    expect(await results[1]).toEqual({stdout: 'second got two\n', stderr: '', exitCode: 0})
    first.stdin.write('one\n')
    expect(await results[0]).toEqual({stdout: 'first got one\n', stderr: '', exitCode: 0})
  })

  it('sends heartbeats: TCP connections a host client holds, CPU a busy loop uses', async () => {
    const latest = () => samples.at(-1)!
    const sampleAfter = (atMs: number) =>
      waitFor('a heartbeat', () => samples.find((sample) => sample.atMs > atMs), 30_000)
    const idleStart = await sampleAfter(Date.now())
    await new Promise((resolve) => setTimeout(resolve, 3000))
    const idleEnd = await sampleAfter(Date.now())
    const idleCpu = idleEnd.cpuMs - idleStart.cpuMs
    const baseline = idleEnd.tcpEstablished

    const client = net.connect(hostPort, '127.0.0.1')
    await new Promise((resolve) => client.once('connect', resolve))
    const connected = await waitFor(
      'the connection in a heartbeat',
      () => samples.find((sample) => sample.atMs > idleEnd.atMs && sample.tcpEstablished > baseline),
      30_000,
    )
    client.destroy()
    await waitFor(
      'the connection gone from a heartbeat',
      () => samples.find((sample) => sample.atMs > connected.atMs && sample.tcpEstablished === baseline),
      30_000,
    )

    const busy = vm.exec({command: ['sh', '-c', 'while :; do :; done']})
    const busyStart = await sampleAfter(Date.now())
    await new Promise((resolve) => setTimeout(resolve, 3000))
    const busyEnd = await sampleAfter(Date.now())
    busy.signal('KILL')
    expect((await busy.exit).exitCode).toBe(137)
    const busyCpu = busyEnd.cpuMs - busyStart.cpuMs
    const seconds = (busyEnd.atMs - busyStart.atMs) / 1000
    console.log(
      `heartbeats: ${baseline} established idle, ${connected.tcpEstablished} with a client; cpu ${idleCpu} ms idle in ${((idleEnd.atMs - idleStart.atMs) / 1000).toFixed(1)} s, ${busyCpu} ms busy in ${seconds.toFixed(1)} s; net ${latest().netBytes} bytes`,
    )
    expect(busyCpu).toBeGreaterThan(seconds * 300) // one of two vCPUs spinning, slowed by a loaded host
    expect(busyCpu).toBeGreaterThan(idleCpu * 3)
    expect(latest().netBytes).toBeGreaterThan(0)
  })

  it('answers a request from inside the guest to 127.0.0.1:7777 with a host handler', async () => {
    const requests: string[] = []
    const server = http.createServer((request, response) => {
      let body = ''
      request.setEncoding('utf8').on('data', (text: string) => {
        body += text
      })
      request.on('end', () => {
        requests.push(`${request.method} ${request.url} ${body}`)
        response.setHeader('content-type', 'application/json')
        response.end(JSON.stringify({lease: 'granted', ttl_ms: JSON.parse(body).ttl_ms}))
      })
    })
    vm.onTunnel((stream) => server.emit('connection', stream))
    // Held open while the handler is slow: no heartbeat counts the tunnel's connection.
    const slow = http.createServer((_request, response) => {
      setTimeout(() => response.end('slow-answer'), 2500)
    })
    vm.onTunnel((stream) => slow.emit('connection', stream))
    const held = collect(vm.exec({command: ['wget', '-q', '-O', '-', 'http://127.0.0.1:7777/slow']}))
    const heldSince = Date.now()
    await new Promise((resolve) => setTimeout(resolve, 2000))
    const during = samples.filter((sample) => sample.atMs > heldSince + 500)
    expect(during.length).toBeGreaterThan(0)
    expect(during.every((sample) => sample.tcpEstablished === 0)).toBe(true)
    expect((await held).stdout).toBe('slow-answer')
    vm.onTunnel((stream) => server.emit('connection', stream))
    const result = await collect(
      vm.exec({
        command: [
          'wget',
          '-q',
          '-O',
          '-',
          '--post-data',
          '{"ttl_ms":60000}',
          'http://127.0.0.1:7777/v1/self/keepalive',
        ],
      }),
    )
    expect(result.exitCode, result.stderr).toBe(0)
    expect(JSON.parse(result.stdout)).toEqual({lease: 'granted', ttl_ms: 60000})
    expect(requests).toEqual(['POST /v1/self/keepalive {"ttl_ms":60000}'])
  })
})
