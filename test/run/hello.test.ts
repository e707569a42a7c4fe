// `aegis-kit run` with the hello kit in real QEMU microVMs (TCG here): the page through
// --expose, secrets that reach only the workload, the workspace, what a guest may reach on the
// host, and no process left behind, also when the CLI is killed.
import {cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync} from 'node:fs'
import {createServer, type Server} from 'node:http'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {hasStackTrace, repoRoot, runCli} from '../helpers/cli.js'
import {alive, descendants, execa, freePort, startRun, waitGone} from './helpers.js'

const SECRET = 'hello-secret-0f3c9a7e5d1b'
let home: string

beforeAll(async () => {
  home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-run-'))
  const built = await runCli(['build', 'hello'], {env: {AEGIS_KIT_HOME: home}})
  expect(built.exitCode, built.stderr).toBe(0)
}, 300_000)

function env(extra: Record<string, string> = {}): Record<string, string> {
  return {AEGIS_KIT_HOME: home, ...extra}
}

/** Every file under `dir` containing `needle` (binary-safe). */
function filesContaining(dir: string, needle: string): string[] {
  const found: string[] = []
  const walk = (current: string) => {
    for (const entry of readdirSync(current, {withFileTypes: true})) {
      const full = path.join(current, entry.name)
      if (entry.isDirectory()) walk(full)
      else if (entry.isFile() && readFileSync(full).includes(needle)) found.push(full)
    }
  }
  walk(dir)
  return found
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
    expect(await waitGone(helpers, 10_000)).toEqual([])
    await expect(fetch(url)).rejects.toThrow()
    expect(readFileSync(path.join(home, 'workspaces/hello/hello.json'), 'utf8')).toContain('"title":"Hello from aegis-kit"')
  }, 180_000)

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
    const result = await runCli(['run', 'hello', '--secret', 'HELLO_GREETING=MY_GREETING', '--workspace', workspace, '--', 'busybox', 'sh', '-c', script], {env: env({MY_GREETING: SECRET}), timeout: 180_000})
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
      const first = await runCli(['run', kit, '--workspace', undeclared, '--', 'busybox', 'sh', '-c', probe], {env: env(), timeout: 180_000})
      expect(first.exitCode, first.all).toBe(0)
      expect(readFileSync(path.join(undeclared, 'declared.rc'), 'utf8').trim()).not.toBe('declared=0')
      expect(readFileSync(path.join(undeclared, 'expose.rc'), 'utf8').trim()).not.toBe('expose=0')
      expect(hits).toBe(0)
      await expect(fetch(`http://127.0.0.1:${stolenPort}/`)).rejects.toThrow()

      const manifest = readFileSync(path.join(kit, 'aegis-kit.yaml'), 'utf8')
      writeFileSync(path.join(kit, 'aegis-kit.yaml'), `${manifest}\nnetworking:\n  internal_hosts:\n    - 127.0.0.1:${servicePort}\n`)
      const declared = mkdtempSync(path.join(tmpdir(), 'aegis-kit-ws-'))
      const second = await runCli(['run', kit, '--workspace', declared, '--', 'busybox', 'sh', '-c', probe], {env: env(), timeout: 180_000})
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
    const oom = await runCli(['run', 'hello', '--memory', '160mb', '--', 'busybox', 'sh', '-c', 'x=a; while true; do x="$x$x"; done'], {env: env(), timeout: 180_000})
    expect(oom.exitCode).toBe(137)
    expect(oom.stderr).toMatch(/killed because the VM ran out of memory \(160 MiB\).*--memory/)
  }, 400_000)
})

describe('run rejects bad input with a one-line error and the fix', () => {
  const cases: Array<{name: string; args: (port: number) => string[]; error: RegExp; setup?: (port: number) => Promise<() => void>}> = [
    {name: 'unknown kit', args: () => ['no-such-kit'], error: /no kit "no-such-kit"/},
    {name: 'bad --expose', args: () => ['hello', '--expose', '80:99999'], error: /--expose 80:99999: expected HOST\[:GUEST\]/},
    {name: 'memory too small', args: () => ['hello', '--memory', '64mb'], error: /--memory 64mb is 64 MiB; a VM needs at least 128 MiB/},
    {name: 'workspace not a directory', args: () => ['hello', '--workspace', path.join(repoRoot, 'package.json')], error: /--workspace .*package\.json is not a directory/},
    {name: 'undeclared secret', args: () => ['hello', '--secret', 'NOPE'], error: /does not declare a secret NOPE/},
    {name: 'krun without libkrun', args: () => ['hello', '--backend', 'krun'], error: /libkrun, which is not installed/},
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
  ]
  for (const testCase of cases) {
    it(testCase.name, async () => {
      const port = await freePort()
      const cleanup = await testCase.setup?.(port)
      try {
        const result = await runCli(['run', ...testCase.args(port)], {env: env(), timeout: 60_000})
        expect(result.exitCode).toBe(1)
        expect(result.stderr).toMatch(testCase.error)
        expect(result.stderr).toMatch(/hint: /)
        expect(result.stderr.trim().split('\n').length).toBeLessThanOrEqual(2)
        expect(hasStackTrace(result.all)).toBe(false)
      } finally {
        cleanup?.()
      }
    })
  }
})
