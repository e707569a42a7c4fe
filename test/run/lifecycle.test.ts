// Instances that sleep and wake (issue 13), with the hello kit in real QEMU microVMs under TCG:
// `pause` stops the vCPUs (QEMU's own monitor says so), a connection to the exposed port wakes the
// VM and is answered, a host lease wakes it and shows in `ps`, and every transition is in the log.
import {cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync} from 'node:fs'
import net from 'node:net'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {parse, stringify} from 'yaml'
import {QmpClient} from '../../src/guest/qmp.js'
import {hasStackTrace, repoRoot, runCli} from '../helpers/cli.js'
import {waitFor} from '../helpers/wait.js'
import {descendants, freePort, startRun} from './helpers.js'

let home: string
/** hello with a 5 s idle timeout and a profile per rule to test. */
let sleepyKit: string
/** The sleepy kit saying `networking.long_lived_connections: false`. */
let briefKit: string
const env = () => ({AEGIS_KIT_HOME: home})
const HTTPD = 'exec busybox httpd -f -p 8080 -h /srv/www'
const BUSY = `busybox sh -c 'while :; do :; done' & ${HTTPD}`
/** Serves 8081 too and exposes it on a host port through the guest API, before the healthchecked 8080. */
const SELF_EXPOSE =
  'busybox httpd -p 8081 -h /srv/www && busybox wget -q -O- --post-data \'{"port":8081}\' http://127.0.0.1:7777/v1/self/expose'
const GUEST_LEASE =
  'busybox wget -q -O- --header "content-type: application/json" --post-data \'{"ttl_ms":15000,"reason":"warming up"}\' http://127.0.0.1:7777/v1/self/keepalive'

beforeAll(async () => {
  home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-life-'))
  sleepyKit = path.join(home, 'sleepy-hello')
  cpSync(path.join(repoRoot, 'kits/hello'), sleepyKit, {recursive: true})
  const file = path.join(sleepyKit, 'aegis-kit.yaml')
  const manifest = parse(readFileSync(file, 'utf8')) as {profiles: Record<string, unknown>; policies?: unknown}
  const profile = (extra: Record<string, unknown>) => ({memory_mb: 256, exposes: [8080], ...extra})
  const command = (script: string) => ['busybox', 'sh', '-c', script]
  manifest.profiles.busy = profile({command: command(BUSY)})
  manifest.profiles.bot = profile({idle_policy: 'leases_only', command: command(BUSY)})
  manifest.profiles.steady = profile({always_on: true})
  manifest.profiles.leaser = profile({command: command(`${GUEST_LEASE}; ${HTTPD}`)})
  manifest.profiles.exposer = profile({command: command(`${SELF_EXPOSE}; ${HTTPD}`)})
  manifest.policies = {idle_timeout: '5s'}
  writeFileSync(file, stringify(manifest))
  const built = await runCli(['build', sleepyKit], {env: env()})
  expect(built.exitCode, built.stderr).toBe(0)
  briefKit = path.join(home, 'brief-hello')
  cpSync(sleepyKit, briefKit, {recursive: true})
  writeFileSync(
    path.join(briefKit, 'aegis-kit.yaml'),
    stringify({...manifest, networking: {long_lived_connections: false}}),
  )
}, 300_000)

afterAll(async () => {
  for (const name of [
    'sleepy',
    'window',
    'exposer',
    'idle',
    'busy',
    'held',
    'brief',
    'doomed',
    'bot',
    'steady',
    'leaser',
  ])
    await runCli(['stop', name], {env: env(), timeout: 60_000})
})

/** Starts the sleepy kit detached under `name` with `profile`; returns its host port and supervisor pid. */
async function startSleepy(
  name: string,
  profile: string,
  extra: string[] = [],
): Promise<{port: number; supervisor: number}> {
  const port = await freePort()
  const started = await runCli(
    ['run', sleepyKit, '--name', name, '--profile', profile, '--detach', '--expose', `${port}:8080`, ...extra],
    {env: env(), timeout: 180_000},
  )
  expect(started.exitCode, started.all).toBe(0)
  return {port, supervisor: (await listed(name))!.pid}
}

