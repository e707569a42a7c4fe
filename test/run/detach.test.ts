// `run --detach`, `ps`, `logs` and `stop` with the hello kit in real QEMU microVMs: the instance
// outlives the command that started it, is listed, keeps a log without secrets, holds its name,
// and stops cleanly with nothing left behind.
import {existsSync, mkdtempSync, readFileSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {binRun, hasStackTrace, repoRoot, runCli} from '../helpers/cli.js'
import {alive, descendants, execa, freePort, startRun, waitGone} from './helpers.js'

const SECRET = 'detached-secret-5b2e81c4a9'
let home: string

beforeAll(async () => {
  home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-detach-'))
  const built = await runCli(['build', 'hello'], {env: {AEGIS_KIT_HOME: home}})
  expect(built.exitCode, built.stderr).toBe(0)
}, 300_000)

const env = (extra: Record<string, string> = {}) => ({AEGIS_KIT_HOME: home, ...extra})

interface PsEntry {
  name: string
  kit: string
  status: string
  accel?: string
  alive: boolean
  detached: boolean
  pid: number
  exitCode?: number
  ports: Array<{hostPort: number; guestPort: number}>
  urls: Array<{url: string}>
}

async function ps(all = false): Promise<PsEntry[]> {
  const result = await runCli(['ps', '--json', ...(all ? ['--all'] : [])], {env: env()})
  expect(result.exitCode, result.stderr).toBe(0)
  return (JSON.parse(result.stdout) as {instances: PsEntry[]}).instances
}

describe('run --detach', () => {
  it('starts hello in the background: listed by ps, page served, log kept without the secret, name held, stopped cleanly', async () => {
    const port = await freePort()
    const started = await runCli(
      ['run', 'hello', '--name', 'bg', '--detach', '--expose', `${port}:8080`, '--secret', 'HELLO_GREETING'],
      {env: env({HELLO_GREETING: SECRET}), timeout: 180_000},
    )
    expect(started.exitCode, started.all).toBe(0)
    expect(started.stdout).toContain(`UI: http://127.0.0.1:${port}/`)
    expect(started.all).toMatch(/bg is running in the background \(pid \d+\)/)
    expect(started.all).not.toContain(SECRET)

    // the command has returned; the instance lives on
    const page = await fetch(`http://127.0.0.1:${port}/`)
    expect(page.status).toBe(200)
    const [entry] = (await ps()).filter((instance) => instance.name === 'bg')
    // TCG: this machine's /dev/kvm fails the probe boot.
    expect(entry).toMatchObject({
      kit: 'hello',
      status: 'healthy',
      accel: 'tcg',
      alive: true,
      detached: true,
      ports: [{hostPort: port, guestPort: 8080}],
    })
    const helpers = descendants(entry!.pid)
    expect(alive(helpers).length).toBeGreaterThanOrEqual(3) // qemu, virtiofsd, gvproxy
    const table = await runCli(['ps'], {env: env()})
    expect(table.stdout).toMatch(
      // the idle time appears once a second has passed without activity
      new RegExp(`bg\\s+hello\\s+healthy(, idle \\d+s)?, detached\\s+${entry!.pid}\\s+127\\.0\\.0\\.1:${port}->8080`),
    )

    // the name is taken, detached or not
    for (const args of [['--detach'], []]) {
      const again = await runCli(['run', 'hello', '--name', 'bg', ...args, '--expose', `${await freePort()}:8080`], {
        env: env(),
      })
      expect(again.exitCode).toBe(1)
      expect(again.stderr).toMatch(/an instance named bg is already running .*\n  hint: stop it with aegis-kit stop bg/)
      expect(hasStackTrace(again.all)).toBe(false)
    }

    const logs = await runCli(['logs', 'bg'], {env: env()})
    expect(logs.exitCode).toBe(0)
    expect(logs.stdout).toMatch(/booting bg/)
    expect(logs.stdout).toMatch(/bg \| .*response:200/) // busybox httpd -v logs the request above
    const tail = await runCli(['logs', 'bg', '--tail', '1'], {env: env()})
    expect(tail.stdout.trimEnd().split('\n')).toHaveLength(1)

    // logs -f follows until the instance ends
    const follow = execa(process.execPath, [binRun, 'logs', 'bg', '--follow'], {
      cwd: repoRoot,
      env: env(),
      reject: false,
    })
    const stopped = await runCli(['stop', 'bg'], {env: env(), timeout: 60_000})
    expect(stopped.exitCode, stopped.all).toBe(0)
    expect(stopped.stdout).toMatch(/bg: the workload exited with code 143/)
    expect(await waitGone(helpers, 15_000)).toEqual([])
    const followed = await follow
    expect(followed.exitCode).toBe(0)
    expect(followed.stdout).toMatch(/the workload exited with code 143/)

    expect(await ps()).toEqual([])
    expect((await ps(true)).find((instance) => instance.name === 'bg')).toMatchObject({
      status: 'exited',
      alive: false,
      exitCode: 143,
    })
    const instanceDir = path.join(home, 'instances', 'bg')
    for (const file of ['console.log', 'state.json'])
      expect(readFileSync(path.join(instanceDir, file), 'utf8')).not.toContain(SECRET)
    const again = await runCli(['stop', 'bg'], {env: env()})
    expect(again.exitCode).toBe(0)
    expect(again.stdout).toBe('bg is not running')
  }, 300_000)

  it('a start that fails in the background reports the error in one line, and leaves no instance running', async () => {
    const result = await runCli(['run', 'hello', '--name', 'tiny', '--detach', '--memory', '16mb'], {
      env: env(),
      timeout: 60_000,
    })
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(/^Error: .*16 MiB.*\n  hint: /m)
    expect(hasStackTrace(result.all)).toBe(false)
    expect((await ps()).map((instance) => instance.name)).not.toContain('tiny')
  }, 120_000)

  it('runs the command given after -- in the background too, not the kit default', async () => {
    const workspace = mkdtempSync(path.join(tmpdir(), 'aegis-kit-detach-ws-'))
    writeFileSync(path.join(workspace, 'marker.txt'), 'served from the workspace\n')
    writeFileSync(path.join(workspace, 'index.html'), 'the healthcheck asks for /\n')
    const port = await freePort()
    const started = await runCli(
      [
        'run',
        'hello',
        '--name',
        'cmd',
        '--detach',
        '--workspace',
        workspace,
        '--expose',
        `${port}:8080`,
        '--',
        'busybox',
        'httpd',
        '-f',
        '-p',
        '8080',
        '-h',
        '/workspace',
      ],
      {env: env(), timeout: 180_000},
    )
    try {
      expect(started.exitCode, started.all).toBe(0)
      const response = await fetch(`http://127.0.0.1:${port}/marker.txt`)
      expect(response.status).toBe(200)
      expect(await response.text()).toBe('served from the workspace\n')
    } finally {
      await runCli(['stop', 'cmd'], {env: env(), timeout: 60_000})
    }
  }, 240_000)

  it('ps, logs and stop explain an unknown name', async () => {
    const stop = await runCli(['stop', 'nothing'], {env: env()})
    expect(stop.exitCode).toBe(1)
    expect(stop.stderr).toMatch(/^Error: no instance named nothing\n  hint: /)
    const logs = await runCli(['logs', 'nothing'], {env: env()})
    expect(logs.exitCode).toBe(1)
    expect(hasStackTrace(logs.all)).toBe(false)
    expect(existsSync(path.join(home, 'instances', 'nothing'))).toBe(false)
  })

  it('a foreground instance is listed while it runs, keeps no log, and leaves no record', async () => {
    const port = await freePort()
    const run = startRun(['hello', '--name', 'fg', '--expose', `${port}:8080`], env())
    await run.waitFor(/UI: http/, 120_000)
    expect((await ps()).find((instance) => instance.name === 'fg')).toMatchObject({
      status: 'healthy',
      alive: true,
      detached: false,
      pid: run.child.pid,
    })
    const logs = await runCli(['logs', 'fg'], {env: env()})
    expect(logs.exitCode).toBe(1)
    expect(logs.stderr).toMatch(/^Error: fg keeps no log: it runs in the foreground/)
    run.child.kill('SIGINT')
    expect((await run.child).exitCode).toBe(143)
    expect((await ps(true)).map((instance) => instance.name)).not.toContain('fg')
  }, 180_000)
})
