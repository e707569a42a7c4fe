// Two-tier kits (issue 14) in real QEMU microVMs under TCG: a bot instance of a hello-sized kit
// spawns a work instance through its guest API (127.0.0.1:7777 in the VM, the bot's capability
// token attached by the harness), drives it (exec, logs, stop, delete) and is refused, with 403
// and the limit's name, whenever it asks for more than its claims allow. Every request below is
// made from inside the bot (or the child) with busybox: `aegis-kit exec bot -- sh api.sh ...`.
import {cpSync, mkdtempSync, readFileSync, readdirSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {parse, stringify} from 'yaml'
import {CapabilityKey} from '../../src/runner/capabilities.js'
import {hasStackTrace, repoRoot, runCli} from '../helpers/cli.js'
import {alive, descendants} from './helpers.js'

let home: string
let kit: string
const env = () => ({AEGIS_KIT_HOME: home})
/** A value nothing else contains: searched for wherever a secret must never be. */
const GREETING = `greeting-${process.pid}-c4n4ry`

interface Answer {
  status: number
  body: string
  json: <T = Record<string, unknown>>() => T
}

/** One guest API request made inside `instance` (see test/fixtures/two-tier/api.sh). */
async function api(instance: string, method: string, route: string, body?: unknown): Promise<Answer> {
  const args = ['exec', instance, '--', 'busybox', 'sh', '/srv/www/api.sh', method, route]
  if (body !== undefined) args.push(JSON.stringify(body))
  const result = await runCli(args, {env: env(), timeout: 120_000})
  expect(result.exitCode, result.all).toBe(0)
  const [head, ...rest] = result.stdout.split('\r\n\r\n')
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(head ?? '')?.[1])
  const text = rest.join('\r\n\r\n')
  return {status, body: text, json: <T>() => JSON.parse(text) as T}
}

/** The bot spawns `bot.work` (profile work, given the bot's secret). */
async function spawnWork(extra: Record<string, unknown> = {}): Promise<Answer> {
  const spawned = await api('bot', 'POST', '/v1/instances', {
    handle: 'work',
    profile: 'work',
    secrets: ['HELLO_GREETING'],
    ...extra,
  })
  expect(spawned.status, spawned.body).toBe(201)
  return spawned
}

interface Listed {
  name: string
  parent?: string
  session?: string
  pid: number
  alive: boolean
  state: string
}

async function listed(): Promise<Listed[]> {
  const result = await runCli(['ps', '--all', '--json'], {env: env()})
  expect(result.exitCode, result.all).toBe(0)
  return (JSON.parse(result.stdout) as {instances: Listed[]}).instances
}

beforeAll(async () => {
  home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-guest-api-'))
  kit = path.join(home, 'two-tier')
  cpSync(path.join(repoRoot, 'kits/hello'), kit, {recursive: true})
  cpSync(path.join(repoRoot, 'test/fixtures/two-tier/api.sh'), path.join(kit, 'www/api.sh'))
  const file = path.join(kit, 'aegis-kit.yaml')
  const manifest = parse(readFileSync(file, 'utf8')) as {profiles: Record<string, unknown>}
  manifest.profiles = {
    bot: {
      memory_mb: 256,
      secrets: ['HELLO_GREETING'],
      capabilities: {
        spawn: true,
        spawn_depth: 1,
        max_children: 1,
        allowed_profiles: ['work'],
        max_memory_mb: 256,
        max_vcpus: 1,
        allowed_secrets: ['HELLO_GREETING'],
        max_expose_ports: 1,
        // The kit's own build, and one the store does not hold.
        allowed_images: ['hello:0.1.0', 'missing:1'],
      },
    },
    // Asks to spawn too: its parent's spawn_depth of 1 leaves it none.
    work: {memory_mb: 256, exposes: [8080], capabilities: {spawn: true, spawn_depth: 1, max_children: 1}},
  }
  writeFileSync(file, stringify(manifest))
  const started = await runCli(
    ['run', kit, '--profile', 'bot', '--name', 'bot', '--session', 'crew', '--detach', '--secret', 'HELLO_GREETING'],
    {env: {...env(), HELLO_GREETING: GREETING}, timeout: 300_000},
  )
  expect(started.exitCode, started.all).toBe(0)
}, 400_000)

