#!/usr/bin/env node
/**
 * Run benchmark, in one run on this machine (QEMU under TCG here: no usable KVM):
 *  1. boot-to-healthy for hello and OpenClaw (`aegis-kit run KIT --expose`, images already built);
 *  2. time from `aegis-kit run` to the guest kernel's first console line, against a bare QEMU
 *     command booting the same kernel and initramfs (the runner's overhead; target <= 1.1x);
 *  3. host memory of each instance: RSS of qemu + gvproxy + virtiofsd once healthy;
 *  4. the floor of 2 for any Node.js CLI: `node -e 0` and `aegis-kit --version` added to bare QEMU.
 *
 *   npm run build && node bench/run/run.mjs [--skip-openclaw] [--runs=N]
 * Uses AEGIS_KIT_HOME (default: a temporary one, built first).
 */
import {execFileSync, spawn} from 'node:child_process'
import {mkdtempSync, readdirSync, readFileSync} from 'node:fs'
import {createServer} from 'node:net'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const bin = join(repo, 'bin/run.js')
const home = process.env.AEGIS_KIT_HOME ?? mkdtempSync(join(tmpdir(), 'aegis-bench-run-'))
const env = {...process.env, AEGIS_KIT_HOME: home}
const kits = process.argv.includes('--skip-openclaw') ? ['hello'] : ['hello', 'openclaw']
const runs = Number(process.argv.find((arg) => arg.startsWith('--runs='))?.slice('--runs='.length) ?? 3)
const guestPort = {hello: 8080, openclaw: 18789}

const freePort = () =>
  new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const {port} = server.address()
      server.close(() => resolve(port))
    })
  })

function descendants(pid) {
  const parents = new Map()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]))
    } catch {}
  }
  const found = []
  const queue = [pid]
  while (queue.length) {
    const parent = queue.shift()
    for (const [child, ppid] of parents)
      if (ppid === parent && !found.includes(child)) found.push(child), queue.push(child)
  }
  return found
}

function rssOf(pids) {
  const byName = {}
  for (const pid of pids) {
    try {
      const status = readFileSync(`/proc/${pid}/status`, 'utf8')
      const name = /^Name:\s+(.*)$/m.exec(status)[1]
      const kb = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0)
      const key = name.startsWith('qemu')
        ? 'qemu'
        : name.includes('virtiofsd')
          ? 'virtiofsd'
          : name.includes('gvproxy')
            ? 'gvproxy'
            : null
      if (key) byName[key] = (byName[key] ?? 0) + kb / 1024
    } catch {}
  }
  return byName
}

/** Starts `aegis-kit run`, returns when `pattern` shows up: ms since spawn, and the child. */
function runUntil(args, pattern, timeoutMs) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint()
    const child = spawn(process.execPath, [bin, 'run', ...args], {env, stdio: ['ignore', 'pipe', 'pipe']})
    let text = ''
    const timer = setTimeout(
      () => reject(new Error(`timeout waiting for ${pattern}:\n${text.slice(-2000)}`)),
      timeoutMs,
    )
    const onData = (chunk) => {
      text += chunk
      if (pattern.test(text)) {
        clearTimeout(timer)
        resolve({ms: Number(process.hrtime.bigint() - started) / 1e6, child, text})
      }
    }
    child.stdout.on('data', onData)
    child.stderr.on('data', onData)
    child.on('exit', () => reject(new Error(`aegis-kit run exited:\n${text.slice(-2000)}`)))
  })
}

const stop = (child) =>
  new Promise((resolve) => {
    child.removeAllListeners('exit')
    child.on('exit', resolve)
    child.kill('SIGINT')
  })

console.log(`load: ${readFileSync('/proc/loadavg', 'utf8').trim()}`)
for (const kit of kits) execFileSync(process.execPath, [bin, 'build', kit], {env, stdio: 'ignore'})