/** QEMU's status every 500 ms for `ms`: the first time it is `paused`, or undefined. */
async function pausedWithin(supervisor: number, ms: number): Promise<number | undefined> {
  const started = Date.now()
  while (Date.now() - started < ms) {
    if ((await qemuStatus(supervisor)) === 'paused') return Date.now() - started
    await new Promise((resolve) => setTimeout(resolve, 500))
  }
  return undefined
}

interface Listed {
  name: string
  status: string
  pid: number
  ports: Array<{hostPort: number; guestPort: number}>
  life?: string
  workspace?: string
  lifeNow?: {
    state: string
    boots: number
    restarts: number
    leases: Array<{id: string; holder: string; reason?: string; expiresInMs: number}>
  }
}

async function listed(name: string, all = false): Promise<Listed | undefined> {
  const result = await runCli(['ps', '--json', ...(all ? ['--all'] : [])], {env: env()})
  expect(result.exitCode, result.stderr).toBe(0)
  return (JSON.parse(result.stdout) as {instances: Listed[]}).instances.find((entry) => entry.name === name)
}

/** What QEMU's own monitor says, through the -qmp socket on the instance's QEMU command line. */
async function qemuStatus(supervisorPid: number): Promise<string> {
  for (const pid of descendants(supervisorPid)) {
    const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0')
    const qmp = argv[argv.indexOf('-qmp') + 1]
    if (!argv.includes('-qmp') || !qmp) continue
    return (await new QmpClient(qmp.replace(/^unix:/, '').replace(/,.*$/, '')).status()).status
  }
  throw new Error(`no QEMU with a -qmp socket under pid ${supervisorPid}`)
}

/** Polls `ps --json` until the instance's supervisor reports `state`; how long that took, or undefined. */
async function stateWithin(name: string, state: string, ms: number): Promise<number | undefined> {
  const started = Date.now()
  while (Date.now() - started < ms) {
    if ((await listed(name))?.lifeNow?.state === state) return Date.now() - started
    await new Promise((resolve) => setTimeout(resolve, 1000))
  }
  return undefined
}

/** The VM's processes (QEMU, gvproxy, virtiofsd) under the supervisor `pid`. */
function vmProcesses(pid: number): string[] {
  return descendants(pid).flatMap((child) => {
    try {
      const command = readFileSync(`/proc/${child}/cmdline`, 'utf8').split('\0')[0] ?? ''
      return /qemu-system|gvproxy|virtiofsd/.test(command) ? [`${child} ${command}`] : []
    } catch {
      return [] // gone meanwhile
    }
  })
}

async function get(port: number, timeoutMs: number): Promise<{status: number; ms: number} | undefined> {
  const started = Date.now()
  try {
    const response = await fetch(`http://127.0.0.1:${port}/`, {signal: AbortSignal.timeout(timeoutMs)})
    await response.text()
    return {status: response.status, ms: Date.now() - started}
  } catch {
    return undefined
  }
}

