// `aegis-kit exec` (issue 13) into a detached hello instance in a real QEMU microVM under TCG:
// output, exit code, stdin with -i, a pseudo-terminal with -it under `script`, waking a paused
// instance, the instance's secret in the exec'd environment and in no file of the instance.
import {mkdtempSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {binRun, hasStackTrace, onTerminal, repoRoot, runCli} from '../helpers/cli.js'
import {execa, filesContaining, freePort} from './helpers.js'

const SECRET = 'exec-secret-5f1c2a'
let home: string
const env = () => ({AEGIS_KIT_HOME: home, HELLO_GREETING: SECRET})

beforeAll(async () => {
  home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-exec-'))
  const built = await runCli(['build', 'hello'], {env: env(), timeout: 300_000})
  expect(built.exitCode, built.all).toBe(0)
  const port = await freePort()
  const started = await runCli(
    ['run', 'hello', '--detach', '--name', 'ex', '--expose', `${port}:8080`, '--secret', 'HELLO_GREETING'],
    {env: env(), timeout: 240_000},
  )
  expect(started.exitCode, started.all).toBe(0)
}, 600_000)

afterAll(async () => {
  await runCli(['stop', 'ex'], {env: env(), timeout: 60_000})
})

describe('exec', () => {
  it('returns stdout, stderr and the exit code', async () => {
    const result = await runCli(['exec', 'ex', '--', 'busybox', 'sh', '-c', 'echo out; echo err >&2; exit 3'], {
      env: env(),
    })
    expect(result.stdout).toBe('out')
    expect(result.stderr).toBe('err')
    expect(result.exitCode).toBe(3)
  }, 120_000)

  it('gives 127 for a command that does not exist', async () => {
    const result = await runCli(['exec', 'ex', '--', 'no-such-command-here'], {env: env()})
    expect(result.exitCode).toBe(127)
  }, 120_000)

  it('forwards stdin with -i', async () => {
    const result = await runCli(['exec', '-i', 'ex', '--', 'busybox', 'cat'], {env: env(), input: 'through stdin\n'})
    expect(result.exitCode, result.stderr).toBe(0)
    expect(result.stdout).toBe('through stdin')
  }, 120_000)

  it('allocates a pseudo-terminal of the local size with -it', async () => {
    const tty = await onTerminal(['exec', '-it', 'ex', '--', 'busybox', 'tty'], home, 120_000)
    expect(tty.exitCode, tty.screen).toBe(0)
    expect(tty.screen).toMatch(/\/dev\/pts\/\d+/)
    // A terminal of a known size: `script` runs stty on its pty, then exec reads that size.
    const command = `stty rows 33 cols 101; '${process.execPath}' '${binRun}' exec -it ex -- busybox stty size`
    const size = await execa('script', ['-qfec', command, '/dev/null'], {
      cwd: repoRoot,
      env: {AEGIS_KIT_HOME: home},
      reject: false,
      timeout: 120_000,
    })
    expect(size.exitCode, String(size.stdout)).toBe(0)
    expect(String(size.stdout)).toMatch(/^33 101\s*$/m)
  }, 240_000)

  it('has the instance secret in the environment, and in no file of the instance', async () => {
    const result = await runCli(['exec', 'ex', '--', 'busybox', 'env'], {env: env()})
    expect(result.exitCode, result.stderr).toBe(0)
    expect(result.stdout).toContain(`HELLO_GREETING=${SECRET}`)
    expect(filesContaining(path.join(home, 'instances', 'ex'), SECRET)).toEqual([])
  }, 120_000)

  it('wakes a paused instance', async () => {
    const paused = await runCli(['pause', 'ex'], {env: env()})
    expect(paused.exitCode, paused.all).toBe(0)
    expect(paused.stdout).toContain('paused')
    const result = await runCli(['exec', 'ex', '--', 'busybox', 'echo', 'awake'], {env: env()})
    expect(result.exitCode, result.stderr).toBe(0)
    expect(result.stdout).toBe('awake')
  }, 120_000)

  it('says what is wrong for an unknown instance, a missing -- or a missing command', async () => {
    for (const args of [
      ['exec', 'nope', '--', 'true'],
      ['exec', 'ex', 'true'],
      ['exec', 'ex', '--'],
    ]) {
      const result = await runCli(args, {env: env()})
      expect(result.exitCode, args.join(' ')).not.toBe(0)
      expect(result.stderr.split('\n').length, result.stderr).toBeLessThanOrEqual(2)
      expect(hasStackTrace(result.stderr)).toBe(false)
    }
  }, 60_000)
})
