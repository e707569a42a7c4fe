// Sessions (`run --session`) with a variant of the hello kit in real QEMU microVMs (TCG here): its
// instances share one workspace (workspace.mode: shared) and one value of a per_session secret,
// another session gets neither, and resources.max_agents_per_session refuses one instance too
// many before it boots.
import {cpSync, existsSync, mkdtempSync, readFileSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {parse, stringify} from 'yaml'
import {hasStackTrace, repoRoot, runCli} from '../helpers/cli.js'

let home: string
let kit: string
const env = () => ({AEGIS_KIT_HOME: home})

beforeAll(async () => {
  home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-sessions-'))
  kit = path.join(home, 'team-hello')
  cpSync(path.join(repoRoot, 'kits/hello'), kit, {recursive: true})
  const file = path.join(kit, 'aegis-kit.yaml')
  const manifest = parse(readFileSync(file, 'utf8')) as {
    secrets: {required: object[]}
    profiles: Record<string, {secrets?: string[]}>
    [field: string]: unknown
  }
  manifest.workspace = {mode: 'shared'}
  manifest.resources = {...(manifest.resources as object), max_agents_per_session: 2}
  manifest.secrets.required.push({name: 'TEAM_TOKEN', generated: true, scope: 'per_session'})
  for (const profile of Object.values(manifest.profiles)) profile.secrets?.push('TEAM_TOKEN')
  writeFileSync(file, stringify(manifest))
  const built = await runCli(['build', kit], {env: env(), timeout: 300_000})
  expect(built.exitCode, built.stderr).toBe(0)
}, 300_000)

afterAll(async () => {
  for (const name of ['first', 'second']) await runCli(['stop', name], {env: env(), timeout: 60_000})
})

/** A one-off command in instance `name` of `session`. */
async function runIn(session: string, name: string, script: string) {
  const result = await runCli(['run', kit, '--session', session, '--name', name, '--', 'busybox', 'sh', '-c', script], {
    env: env(),
    timeout: 180_000,
  })
  expect(result.exitCode, result.all).toBe(0)
  return result
}

describe('sessions', () => {
  it("share the session's workspace and per_session secret; another session has its own", async () => {
    await runIn(
      'red',
      'writer',
      'echo from-writer > /workspace/note; cat /run/secrets/TEAM_TOKEN > /workspace/token-writer',
    )
    const reader = await runIn(
      'red',
      'reader',
      'cat /workspace/note > /workspace/seen; cat /run/secrets/TEAM_TOKEN > /workspace/token-reader',
    )
    expect(reader.all).not.toMatch(/per_session/) // no "in no session" warning
    const red = path.join(home, 'sessions/red/workspace')
    expect(readFileSync(path.join(red, 'seen'), 'utf8')).toBe('from-writer\n')
    const token = readFileSync(path.join(red, 'token-writer'), 'utf8')
    expect(token).toMatch(/^[0-9a-f]{64}$/)
    expect(readFileSync(path.join(red, 'token-reader'), 'utf8')).toBe(token)
    // Kept in the data directory, not in the workspace the guest sees.
    expect(readFileSync(path.join(home, 'secrets/sessions/red/hello/TEAM_TOKEN'), 'utf8')).toBe(token)

    await runIn(
      'blue',
      'outsider',
      'cat /workspace/note > /workspace/seen 2>/dev/null; cat /run/secrets/TEAM_TOKEN > /workspace/token',
    )
    const blue = path.join(home, 'sessions/blue/workspace')
    expect(readFileSync(path.join(blue, 'seen'), 'utf8')).toBe('')
    expect(readFileSync(path.join(blue, 'token'), 'utf8')).toMatch(/^[0-9a-f]{64}$/)
    expect(readFileSync(path.join(blue, 'token'), 'utf8')).not.toBe(token)

    // Without --session: its own workspace, and a fresh value with a warning.
    const alone = await runCli(['run', kit, '--name', 'alone', '--', 'busybox', 'true'], {env: env(), timeout: 180_000})
    expect(alone.exitCode, alone.all).toBe(0)
    expect(alone.all).toMatch(/warning: secret TEAM_TOKEN is per_session, but this instance is in no session/)
    expect(existsSync(path.join(home, 'workspaces/alone'))).toBe(true)
  }, 600_000)

  it('resources.max_agents_per_session refuses one instance too many, in one line, before it boots', async () => {
    for (const name of ['first', 'second']) {
      const started = await runCli(['run', kit, '--session', 'green', '--name', name, '--detach'], {
        env: env(),
        timeout: 180_000,
      })
      expect(started.exitCode, started.all).toBe(0)
    }
    const third = await runCli(['run', kit, '--session', 'green', '--name', 'third', '--detach'], {
      env: env(),
      timeout: 180_000,
    })
    expect(third.exitCode).not.toBe(0)
    expect(third.stderr).toMatch(
      /^Error: session green already runs 2 instances \(first, second\), the most its kit allows \(resources\.max_agents_per_session: 2\)$/m,
    )
    expect(hasStackTrace(third.stderr)).toBe(false)
    expect(third.all).not.toMatch(/booting/)
    const listed = await runCli(['ps', '--json', '--all'], {env: env()})
    const instances = (JSON.parse(listed.stdout) as {instances: Array<{name: string; session?: string}>}).instances
    expect(instances.filter((entry) => entry.session === 'green').map((entry) => entry.name)).toEqual([
      'first',
      'second',
    ])
    expect(instances.find((entry) => entry.name === 'third')?.session).toBeUndefined()

    // One stopped: room for another. Its record stays, and rm --workspace keeps the session's.
    expect((await runCli(['stop', 'second'], {env: env(), timeout: 60_000})).exitCode).toBe(0)
    const removed = await runCli(['rm', 'second', '--workspace'], {env: env()})
    expect(removed.exitCode).not.toBe(0)
    expect(removed.stderr).toMatch(/^Error: second's workspace \S+ is session green's, shared by its instances/m)
    expect(existsSync(path.join(home, 'sessions/green/workspace'))).toBe(true)
    const again = await runCli(['run', kit, '--session', 'green', '--name', 'third', '--', 'busybox', 'true'], {
      env: env(),
      timeout: 180_000,
    })
    expect(again.exitCode, again.all).toBe(0)
  }, 600_000)

  it('refuses a session name that cannot name a directory', async () => {
    const result = await runCli(['run', kit, '--session', '../up'], {env: env()})
    expect(result.exitCode).not.toBe(0)
    expect(result.stderr).toMatch(/^Error: "\.\.\/up" is not a usable session name$/m)
    expect(hasStackTrace(result.stderr)).toBe(false)
  })
})
