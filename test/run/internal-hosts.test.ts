// networking.internal_hosts and networking.egress through `run`, in a real QEMU microVM (TCG here):
// the guest resolves a declared name to the host's loopback and reaches that port on it, and only
// that port; with egress denied, it reaches nothing beyond the host.
import {cpSync, mkdtempSync, readFileSync, writeFileSync} from 'node:fs'
import {createServer, type Server} from 'node:http'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {serverBeyondHost} from '../helpers/beyond-host.js'
import {repoRoot, runCli} from '../helpers/cli.js'
import {freePort} from './helpers.js'

let home: string
const servers: Server[] = []

/** An HTTP server on the host's 127.0.0.1 answering `answer`: its port, and how many requests it had. */
async function hostService(answer: string): Promise<{port: number; hits: () => number}> {
  let hits = 0
  const server = createServer((_, response) => {
    hits++
    response.end(answer)
  })
  servers.push(server)
  const port = await freePort()
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve))
  return {port, hits: () => hits}
}

/** The hello kit declaring `entries` in networking.internal_hosts, and `egress` when given. */
function helloWithInternalHosts(entries: string[], egress?: 'allow' | 'deny'): string {
  const kit = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-kit-')), 'hello')
  cpSync(path.join(repoRoot, 'kits/hello'), kit, {recursive: true})
  const manifest = readFileSync(path.join(kit, 'aegis-kit.yaml'), 'utf8')
  writeFileSync(
    path.join(kit, 'aegis-kit.yaml'),
    `${manifest}\nnetworking:\n${egress ? `  egress: ${egress}\n` : ''}  internal_hosts:\n${entries.map((entry) => `    - "${entry}"\n`).join('')}`,
  )
  return kit
}

beforeAll(async () => {
  home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-hosts-'))
  const built = await runCli(['build', 'hello'], {env: {AEGIS_KIT_HOME: home}, timeout: 300_000})
  expect(built.exitCode, built.stderr).toBe(0)
}, 300_000)

afterAll(() => {
  for (const server of servers) server.close()
})

describe('hostnames in networking.internal_hosts', () => {
  it("the guest reaches the declared name:port on the host's loopback, and not another port", async () => {
    const declared = await hostService('coordinator-answer\n')
    const undeclared = await hostService('undeclared-answer\n')
    const kit = helloWithInternalHosts([`myservice.internal:${declared.port}`])
    const workspace = mkdtempSync(path.join(tmpdir(), 'aegis-kit-ws-'))
    const probe = [
      'busybox cat /etc/hosts > /workspace/hosts',
      `busybox wget -q -O /workspace/declared http://myservice.internal:${declared.port}/; echo "declared=$?" > /workspace/declared.rc`,
      `busybox wget -q -O /workspace/undeclared http://myservice.internal:${undeclared.port}/; echo "undeclared=$?" > /workspace/undeclared.rc`,
    ].join('; ')
    const result = await runCli(['run', kit, '--workspace', workspace, '--', 'busybox', 'sh', '-c', probe], {
      env: {AEGIS_KIT_HOME: home},
      timeout: 180_000,
    })
    expect(result.exitCode, result.all).toBe(0)
    expect(readFileSync(path.join(workspace, 'hosts'), 'utf8')).toMatch(/^192\.168\.127\.254\tmyservice\.internal$/m)
    expect(readFileSync(path.join(workspace, 'declared.rc'), 'utf8').trim()).toBe('declared=0')
    expect(readFileSync(path.join(workspace, 'declared'), 'utf8')).toBe('coordinator-answer\n')
    expect(readFileSync(path.join(workspace, 'undeclared.rc'), 'utf8').trim()).not.toBe('undeclared=0')
    expect(declared.hits()).toBe(1)
    expect(undeclared.hits()).toBe(0)
  }, 240_000)

  it('networking.egress: deny keeps the guest from what lies beyond the host, not from a declared service', async () => {
    const declared = await hostService('coordinator-answer\n')
    const beyond = await serverBeyondHost('beyond-answer\n')
    try {
      const kit = helloWithInternalHosts([`myservice.internal:${declared.port}`], 'deny')
      const validated = await runCli(['validate', kit], {env: {AEGIS_KIT_HOME: home}})
      expect(validated.exitCode, validated.all).toBe(0)
      expect(validated.all).not.toMatch(/egress/) // acted on: no "accepted but not acted on" warning
      const workspace = mkdtempSync(path.join(tmpdir(), 'aegis-kit-ws-'))
      const probe = [
        `busybox wget -q -O /workspace/beyond http://${beyond.address}:${beyond.port}/; echo "beyond=$?" > /workspace/beyond.rc`,
        `busybox wget -q -O /workspace/declared http://myservice.internal:${declared.port}/; echo "declared=$?" > /workspace/declared.rc`,
      ].join('; ')
      const result = await runCli(
        ['run', kit, '--debug', '--workspace', workspace, '--', 'busybox', 'sh', '-c', probe],
        {env: {AEGIS_KIT_HOME: home}, timeout: 180_000},
      )
      expect(result.exitCode, result.all).toBe(0)
      expect(result.all).toMatch(/booting hello: .*, no egress \(networking\.egress: deny\)$/m)
      expect(readFileSync(path.join(workspace, 'beyond.rc'), 'utf8').trim()).not.toBe('beyond=0')
      expect(beyond.hits()).toBe(0)
      expect(result.all).toContain(
        `blocked guest tcp to ${beyond.address}:${beyond.port} (the kit sets networking.egress: deny)`,
      )
      expect(readFileSync(path.join(workspace, 'declared.rc'), 'utf8').trim()).toBe('declared=0')
      expect(readFileSync(path.join(workspace, 'declared'), 'utf8')).toBe('coordinator-answer\n')
    } finally {
      beyond.close()
    }
  }, 240_000)

  it('refuses an entry that is neither an address nor a hostname, in one line, before booting', async () => {
    const kit = helloWithInternalHosts(['bad..name:9000'])
    const result = await runCli(['run', kit], {env: {AEGIS_KIT_HOME: home}, timeout: 120_000})
    expect(result.exitCode).not.toBe(0)
    expect(result.stderr).toMatch(
      /^Error: bad internal host "bad\.\.name:9000": "bad\.\.name" is neither an IPv4 address nor a hostname$/m,
    )
    expect(result.stderr).toMatch(/^\s*hint: write host:port with a name of letters/m)
    expect(result.all).not.toMatch(/booting/)
  }, 120_000)
})
