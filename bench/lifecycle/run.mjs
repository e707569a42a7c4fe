#!/usr/bin/env node
/**
 * Lifecycle benchmark (issue 13), measured in one run on this machine, nothing asserted:
 *  a. exec: median of N `aegis-kit exec NAME -- busybox true` against `podman exec CONTAINER busybox true` (hello has no /bin/true) on the
 *     same hello image (exported with `aegis-kit images export`, `podman load`, run with crun),
 *     and against `crun exec` on the same image unpacked by umoci (crun without podman: also the
 *     peer that still runs where podman's container start is refused);
 *  b. wake: time to the first response byte from a paused hello instance minus from a running one;
 *  c. relay: a 200 MB download through the exposed port (the supervisor's relay, then gvproxy)
 *     against the same file read straight from gvproxy's forward socket (port-8080.sock, the
 *     relay's upstream: the peer is gvproxy's own forward without the relay in front); the file
 *     is written on the host into the instance's workspace and served by busybox httpd from
 *     /workspace (the guest's own /tmp is too small for it);
 *  d. host CPU (utime+stime of the supervisor and its descendants) of a paused instance over 30 s.
 *
 *   npm run build && node bench/lifecycle/run.mjs [--runs=N]
 * Uses AEGIS_KIT_HOME (default: a temporary one, hello built first).
 */
import {execFileSync, spawnSync} from 'node:child_process'
import {randomBytes} from 'node:crypto'
import {mkdirSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync} from 'node:fs'
import http from 'node:http'
import {createServer} from 'node:net'
import {loadavg, tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const bin = join(repo, 'bin/run.js')
const home = process.env.AEGIS_KIT_HOME ?? mkdtempSync(join(tmpdir(), 'aegis-bench-life-'))
const env = {...process.env, AEGIS_KIT_HOME: home}
const runs = Number(process.argv.find((arg) => arg.startsWith('--runs='))?.slice('--runs='.length) ?? 10)
const loads = [loadavg()[0]]

const cli = (args, options = {}) =>
  execFileSync(process.execPath, [bin, ...args], {env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], ...options})
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}
const freePort = () =>
  new Promise((resolve) => {
    const server = createServer().listen(0, '127.0.0.1', () => {
      const {port} = server.address()
      server.close(() => resolve(port))
    })
  })
const timed = (fn) => {
  const started = process.hrtime.bigint()
  fn()
  return Number(process.hrtime.bigint() - started) / 1e6
}

function descendants(pid) {
  const children = new Map()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      children.set(parent, [...(children.get(parent) ?? []), Number(entry)])
    } catch {}
  }
  const found = [pid]
  for (let i = 0; i < found.length; i++) found.push(...(children.get(found[i]) ?? []))
  return found
}
/** utime + stime in clock ticks (100 Hz) of the processes alive now. */
function cpuTicks(pids) {
  let ticks = 0
  for (const pid of pids) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      ticks += Number(fields[11]) + Number(fields[12])
    } catch {}
  }
  return ticks
}
const supervisorOf = (name) => JSON.parse(cli(['ps', '--json'])).instances.find((entry) => entry.name === name).pid

/** Time to the first response byte of GET / from 127.0.0.1:port, or from a unix socket. */
function firstByte(target, path = '/') {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint()
    const request = http.get({...target, path, agent: false}, (response) => {
      response.once('data', () => {
        resolve(Number(process.hrtime.bigint() - started) / 1e6)
        response.destroy()
      })
    })
    request.once('error', reject)
  })
}
/** Downloads path; MB/s. */
function download(target, path) {
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint()
    let bytes = 0
    http
      .get({...target, path, agent: false}, (response) => {
        response.on('data', (chunk) => (bytes += chunk.length))
        response.on('end', () =>
          resolve({bytes, mbps: bytes / 1e6 / (Number(process.hrtime.bigint() - started) / 1e9)}),
        )
      })
      .once('error', reject)
  })
}

/**
 * `crun exec` timings on the exported hello image: unpacked into a bundle by umoci, started by
 * crun directly (no rlimits in its config: what podman adds is what this machine refuses).
 */
