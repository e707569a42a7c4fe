// Hooks are other people's code: each runs in a bubblewrap sandbox (docs/hooks.md, "Sandbox").
// A malicious kit's hooks try what a security review did to the unsandboxed runner (issue 11,
// observations 1 and 4); every attempt must fail while the honest part of the result arrives.
import {randomBytes} from 'node:crypto'
import {existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync} from 'node:fs'
import {createServer, type Server} from 'node:net'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {execa} from 'execa'
import {afterEach, describe, expect, it} from 'vitest'
import {createSandbox} from '../cli-images/helpers.js'
import {binRun, hasStackTrace, runCli} from '../helpers/cli.js'
import {startRegistry} from '../helpers/registry.js'

/** A kit whose render_env hook is `source`, with extra `hooks:` lines. */
function kitWithHook(source: string, hookLines = 'timeout: 30s'): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'aegis-kit-sandbox-'))
  mkdirSync(path.join(dir, 'hooks'))
  writeFileSync(
    path.join(dir, 'aegis-kit.yaml'),
    `name: intruder\nversion: 0.0.1\nhooks:\n  render_env: hooks/render_env.mjs\n  ${hookLines}\n`,
  )
  writeFileSync(path.join(dir, 'hooks', 'render_env.mjs'), source)
  return dir
}

/** Processes on the host whose command line contains `token` (the test's own excepted). */
function processesWith(token: string): string[] {
  const found: string[] = []
  for (const pid of readdirSync('/proc').filter((name) => /^\d+$/.test(name))) {
    try {
      const commandLine = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')
      if (commandLine.includes(token)) found.push(`${pid}: ${commandLine}`)
    } catch {
      // gone since the listing
    }
  }
  return found
}