afterAll(async () => {
  await runCli(['stop', 'bot', 'bot.work', 'brief'], {env: env(), timeout: 90_000})
})

describe('a bot instance drives a work instance through the guest API', () => {
  it('refuses each limit with 403 and the limit it hit, and starts nothing', async () => {
    const refusals: Array<[Record<string, unknown>, string]> = [
      [{handle: 'big', profile: 'work', memory_mb: 512}, 'max_memory_mb'],
      [{handle: 'wide', profile: 'work', vcpus: 2}, 'max_vcpus'],
      [{handle: 'other', kit: 'openclaw'}, 'allowed_kits'],
      [{handle: 'image', profile: 'work', image_ref: 'busybox:latest'}, 'allowed_images'],
      [{handle: 'twin', profile: 'bot'}, 'allowed_profiles'],
      [{handle: 'spy', profile: 'work', secrets: ['OPENAI_API_KEY']}, 'allowed_secrets'],
      [{handle: 'ports', profile: 'work', exposes: [8080, 8081]}, 'max_expose_ports'],
    ]
    for (const [request, limit] of refusals) {
      const answer = await api('bot', 'POST', '/v1/instances', request)
      expect(answer.status, answer.body).toBe(403)
      expect(answer.json<{limit: string; error: string}>().limit).toBe(limit)
      expect(answer.json<{error: string}>().error).toMatch(new RegExp(`^${limit}: `))
    }
    expect((await listed()).map((entry) => entry.name)).toEqual(['bot'])
  }, 300_000)

  it('exposes its own guest port on a host port at run time (POST /v1/self/expose), within max_expose_ports', async () => {
    const exposed = await api('bot', 'POST', '/v1/self/expose', {port: 8080})
    expect(exposed.status, exposed.body).toBe(200)
    const mapping = exposed.json<{guest_port: number; public_port: number; protocol: string; url: string}>()
    expect(mapping).toEqual({
      guest_port: 8080,
      public_port: expect.any(Number),
      protocol: 'http',
      url: `http://127.0.0.1:${mapping.public_port}`,
    })
    // The bot was started with no exposed port: the host reaches its page only now.
    expect(await (await fetch(mapping.url)).text()).toContain('Hello from aegis-kit')
    // Asked again, the same mapping; ps and GET /v1/self list it.
    expect((await api('bot', 'POST', '/v1/self/expose', {port: 8080})).json()).toEqual(mapping)
    expect((await runCli(['ps'], {env: env()})).stdout).toContain(`127.0.0.1:${mapping.public_port}->8080`)
    const self = (await api('bot', 'GET', '/v1/self')).json<{exposes: Array<Record<string, unknown>>}>()
    expect(self.exposes).toContainEqual(expect.objectContaining({guest_port: 8080, public_port: mapping.public_port}))
    // A second port is over the bot's max_expose_ports of 1; a bad port is the request's fault.
    const over = await api('bot', 'POST', '/v1/self/expose', {port: 8081})
    expect(over.status, over.body).toBe(403)
    expect(over.json<{limit: string}>().limit).toBe('max_expose_ports')
    expect((await api('bot', 'POST', '/v1/self/expose', {port: 70000})).status).toBe(400)
  }, 300_000)

  it('spawns a child that serves a page on an exposed port, execs in it, reads its logs and stops it', async () => {
    const spawned = await spawnWork()
    const child = spawned.json<{id: string; state: string; exposes: Array<{guest_port: number; public_port: number}>}>()
    expect(child).toMatchObject({id: 'bot.work', state: 'running'})
    expect(child.exposes).toHaveLength(1)
    expect(child.exposes[0]!.guest_port).toBe(8080)

    // The host fetches the child's page on the port it was given.
    const page = await fetch(`http://127.0.0.1:${child.exposes[0]!.public_port}/`)
    expect(await page.text()).toContain('Hello from aegis-kit')

    // ps shows the tree; the child is an ordinary instance.
    const tree = await listed()
    // In its parent's session (run --session crew).
    expect(tree.find((entry) => entry.name === 'bot.work')).toMatchObject({parent: 'bot', session: 'crew', alive: true})
    const table = await runCli(['ps'], {env: env()})
    expect(table.stdout).toMatch(/\n└ bot\.work +two-tier|\n└ bot\.work +hello/)

    // One child at most.
    const second = await api('bot', 'POST', '/v1/instances', {handle: 'more', profile: 'work'})
    expect(second.status, second.body).toBe(403)
    expect(second.json<{limit: string}>().limit).toBe('max_children')
    // The child asks to spawn: its parent left it no generation below.
    const grandchild = await api('bot.work', 'POST', '/v1/instances', {handle: 'deeper', profile: 'work'})
    expect(grandchild.status, grandchild.body).toBe(403)
    expect(grandchild.json<{limit: string}>().limit).toBe('spawn_depth')

    // Exec in the child: output streamed as JSON lines, then the exit code; the secret it was given is there.
    const exec = await api('bot', 'POST', '/v1/instances/bot.work/exec', {
      command: ['busybox', 'sh', '-c', 'echo out-$(hostname); echo err >&2; cat /workspace/hello.json; exit 3'],
    })
    expect(exec.status, exec.body).toBe(200)
    const lines = exec.body
      .trim()
      .split('\n')
      .map((line) => JSON.parse(line) as Record<string, unknown>)
    expect(lines).toContainEqual({stdout: 'out-bot.work\n'})
    expect(lines).toContainEqual({stderr: 'err\n'})
    expect(lines.at(-1)).toEqual({exit_code: 3})
    // render_env saw the secret the bot passed on (it writes whether it got one, never the value).
    expect(lines.map((line) => line.stdout ?? '').join('')).toContain('"greeting":true')

    const logs = await api('bot', 'GET', '/v1/instances/bot.work/logs?tail=50')
    expect(logs.status).toBe(200)
    expect(logs.body).toContain('bot.work is healthy')

    const list = await api('bot', 'GET', '/v1/instances')
    expect(list.json<{instances: Array<{id: string}>}>().instances.map((entry) => entry.id)).toEqual(['bot.work'])
    const one = await api('bot', 'GET', '/v1/instances/bot.work')
    expect(one.json<{id: string; state: string}>()).toMatchObject({id: 'bot.work', state: 'running'})
    // Not its child: the bot cannot reach itself or other instances through this route.
    expect((await api('bot', 'GET', '/v1/instances/bot')).status).toBe(404)

    const childPid = tree.find((entry) => entry.name === 'bot.work')!.pid
    const helpers = descendants(childPid)
    expect(helpers.length).toBeGreaterThan(0)
    const stopped = await api('bot', 'POST', '/v1/instances/bot.work/stop')
    expect(stopped.status, stopped.body).toBe(200)
    expect(stopped.json<{state: string}>().state).toBe('stopped')
    expect(alive([childPid, ...helpers])).toEqual([])
    expect((await api('bot', 'DELETE', '/v1/instances/bot.work')).status).toBe(200)
    expect((await listed()).map((entry) => entry.name)).toEqual(['bot'])
  }, 600_000)

  it('an instance whose token has expired is refused with the exp limit', async () => {
    const started = await runCli(['run', kit, '--profile', 'work', '--name', 'brief', '--detach', '--cap', 'ttl=1s'], {
      env: env(),
      timeout: 300_000,
    })
    expect(started.exitCode, started.all).toBe(0)
    const answer = await api('brief', 'GET', '/v1/self')
    expect(answer.status, answer.body).toBe(403)
    expect(answer.json<{limit: string; error: string}>()).toMatchObject({limit: 'exp'})
    // --cap only lowers: asking for more than the profile declares is refused before anything starts.
    const raised = await runCli(['run', kit, '--profile', 'work', '--name', 'raised', '--cap', 'max_children=5'], {
      env: env(),
    })
    expect(raised.exitCode).not.toBe(0)
    expect(raised.stderr).toContain('--cap max_children=5: the profile allows at most 1')
    expect(hasStackTrace(raised.stderr)).toBe(false)
    await runCli(['stop', 'brief'], {env: env(), timeout: 90_000})
  }, 400_000)

  it('a child boots the image_ref it names; stopping the bot stops its children, rm removes them with it; no secret or token is in a log, state file, ps or the child', async () => {
    // image_ref boots that image from the store: one it does not hold is a failed start, said.
    const ghost = await api('bot', 'POST', '/v1/instances', {handle: 'ghost', profile: 'work', image_ref: 'missing:1'})
    expect(ghost.status, ghost.body).toBe(502)
    expect(ghost.json<{error: string}>().error).toMatch(/^bot\.ghost did not start: .*no image missing:1/)
    await spawnWork({image_ref: 'hello:0.1.0'})
    const cmdline = await runCli(['exec', 'bot.work', '--', 'busybox', 'cat', '/proc/cmdline'], {env: env()})
    expect(cmdline.exitCode, cmdline.all).toBe(0)
    // The workload's environment holds the secret it was given (that is how secrets reach it), never a token.
    const environment = await runCli(['exec', 'bot.work', '--', 'busybox', 'env'], {env: env()})
    expect(environment.stdout).toContain(`HELLO_GREETING=${GREETING}`)
    const psJson = await runCli(['ps', '--all', '--json'], {env: env()})

    const stopped = await runCli(['stop', 'bot'], {env: env(), timeout: 90_000})
    expect(stopped.exitCode, stopped.all).toBe(0)
    const after = await listed()
    expect(after.filter((entry) => entry.alive)).toEqual([])
    expect(after.find((entry) => entry.name === 'bot.work')).toMatchObject({alive: false, parent: 'bot'})

    // Every text aegis-kit wrote about these instances, and the child's kernel command line and environment.
    const texts = [cmdline.stdout, psJson.stdout, ...instanceFiles(path.join(home, 'instances'))]
    const key = CapabilityKey.forDataDir(home)
    for (const candidate of environment.stdout.match(/[A-Za-z0-9_-]{40,}/g) ?? [])
      expect(key.open(candidate)).toBeUndefined()
    for (const text of texts) {
      expect(text).not.toContain(GREETING)
      // A token is base64url sealed with the host key: nothing here opens as one.
      for (const candidate of text.match(/[A-Za-z0-9_-]{40,}/g) ?? []) expect(key.open(candidate)).toBeUndefined()
    }

    // rm of the parent takes its children's records with it: none is left naming a parent that is gone.
    const removed = await runCli(['rm', 'bot'], {env: env()})
    // bot.ghost's failed start left a record too (in the registry's order, not the spawn order).
    expect(
      removed.stdout
        .replace(/^removed bot, and its child instances /, '')
        .split(', ')
        .sort(),
    ).toEqual(['bot.ghost', 'bot.work'])
    expect((await listed()).map((entry) => entry.name).filter((name) => name.startsWith('bot'))).toEqual([])
  }, 600_000)
})

/** The contents of every file under the instances directory (logs, state files). */
function instanceFiles(dir: string): string[] {
  return readdirSync(dir, {recursive: true, withFileTypes: true})
    .filter((entry) => entry.isFile() && !entry.name.endsWith('.sock'))
    .map((entry) => readFileSync(path.join(entry.parentPath, entry.name), 'latin1'))
}