function crunExecTimes(archive, count) {
  const work = mkdtempSync(join(tmpdir(), 'aegis-bench-crun-'))
  const layout = join(work, 'layout')
  const bundle = join(work, 'bundle')
  const name = `aegis-bench-${process.pid}`
  try {
    mkdirSync(layout)
    execFileSync('tar', ['-xf', archive, '-C', layout])
    const index = JSON.parse(readFileSync(join(layout, 'index.json'), 'utf8'))
    const tag = index.manifests.find((entry) => entry.annotations?.['org.opencontainers.image.ref.name'])
    const ref = tag ? tag.annotations['org.opencontainers.image.ref.name'] : undefined
    if (!ref) throw new Error('the exported archive names no tag for umoci')
    execFileSync('umoci', ['unpack', '--image', `${layout}:${ref}`, bundle], {stdio: ['ignore', 'pipe', 'pipe']})
    const configFile = join(bundle, 'config.json')
    const config = JSON.parse(readFileSync(configFile, 'utf8'))
    config.process.args = ['busybox', 'sleep', '100000']
    config.process.terminal = false
    delete config.process.rlimits
    writeFileSync(configFile, JSON.stringify(config))
    execFileSync('crun', ['run', '--detach', '--bundle', bundle, name], {stdio: ['ignore', 'pipe', 'pipe']})
    try {
      const times = []
      for (let i = 0; i < count; i++)
        times.push(timed(() => execFileSync('crun', ['exec', name, 'busybox', 'true'], {stdio: 'ignore'})))
      return times
    } finally {
      spawnSync('crun', ['delete', '--force', name], {stdio: 'ignore'})
    }
  } finally {
    rmSync(work, {recursive: true, force: true})
  }
}