describe('instance lifecycle', () => {
  it('pause stops the vCPUs; a connection wakes the VM and is answered; a lease wakes it and is listed', async () => {
    const port = await freePort()
    const started = await runCli(['run', 'hello', '--name', 'sleepy', '--detach', '--expose', `${port}:8080`], {
      env: env(),
      timeout: 180_000,
    })
    expect(started.exitCode, started.all).toBe(0)
    const supervisor = (await listed('sleepy'))!.pid
    expect(await qemuStatus(supervisor)).toBe('running')

    const paused = await runCli(['pause', 'sleepy'], {env: env()})
    expect(paused.exitCode, paused.all).toBe(0)
    expect(paused.stdout).toBe('sleepy is paused')
    expect(await qemuStatus(supervisor)).toBe('paused')
    expect(await listed('sleepy')).toMatchObject({
      status: 'healthy',
      state: 'paused',
      life: 'paused',
      lifeNow: {state: 'paused'},
    })
    const table = await runCli(['ps'], {env: env()})
    expect(table.stdout).toMatch(/sleepy\s+hello\s+paused, detached/)

    // The relay holds the connection, resumes the VM, then forwards: answered on the first try.
    const woken = await get(port, 30_000)
    expect(woken?.status).toBe(200)
    console.log(`a request to the paused instance was answered in ${woken?.ms} ms`)
    expect(await qemuStatus(supervisor)).toBe('running')
    expect((await listed('sleepy'))?.lifeNow?.state).toBe('running')

    // A lease on a paused instance wakes it, and ps shows who holds it.
    expect((await runCli(['pause', 'sleepy'], {env: env()})).exitCode).toBe(0)
    const lease = await runCli(['keepalive', 'sleepy', '--ttl', '2m', '--reason', 'long import'], {env: env()})
    expect(lease.exitCode, lease.all).toBe(0)
    expect(await qemuStatus(supervisor)).toBe('running')
    const withLease = await listed('sleepy')
    expect(withLease?.lifeNow?.leases).toEqual([
      expect.objectContaining({id: 'host', holder: 'host', reason: 'long import'}),
    ])
    expect(withLease!.lifeNow!.leases[0]!.expiresInMs).toBeGreaterThan(100_000)
    expect((await runCli(['ps'], {env: env()})).stdout).toMatch(/sleepy\s+hello\s+healthy, lease host 1[12]\ds/)
    const released = await runCli(['keepalive', 'sleepy', '--release'], {env: env()})
    expect(released.exitCode, released.all).toBe(0)
    expect((await listed('sleepy'))?.lifeNow?.leases).toEqual([])
    expect((await runCli(['pause', 'sleepy'], {env: env()})).exitCode).toBe(0)
    const resumed = await runCli(['resume', 'sleepy'], {env: env()})
    expect(resumed.stdout).toBe('sleepy is running')
    expect(await qemuStatus(supervisor)).toBe('running')

    const logs = await runCli(['logs', 'sleepy'], {env: env()})
    expect(logs.stdout).toMatch(/paused on request \(aegis-kit pause\)/)
    expect(logs.stdout).toMatch(new RegExp(`woken by a connection to :${port} \\(resumed in \\d+ ms\\)`))
    expect(logs.stdout).toMatch(/lease host held for 120 s \(long import\)/)
    expect(logs.stdout).toMatch(/woken by lease host/)
    expect(logs.stdout).toMatch(/lease host released/)

    const stopped = await runCli(['stop', 'sleepy'], {env: env(), timeout: 60_000})
    expect(stopped.stdout).toMatch(/sleepy: the workload exited with code 143/)
  }, 300_000)

  it('after the stop window the VM is gone and ps says stopped; the next request boots it and is answered; restart boots a new VM', async () => {
    const {port, supervisor} = await startSleepy('window', 'default', ['--stop-after', '5s'])
    // 5 s idle, then 5 s paused.
    const after = await stateWithin('window', 'stopped', 60_000)
    expect(after, 'stopped within 60 s').toBeDefined()
    expect(vmProcesses(supervisor)).toEqual([])
    expect(await listed('window')).toMatchObject({life: 'stopped', state: 'stopped'})
    expect((await runCli(['ps'], {env: env()})).stdout).toMatch(/window\s+hello\s+stopped, detached/)

    // The relay holds the connection while a new VM boots and the healthcheck answers.
    const woken = await get(port, 180_000)
    expect(woken?.status).toBe(200)
    console.log(`a request to the stopped instance was answered in ${woken?.ms} ms (a cold boot under TCG)`)
    expect(vmProcesses(supervisor).length).toBeGreaterThanOrEqual(2)
    expect((await listed('window'))?.lifeNow).toMatchObject({state: 'running', boots: 1})
    const logs = await runCli(['logs', 'window'], {env: env()})
    expect(logs.stdout).toMatch(/stopped after \d+ s paused, to free its memory; the next connection boots it/)
    expect(logs.stdout).toMatch(new RegExp(`woken by a connection to :${port} \\(booted in \\d+\\.\\d s\\)`))

    const qemuBefore = vmProcesses(supervisor).find((line) => line.includes('qemu-system'))
    const restarted = await runCli(['restart', 'window'], {env: env(), timeout: 240_000})
    expect(restarted.exitCode, restarted.all).toBe(0)
    expect(restarted.stdout).toBe('window restarted (1 restart so far)')
    const qemuAfter = vmProcesses(supervisor).find((line) => line.includes('qemu-system'))
    expect(qemuAfter).toBeDefined()
    expect(qemuAfter).not.toBe(qemuBefore)
    expect((await get(port, 30_000))?.status).toBe(200)
    await runCli(['stop', 'window'], {env: env(), timeout: 60_000})
  }, 420_000)

  it('a port the guest exposed at run time (POST /v1/self/expose) survives the stop window: a connection to it boots the VM and is answered', async () => {
    const {supervisor} = await startSleepy('exposer', 'exposer', ['--stop-after', '5s'])
    const exposed = (await listed('exposer'))?.ports.find((mapping) => mapping.guestPort === 8081)
    expect(exposed, 'the guest exposed 8081 before its healthcheck answered').toBeDefined()
    const hostPort = exposed!.hostPort
    expect((await get(hostPort, 30_000))?.status).toBe(200)

    expect(await stateWithin('exposer', 'stopped', 60_000), 'stopped within 60 s').toBeDefined()
    expect(vmProcesses(supervisor)).toEqual([])
    // Nothing listens in a guest now: the supervisor's relay holds the port, boots a VM, and opens
    // gvproxy's forward to 8081 anew (the first VM's went with it).
    const woken = await get(hostPort, 180_000)
    expect(woken?.status).toBe(200)
    expect((await listed('exposer'))?.lifeNow).toMatchObject({state: 'running', boots: 1})
    // The workload asks again at boot: it gets the same mapping, and no second port is added.
    expect((await listed('exposer'))?.ports.filter((mapping) => mapping.guestPort === 8081)).toEqual([exposed])
    const logs = await runCli(['logs', 'exposer'], {env: env()})
    expect(logs.stdout).toMatch(new RegExp(`woken by a connection to :${hostPort} \\(booted in \\d+\\.\\d s\\)`))
    await runCli(['stop', 'exposer'], {env: env(), timeout: 60_000})
  }, 420_000)

  it('an idle instance (idle_timeout 5s) pauses by itself, and the next request wakes it and is answered', async () => {
    const {port, supervisor} = await startSleepy('idle', 'default')
    const after = await pausedWithin(supervisor, 30_000)
    expect(after, 'paused within 30 s of being healthy').toBeDefined()
    console.log(`paused ${after} ms after the start returned`)
    const woken = await get(port, 30_000)
    expect(woken?.status).toBe(200)
    expect(await qemuStatus(supervisor)).toBe('running')
    const logs = await runCli(['logs', 'idle'], {env: env()})
    expect(logs.stdout).toMatch(/paused after \d+ s idle \(last activity: /)
    expect(logs.stdout).toMatch(new RegExp(`woken by a connection to :${port}`))
    await runCli(['stop', 'idle'], {env: env(), timeout: 60_000})
  }, 180_000)

  it('a busy workload, or an open connection, keeps it awake without inbound traffic (seed 003 friction #1)', async () => {
    const busy = await startSleepy('busy', 'busy')
    expect(await pausedWithin(busy.supervisor, 15_000)).toBeUndefined()
    await runCli(['stop', 'busy'], {env: env(), timeout: 60_000})

    const held = await startSleepy('held', 'default')
    // A connection held open and silent: the guest counts it as established.
    const socket = net.createConnection({host: '127.0.0.1', port: held.port})
    await new Promise((resolve) => socket.once('connect', resolve))
    expect(await pausedWithin(held.supervisor, 15_000)).toBeUndefined()
    socket.destroy()
    expect(await pausedWithin(held.supervisor, 30_000)).toBeDefined()
    await runCli(['stop', 'held'], {env: env(), timeout: 60_000})
  }, 240_000)

  it('long_lived_connections: false lets it pause with a silent connection open; bytes on that connection wake it and are answered', async () => {
    const port = await freePort()
    const started = await runCli(['run', briefKit, '--name', 'brief', '--detach', '--expose', `${port}:8080`], {
      env: env(),
      timeout: 180_000,
    })
    expect(started.exitCode, started.all).toBe(0)
    const supervisor = (await listed('brief'))!.pid
    const socket = net.createConnection({host: '127.0.0.1', port})
    await new Promise((resolve) => socket.once('connect', resolve))
    let answer = ''
    socket.setEncoding('utf8').on('data', (text: string) => {
      answer += text
    })
    try {
      expect(await pausedWithin(supervisor, 30_000), 'paused with the connection open').toBeDefined()
      socket.write('GET / HTTP/1.0\r\n\r\n')
      await waitFor('the answer on the held connection', () => answer.includes('\r\n\r\n'), 30_000)
      expect(answer).toMatch(/^HTTP\/1\.[01] 200/)
      expect(await qemuStatus(supervisor)).toBe('running')
    } finally {
      socket.destroy()
    }
    const logs = await runCli(['logs', 'brief'], {env: env()})
    expect(logs.stdout).toMatch(/paused after \d+ s idle/)
    expect(logs.stdout).toMatch(new RegExp(`woken by traffic on a connection to :${port} \\(resumed in \\d+ ms\\)`))
    await runCli(['stop', 'brief'], {env: env(), timeout: 60_000})
  }, 240_000)

  it('--restart on-failure restarts a crashing workload with a doubling backoff, and not one that exits 0', async () => {
    const crashing = startRun(
      ['hello', '--name', 'crashy', '--restart', 'on-failure', '--', 'busybox', 'sh', '-c', 'exit 3'],
      env(),
    )
    await crashing.waitFor(/restarting in 4 s \(restart 3, --restart on-failure\)/, 120_000)
    const output = crashing.output()
    expect(output).toMatch(
      /crashy: the workload exited with code 3; restarting in 1 s \(restart 1, --restart on-failure\)/,
    )
    expect(output).toMatch(/restarting in 2 s \(restart 2, --restart on-failure\)/)
    expect(output).toMatch(/restarted \(booted in \d+\.\d s\)/)
    crashing.child.kill('SIGINT')
    const ended = await crashing.child
    expect(ended.exitCode).not.toBe(0)
    expect(vmProcesses(crashing.child.pid!)).toEqual([])

    const clean = await runCli(
      ['run', 'hello', '--name', 'clean', '--restart', 'on-failure', '--', 'busybox', 'true'],
      {
        env: env(),
        timeout: 120_000,
      },
    )
    expect(clean.exitCode, clean.all).toBe(0)
    expect(clean.all).not.toMatch(/restarting/)
  }, 240_000)

  it('a supervisor killed with SIGKILL takes its VM with it; ps --all shows the instance exited; rm forgets it', async () => {
    const doomed = await startSleepy('doomed', 'default')
    expect(vmProcesses(doomed.supervisor).length).toBeGreaterThanOrEqual(3)
    const helpers = descendants(doomed.supervisor)
    process.kill(doomed.supervisor, 'SIGKILL')
    const deadline = Date.now() + 15_000
    const alive = () => helpers.filter((pid) => existsSync(`/proc/${pid}`))
    while (alive().length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200))
    expect(alive()).toEqual([])
    expect(await listed('doomed')).toBeUndefined()
    expect(await listed('doomed', true)).toMatchObject({status: 'exited', state: 'exited', lost: true})
    expect((await runCli(['ps', '--all'], {env: env()})).stdout).toMatch(/doomed\s+\S+\s+exited \(supervisor killed\)/)
    const removed = await runCli(['rm', 'doomed'], {env: env()})
    expect(removed.stdout).toBe('removed doomed')
    expect(await listed('doomed', true)).toBeUndefined()
  }, 180_000)

  it('leases_only pauses a busy workload once no lease is held; a host lease keeps it awake until its TTL', async () => {
    const {supervisor} = await startSleepy('bot', 'bot')
    expect((await runCli(['keepalive', 'bot', '--ttl', '12s'], {env: env()})).exitCode).toBe(0)
    expect(await pausedWithin(supervisor, 10_000)).toBeUndefined()
    // The lease ends at 12 s, the idle timeout (5 s) runs from then: busy as it is, it pauses.
    expect(await pausedWithin(supervisor, 25_000)).toBeDefined()
    const logs = await runCli(['logs', 'bot'], {env: env()})
    expect(logs.stdout).toMatch(/paused after \d+ s idle \(last activity: lease host expired\)/)
    await runCli(['stop', 'bot'], {env: env(), timeout: 60_000})
  }, 180_000)

  it('always_on never pauses and restarts a workload that ends; rm refuses it running, --force --workspace removes it all; a guest lease keeps an instance awake', async () => {
    const steady = await startSleepy('steady', 'steady')
    expect(await pausedWithin(steady.supervisor, 15_000)).toBeUndefined()
    expect((await listed('steady'))?.lifeNow).toMatchObject({state: 'running', restarts: 0})

    // The workload ends (its httpd killed from inside; busybox has no pkill): a new VM boots after the backoff.
    const killHttpd = 'busybox kill $(busybox ps -o pid,args | busybox awk "/^ *[0-9]+ busybox httpd/ {print \\$1}")'
    await runCli(['exec', 'steady', '--', 'busybox', 'sh', '-c', killHttpd], {env: env(), timeout: 60_000})
    for (let waited = 0; waited < 60_000; waited += 1000) {
      const life = (await listed('steady'))?.lifeNow
      if (life?.restarts === 1 && life.state === 'running') break
      await new Promise((resolve) => setTimeout(resolve, 1000))
    }
    const again = await get(steady.port, 180_000)
    expect(again?.status).toBe(200)
    expect((await listed('steady'))?.lifeNow).toMatchObject({state: 'running', restarts: 1, boots: 1})
    expect((await runCli(['ps'], {env: env()})).stdout).toMatch(/steady\s+\S+\s+healthy, 1 restart, detached/)
    const steadyLogs = await runCli(['logs', 'steady'], {env: env()})
    expect(steadyLogs.stdout).toMatch(
      /the workload exited with code 143; restarting in 1 s \(restart 1, --restart always\)/,
    )
    expect(steadyLogs.stdout).toMatch(/restarted \(booted in \d+\.\d s\)/)

    const refused = await runCli(['rm', 'steady'], {env: env()})
    expect(refused.exitCode).toBe(1)
    expect(refused.stderr).toMatch(/^Error: steady is running\n {2}hint: stop it first/)
    const workspace = (await listed('steady'))!.workspace!
    expect(existsSync(workspace)).toBe(true)
    const removed = await runCli(['rm', '--force', '--workspace', 'steady'], {env: env(), timeout: 60_000})
    expect(removed.exitCode, removed.all).toBe(0)
    expect(removed.stdout).toBe(`removed steady (stopped first), and its workspace ${workspace}`)
    expect(existsSync(workspace)).toBe(false)
    expect(vmProcesses(steady.supervisor)).toEqual([])
    expect(await listed('steady', true)).toBeUndefined()

    const leaser = await startSleepy('leaser', 'leaser')
    const listedLease = (await listed('leaser'))?.lifeNow?.leases
    expect(listedLease).toEqual([expect.objectContaining({id: 'guest', holder: 'guest', reason: 'warming up'})])
    expect(await pausedWithin(leaser.supervisor, 8_000)).toBeUndefined()
    expect(await pausedWithin(leaser.supervisor, 30_000)).toBeDefined()
    const logs = await runCli(['logs', 'leaser'], {env: env()})
    expect(logs.stdout).toMatch(/lease guest held for 15 s \(warming up\)/)
    await runCli(['stop', 'leaser'], {env: env(), timeout: 60_000})
  }, 240_000)

  it('pause, resume and keepalive say plainly what is wrong', async () => {
    for (const args of [
      ['pause', 'nothing'],
      ['resume', 'nothing'],
      ['keepalive', 'nothing'],
      ['restart', 'nothing'],
      ['rm', 'nothing'],
    ]) {
      const result = await runCli(args, {env: env()})
      expect(result.exitCode).toBe(1)
      expect(result.stderr).toMatch(/^Error: no instance named nothing\n {2}hint: /)
      expect(hasStackTrace(result.all)).toBe(false)
    }
    const badTtl = await runCli(['keepalive', 'nothing', '--ttl', 'soon'], {env: env()})
    expect(badTtl.exitCode).toBe(1)
    expect(badTtl.stderr).toMatch(/^Error: --ttl soon is not a duration of up to a day\n {2}hint: e\.g\. 90s/)
  })
})