/** A loopback listener that records whatever connects to it. */
async function listener(): Promise<{server: Server; port: number; received: string[]}> {
  const received: string[] = []
  const server = createServer((socket) => {
    received.push('connection')
    socket.on('data', (data) => received.push(data.toString()))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (typeof address !== 'object' || address === null) throw new Error('no port')
  return {server, port: address.port, received}
}

let servers: Server[] = []
afterEach(() => {
  for (const server of servers) server.close()
  servers = []
})

/** Renders the kit's env as JSON, with the CLI's environment (HOME and the rest) given. */
async function renderEnvJson(dir: string, env: Record<string, string>) {
  return runCli(['hooks', 'render-env', dir, '--json'], {env, timeout: 90_000})
}

/** Pushes the kit to a local registry, pulls it into a fresh data directory and renders it from there. */
async function renderPulled(dir: string, env: Record<string, string>) {
  const registry = await startRegistry()
  const publisher = await createSandbox()
  const consumer = await createSandbox()
  try {
    const reference = `${registry.host}/kits/intruder:0.0.1`
    const pushed = await publisher.run(['push', dir, reference])
    expect(pushed.exitCode, pushed.all).toBe(0)
    const pulled = await consumer.run(['pull', reference])
    expect(pulled.exitCode, pulled.all).toBe(0)
    return await consumer.run(['hooks', 'render-env', reference, '--trust', '--json'], {env})
  } finally {
    await registry.stop()
    await publisher.cleanup()
    await consumer.cleanup()
  }
}

describe('the hook sandbox', () => {
  for (const origin of ['a local kit', 'a kit pulled from a registry'] as const)
    it(`${origin}: a malicious hook cannot read host secrets, write the host, outlive the CLI or reach the network; its honest result arrives`, async () => {
      const token = randomBytes(8).toString('hex')
      const home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-home-'))
      mkdirSync(path.join(home, '.docker'))
      const dockerConfig = path.join(home, '.docker', 'config.json')
      writeFileSync(
        dockerConfig,
        JSON.stringify({auths: {'registry.example.com': {auth: Buffer.from(`me:docker-${token}`).toString('base64')}}}),
      )
      const hostTmpFile = `/tmp/aegis-hook-escape-${token}`
      const {server, port, received} = await listener()
      servers.push(server)
      const dir = kitWithHook(`import {readdirSync, readFileSync, writeFileSync} from 'node:fs'
import {spawn} from 'node:child_process'
import net from 'node:net'

const attempt = (what) => { try { return 'read ' + String(what()).length + ' bytes' } catch (error) { return 'failed: ' + error.code } }

export async function render_env() {
  const env = {HONEST: 'yes'}
  env.SHADOW = attempt(() => readFileSync('/etc/shadow', 'utf8'))
  env.DOCKER = attempt(() => readFileSync(${JSON.stringify(dockerConfig)}, 'utf8'))
  env.HOST_TMP = attempt(() => writeFileSync(${JSON.stringify(hostTmpFile)}, 'escaped'))
  env.KIT_DIR = attempt(() => writeFileSync('hooks/planted.mjs', 'export {}'))
  // What /proc shows of the parent (the CLI, unsandboxed) and of every other process.
  env.PARENT_ENVIRON = (() => { try { return readFileSync('/proc/' + process.ppid + '/environ', 'utf8').replaceAll('\\0', ' ') } catch (error) { return 'failed: ' + error.code } })()
  env.OTHER_PIDS = readdirSync('/proc').filter((name) => /^\\d+$/.test(name) && Number(name) !== process.pid).join(',')
  spawn('/bin/sh', ['-c', 'sleep 30; : ${token}'], {detached: true, stdio: 'ignore'}).unref()
  env.NETWORK = await new Promise((resolve) => {
    const socket = net.connect(${port}, '127.0.0.1', () => { socket.end('stolen'); resolve('connected') })
    socket.on('error', (error) => resolve('failed: ' + error.code))
    setTimeout(() => resolve('failed: no answer'), 3000)
  })
  return {env, files: [{path: '/etc/app.conf', content: 'honest'}]}
}
`)
      const callerEnv = {HOME: home, PATH: process.env.PATH ?? '/usr/bin:/bin', CALLER_ONLY_KEY: `sk-caller-${token}`}
      const result = origin === 'a local kit' ? await renderEnvJson(dir, callerEnv) : await renderPulled(dir, callerEnv)
      expect(result.exitCode, result.all).toBe(0)
      const rendered = JSON.parse(result.stdout) as {
        env: Record<string, string>
        files: Array<{path: string; content: string}>
      }
      expect(rendered.env.HONEST).toBe('yes')
      expect(rendered.files).toEqual([expect.objectContaining({path: '/etc/app.conf', content: 'honest'})])
      expect(rendered.env.SHADOW).toBe('failed: ENOENT')
      expect(rendered.env.DOCKER).toBe('failed: ENOENT')
      expect(rendered.env.KIT_DIR).toBe('failed: EROFS')
      expect(existsSync(hostTmpFile)).toBe(false)
      expect(result.all).not.toContain(`sk-caller-${token}`)
      expect(result.all).not.toContain('CALLER_ONLY_KEY')
      // Only the sandbox's init: no process of the host, not the CLI.
      expect(rendered.env.OTHER_PIDS).toBe('1')
      expect(rendered.env.NETWORK).toMatch(/^failed: /)
      expect(received).toEqual([])
      expect(processesWith(`: ${token}`)).toEqual([])
    }, 120_000)

  it('a hook that leaves `sleep 25` holding its stdout returns at once with its result, and the sleep is gone', async () => {
    const duration = `25.${randomBytes(3).readUIntBE(0, 3)}`
    const dir = kitWithHook(
      `import {spawn} from 'node:child_process'
export function render_env() {
  spawn('sleep', ['${duration}'], {stdio: 'inherit'})
  return {env: {A: '1'}}
}
`,
      'timeout: 20s',
    )
    const started = Date.now()
    const result = await renderEnvJson(dir, {PATH: process.env.PATH ?? '/usr/bin:/bin'})
    const seconds = (Date.now() - started) / 1000
    expect(result.stderr).toBe('')
    expect(result.exitCode).toBe(0)
    expect(JSON.parse(result.stdout).env).toEqual({A: '1'})
    // Node's start-up on a loaded machine takes seconds; the sleep would take 25.
    expect(seconds).toBeLessThan(15)
    expect(processesWith(`sleep ${duration}`)).toEqual([])
  }, 120_000)

  it('a hook that hangs is stopped at its limit, with every process it started', async () => {
    const duration = `27.${randomBytes(3).readUIntBE(0, 3)}`
    const dir = kitWithHook(
      `import {spawn} from 'node:child_process'
export function render_env() {
  spawn('sleep', ['${duration}'], {detached: true, stdio: 'ignore'}).unref()
  return new Promise(() => { setInterval(() => {}, 1000) })
}
`,
      'timeout: 3s',
    )
    const started = Date.now()
    const result = await runCli(['hooks', 'render-env', dir])
    const seconds = (Date.now() - started) / 1000
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(
      /hook render_env of kit intruder \(hooks\/render_env\.mjs\) did not finish within 3s and was stopped/,
    )
    expect(seconds).toBeLessThan(20)
    expect(processesWith(`sleep ${duration}`)).toEqual([])
  }, 120_000)

  it("a hook killed by a signal is reported as killed, not as the sandbox init's exit code 128+N", async () => {
    const dir = kitWithHook("export function render_env() { process.kill(process.pid, 'SIGKILL') }\n")
    const result = await runCli(['hooks', 'render-env', dir])
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(
      /hook render_env of kit intruder \(hooks\/render_env\.mjs\) was killed by SIGKILL before returning a result/,
    )
  }, 120_000)

  it('a kit that declares hooks.network reaches the network, and the user is told', async () => {
    const {server, port, received} = await listener()
    servers.push(server)
    const dir = kitWithHook(
      `import net from 'node:net'
export async function render_env() {
  const answer = await new Promise((resolve) => {
    const socket = net.connect(${port}, '127.0.0.1', () => { socket.end('hello'); resolve('connected') })
    socket.on('error', (error) => resolve('failed: ' + error.code))
  })
  return {env: {NETWORK: answer}}
}
`,
      'network: true',
    )
    const result = await renderEnvJson(dir, {PATH: process.env.PATH ?? '/usr/bin:/bin'})
    expect(result.exitCode).toBe(0)
    expect(JSON.parse(result.stdout).env).toEqual({NETWORK: 'connected'})
    expect(result.stderr.trim()).toBe(
      'hook render_env of kit intruder runs with network access (hooks.network in its aegis-kit.yaml)',
    )
    await new Promise((resolve) => setTimeout(resolve, 200))
    expect(received).toEqual(['connection', 'hello'])
  }, 120_000)

  it('where bwrap cannot create namespaces, the hook does not run: a one-line error names the fix', async () => {
    const marker = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-nons-')), 'ran')
    const dir = kitWithHook(`import {writeFileSync} from 'node:fs'
export function render_env() { writeFileSync(${JSON.stringify(marker)}, 'ran unsandboxed'); return {env: {}} }
`)
    // A user namespace of its own whose limit for nested namespaces is 0: what a host with
    // unprivileged user namespaces disabled looks like to bwrap.
    const result = await execa(
      'unshare',
      [
        '--user',
        '--map-root-user',
        'sh',
        '-c',
        'echo 0 > /proc/sys/user/max_user_namespaces && exec "$@"',
        'sh',
        process.execPath,
        binRun,
        'hooks',
        'render-env',
        dir,
      ],
      {reject: false, all: true, timeout: 90_000},
    )
    expect(result.exitCode).toBe(1)
    expect(existsSync(marker)).toBe(false)
    const lines = String(result.stderr).trim().split('\n')
    expect(lines).toHaveLength(2)
    expect(lines[0]).toMatch(
      /^Error: cannot start the sandbox for hook render_env of kit intruder \(hooks\/render_env\.mjs\): bwrap: Creating new namespace failed/,
    )
    expect(lines[1]).toMatch(/hint: .*user namespaces/)
    expect(hasStackTrace(String(result.all))).toBe(false)
  }, 120_000)
})
