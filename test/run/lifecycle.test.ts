// Instances that sleep and wake (issue 13), with the hello kit in real QEMU microVMs under TCG:
// `pause` stops the vCPUs (QEMU's own monitor says so), a connection to the exposed port wakes the
// VM and is answered, a host lease wakes it and shows in `ps`, and every transition is in the log.
import {cpSync, mkdtempSync, readFileSync, writeFileSync} from 'node:fs'
import net from 'node:net'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {parse, stringify} from 'yaml'
import {QmpClient} from '../../src/guest/qmp.js'
import {hasStackTrace, repoRoot, runCli} from '../helpers/cli.js'
import {descendants, freePort} from './helpers.js'

let home: string
/** hello with a 5 s idle timeout and a profile per rule to test. */
let sleepyKit: string
const env = () => ({AEGIS_KIT_HOME: home})
const HTTPD = 'exec busybox httpd -f -p 8080 -h /srv/www'
const BUSY = `busybox sh -c 'while :; do :; done' & ${HTTPD}`
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
  manifest.policies = {idle_timeout: '5s'}
  writeFileSync(file, stringify(manifest))
  const built = await runCli(['build', sleepyKit], {env: env()})
  expect(built.exitCode, built.stderr).toBe(0)
}, 300_000)

afterAll(async () => {
  for (const name of ['sleepy', 'idle', 'busy', 'held', 'bot', 'steady', 'leaser'])
    await runCli(['stop', name], {env: env(), timeout: 60_000})
})

/** Starts the sleepy kit detached under `name` with `profile`; returns its host port and supervisor pid. */
async function startSleepy(name: string, profile: string): Promise<{port: number; supervisor: number}> {
  const port = await freePort()
  const started = await runCli(
    ['run', sleepyKit, '--name', name, '--profile', profile, '--detach', '--expose', `${port}:8080`],
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
  life?: string
  lifeNow?: {state: string; leases: Array<{id: string; holder: string; reason?: string; expiresInMs: number}>}
}

async function listed(name: string): Promise<Listed | undefined> {
  const result = await runCli(['ps', '--json'], {env: env()})
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
    expect(await listed('sleepy')).toMatchObject({status: 'healthy', life: 'paused', lifeNow: {state: 'paused'}})
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

  it('always_on never pauses; a guest lease (POST /v1/self/keepalive on 127.0.0.1:7777) keeps it awake', async () => {
    const steady = await startSleepy('steady', 'steady')
    expect(await pausedWithin(steady.supervisor, 15_000)).toBeUndefined()
    expect((await listed('steady'))?.lifeNow).toMatchObject({state: 'running'})
    await runCli(['stop', 'steady'], {env: env(), timeout: 60_000})

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