console.log(`lifecycle bench, ${runs} runs, AEGIS_KIT_HOME=${home}`)
cli(['build', 'hello'], {timeout: 600_000})
const port = await freePort()
cli(['run', 'hello', '--detach', '--name', 'lb', '--expose', `${port}:8080`], {timeout: 300_000})
try {
  // a. exec
  const ours = []
  for (let i = 0; i < runs; i++) ours.push(timed(() => cli(['exec', 'lb', '--', 'busybox', 'true'])))
  const version = readFileSync(join(repo, 'kits/hello/aegis-kit.yaml'), 'utf8').match(/^version:\s*["']?([^"'\s]+)/m)[1]
  const ref = `hello:${version}`
  const archive = join(home, 'hello.oci.tar')
  const theirs = []
  let podmanError
  try {
    cli(['images', 'export', ref, '-o', archive])
    const loaded = execFileSync('podman', ['load', '-i', archive], {encoding: 'utf8'})
    const image = loaded.match(/Loaded image(?:\(s\))?: (\S+)/)?.[1] ?? loaded.trim().split(/\s+/).at(-1)
    // This machine's own limits are passed explicitly: podman's defaults (RLIMIT_NOFILE 1048576) are
    // refused here (crun: setrlimit: Operation not permitted).
    const container = execFileSync(
      'podman',
      ['run', '-d', '--runtime', 'crun', '--ulimit', 'host', '--network', 'none', image, 'busybox', 'sleep', '100000'],
      {encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe']},
    ).trim()
    try {
      for (let i = 0; i < runs; i++)
        theirs.push(timed(() => execFileSync('podman', ['exec', container, 'busybox', 'true'], {stdio: 'ignore'})))
    } finally {
      spawnSync('podman', ['rm', '-f', container], {stdio: 'ignore'})
    }
  } catch (error) {
    podmanError = String(error.stderr ?? error.message)
      .trim()
      .split('\n')
      .at(-1)
  }
  console.log(
    theirs.length > 0
      ? `exec: aegis-kit ${median(ours).toFixed(0)} ms, podman+crun ${median(theirs).toFixed(0)} ms, ratio ${(median(ours) / median(theirs)).toFixed(2)}`
      : `exec: aegis-kit ${median(ours).toFixed(0)} ms; podman+crun could not run here: ${podmanError}`,
  )
  const crunTimes = []
  let crunError
  try {
    crunTimes.push(...crunExecTimes(archive, runs))
  } catch (error) {
    crunError = String(error.stderr ?? error.message)
      .trim()
      .split('\n')
      .at(-1)
  }
  console.log(
    crunTimes.length > 0
      ? `exec: aegis-kit ${median(ours).toFixed(0)} ms, crun exec ${median(crunTimes).toFixed(0)} ms, ratio ${(median(ours) / median(crunTimes)).toFixed(2)}`
      : `exec: crun exec could not run here: ${crunError}`,
  )
  loads.push(loadavg()[0])

  // b. wake
  const target = {host: '127.0.0.1', port}
  const running = []
  const woken = []
  for (let i = 0; i < runs; i++) {
    running.push(await firstByte(target))
    cli(['pause', 'lb'])
    woken.push(await firstByte(target))
  }
  console.log(
    `wake: running ${median(running).toFixed(1)} ms, paused ${median(woken).toFixed(1)} ms, wake cost ${(median(woken) - median(running)).toFixed(1)} ms`,
  )
  loads.push(loadavg()[0])

  // d. paused CPU
  cli(['pause', 'lb'])
  const supervisor = supervisorOf('lb')
  const pids = descendants(supervisor)
  const before = cpuTicks(pids)
  await new Promise((resolve) => setTimeout(resolve, 30_000))
  const used = (cpuTicks(pids) - before) / 100
  console.log(
    `paused CPU: ${used.toFixed(2)} s over 30 s (${((used / 30) * 100).toFixed(2)} % of a core), ${pids.length} processes`,
  )
  loads.push(loadavg()[0])
} finally {
  spawnSync(process.execPath, [bin, 'stop', 'lb'], {env, stdio: 'ignore'})
}

// c. relay
const bigPort = await freePort()
const bigWorkspace = mkdtempSync(join(tmpdir(), 'aegis-bench-relay-'))
// Random bytes: nothing on the way can shortcut zeros.
writeFileSync(join(bigWorkspace, 'big'), randomBytes(200 * 1024 * 1024))
writeFileSync(join(bigWorkspace, 'index.html'), 'for the healthcheck\n')
cli(
  [
    'run',
    'hello',
    '--detach',
    '--name',
    'lbig',
    '--workspace',
    bigWorkspace,
    '--expose',
    `${bigPort}:8080`,
    '--',
    'busybox',
    'httpd',
    '-f',
    '-p',
    '8080',
    '-h',
    '/workspace',
  ],
  {timeout: 300_000},
)
try {
  const supervisor = supervisorOf('lbig')
  // gvproxy's forward socket for guest port 8080: the listening unix socket among its descendants' fds.
  const inodes = new Set()
  for (const pid of descendants(supervisor)) {
    try {
      for (const fd of readdirSync(`/proc/${pid}/fd`)) {
        const link = readlinkSync(`/proc/${pid}/fd/${fd}`)
        if (link.startsWith('socket:[')) inodes.add(link.slice(8, -1))
      }
    } catch {}
  }
  const socketPath = readFileSync('/proc/net/unix', 'utf8')
    .split('\n')
    .map((line) => line.trim().split(/\s+/))
    .find((fields) => fields[7]?.endsWith('port-8080.sock') && inodes.has(fields[6]))?.[7]
  const relayed = []
  const direct = []
  const whole = (result) => {
    if (result.bytes !== 200 * 1024 * 1024) throw new Error(`a download returned ${result.bytes} bytes, not 200 MiB`)
    return result.mbps
  }
  for (let i = 0; i < Math.min(runs, 3); i++) {
    relayed.push(whole(await download({host: '127.0.0.1', port: bigPort}, '/big')))
    if (socketPath) direct.push(whole(await download({socketPath}, '/big')))
  }
  console.log(
    `relay: exposed port ${median(relayed).toFixed(1)} MB/s, gvproxy forward socket ${socketPath ? `${median(direct).toFixed(1)} MB/s, ratio ${(median(relayed) / median(direct)).toFixed(2)}` : 'not found'}`,
  )
} finally {
  spawnSync(process.execPath, [bin, 'stop', 'lbig'], {env, stdio: 'ignore'})
  rmSync(bigWorkspace, {recursive: true, force: true})
}
loads.push(loadavg()[0])
console.log(`load average (1 min) during the run: ${loads.map((load) => load.toFixed(1)).join(', ')}`)