// 1 + 3: boot to healthy, and memory.
for (const kit of kits) {
  const port = await freePort()
  const {ms, child, text} = await runUntil([kit, '--expose', `${port}:${guestPort[kit]}`], /is healthy after/, 900_000)
  // run names the accelerator it chose (KVM when a test boot works, else TCG) as it boots.
  console.log(`${kit}: accelerator ${/vCPU, (KVM|TCG),/.exec(text)?.[1] ?? 'not reported'}`)
  const memory = rssOf(descendants(child.pid))
  const total = Object.values(memory).reduce((a, b) => a + b, 0)
  console.log(
    `${kit}: aegis-kit run to healthy ${(ms / 1000).toFixed(1)} s; host memory ${total.toFixed(0)} MB (${Object.entries(
      memory,
    )
      .map(([k, v]) => `${k} ${v.toFixed(0)} MB`)
      .join(', ')})`,
  )
  await stop(child)
}

// 2: to the guest kernel's first line, ours against bare QEMU on the same kernel and initramfs.
// The first kernel console line marks "kernel started" for both; the guest kernel is quiet, so
// bare QEMU gets the same kernel, initramfs and command line as ours (read from the running qemu).
const firstKernelLine = /\[\s*\d+\.\d+\] /
const ours = []
const bare = []
let kernel, initrd, append, accel, cpu
for (let i = 0; i < runs; i++) {
  const {ms, child} = await runUntil(['hello', '--debug', '--', 'busybox', 'sleep', '30'], firstKernelLine, 120_000)
  ours.push(ms)
  if (!append) {
    const qemuPid = descendants(child.pid).find(
      (pid) =>
        readFileSync(`/proc/${pid}/cmdline`, 'utf8').startsWith('qemu-system') ||
        readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('/qemu-system'),
    )
    const args = readFileSync(`/proc/${qemuPid}/cmdline`, 'utf8').split('\0')
    const arg = (flag) => args[args.indexOf(flag) + 1]
    ;[kernel, initrd, append, accel, cpu] = [arg('-kernel'), arg('-initrd'), arg('-append'), arg('-accel'), arg('-cpu')]
  }
  await stop(child)
  bare.push(
    await new Promise((resolve, reject) => {
      const started = process.hrtime.bigint()
      const qemu = spawn(
        'qemu-system-x86_64',
        [
          '-M',
          'microvm,acpi=on',
          '-accel',
          accel,
          '-cpu',
          cpu,
          '-m',
          '256M',
          '-smp',
          '1',
          '-nodefaults',
          '-no-user-config',
          '-nographic',
          '-serial',
          'stdio',
          '-kernel',
          kernel,
          '-initrd',
          initrd,
          '-append',
          append,
          '-no-reboot',
        ],
        {stdio: ['ignore', 'pipe', 'pipe']},
      )
      let text = ''
      qemu.stdout.on('data', (chunk) => {
        text += chunk
        if (firstKernelLine.test(text)) {
          resolve(Number(process.hrtime.bigint() - started) / 1e6)
          qemu.kill('SIGKILL')
        }
      })
      qemu.on('exit', () => reject(new Error(`bare qemu exited:\n${text.slice(-1000)}`)))
    }),
  )
}
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
console.log(
  `to the guest kernel's first line (median of ${runs}): aegis-kit run ${(median(ours) / 1000).toFixed(2)} s, bare qemu ${(median(bare) / 1000).toFixed(2)} s, ratio ${(median(ours) / median(bare)).toFixed(2)} (target <= 1.1)`,
)

// What no Node.js CLI can go under: the interpreter's own start, before the first line of ours
// runs, and our CLI's (`--version`: Node plus oclif). Added to bare QEMU, they give the ratio a
// runner would have if it spawned QEMU at its first instruction, or right after oclif is up.
const startOf = (args) => {
  const started = process.hrtime.bigint()
  execFileSync(process.execPath, args, {stdio: 'ignore'})
  return Number(process.hrtime.bigint() - started) / 1e6
}
const nodeStart = median(Array.from({length: 9}, () => startOf(['-e', '0'])))
const cliStart = median(Array.from({length: 9}, () => startOf([bin, '--version'])))
const floor = (ms) => ((ms + median(bare)) / median(bare)).toFixed(2)
console.log(
  `floor: node -e 0 ${(nodeStart / 1000).toFixed(3)} s (ratio ${floor(nodeStart)} with nothing else), aegis-kit --version ${(cliStart / 1000).toFixed(3)} s (ratio ${floor(cliStart)})`,
)
