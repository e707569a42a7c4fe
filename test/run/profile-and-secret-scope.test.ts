// `run --profile NAME` with real QEMU microVMs (TCG here): the profile's ports are published
// unless --expose replaces them, its env sits over the image's and render_env's and under --env,
// and generated secrets follow their scope: per_workspace kept for the workspace (outside it,
// 0600), per_instance new each boot, per_session new each boot with a warning when the instance is in no session
// (sessions.test.ts has one that is).
import {cpSync, mkdtempSync, readFileSync, statSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import {repoRoot, runCli} from '../helpers/cli.js'
import {filesContaining, freePort, startRun} from './helpers.js'

let home: string
let kit: string
/** The guest port of the test kit's page: also the host port its profile publishes. */
let port: number

const SECRET_NAMES = ['WS_TOKEN', 'BOOT_TOKEN', 'SESSION_TOKEN'] as const

/** hello on a free port, with image env, a `probe` profile and three generated secrets. */
function scopedKit(guestPort: number): string {
  const dir = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-kit-')), 'scoped')
  cpSync(path.join(repoRoot, 'kits/hello'), dir, {recursive: true})
  const file = path.join(dir, 'aegis-kit.yaml')
  const manifest = readFileSync(file, 'utf8')
    .replace('name: hello', 'name: scoped')
    .replaceAll('8080', String(guestPort))
    .replace('  workdir: /srv/www\n', '  workdir: /srv/www\n  env: {A: image, B: image, C: image}\n')
    .replace(
      '\nrouting:',
      [
        '    - {name: WS_TOKEN, scope: per_workspace, generated: true}',
        '    - {name: BOOT_TOKEN, scope: per_instance, generated: true}',
        '    - {name: SESSION_TOKEN, scope: per_session, generated: true}',
        '',
        'routing:',
      ].join('\n'),
    )
    .replace(
      '    secrets: [HELLO_GREETING]\n',
      [
        '    secrets: [HELLO_GREETING]',
        '  probe:',
        `    exposes: [${guestPort}]`,
        '    env: {B: profile, C: profile, HELLO_TITLE: profile}',
        `    secrets: [${SECRET_NAMES.join(', ')}]`,
        '',
      ].join('\n'),
    )
  writeFileSync(file, manifest)
  return dir
}

/** Writes the env the test checks and each secret's value (from /run/secrets) into the workspace. */
const RECORD = [
  'echo "A=$A B=$B C=$C T=$HELLO_TITLE" > /workspace/env.txt',
  'printf %s "$WS_TOKEN" > /workspace/WS_TOKEN.env',
  ...SECRET_NAMES.map((name) => `busybox cat /run/secrets/${name} > /workspace/${name}`),
].join('; ')

function recorded(workspace: string): Record<string, string> {
  return Object.fromEntries(SECRET_NAMES.map((name) => [name, readFileSync(path.join(workspace, name), 'utf8')]))
}

function workspace(): string {
  return mkdtempSync(path.join(tmpdir(), 'aegis-kit-ws-'))
}

beforeAll(async () => {
  home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-scope-'))
  port = await freePort()
  kit = scopedKit(port)
  const built = await runCli(['build', kit], {env: {AEGIS_KIT_HOME: home}, timeout: 300_000})
  expect(built.exitCode, built.stderr).toBe(0)
}, 300_000)

describe('run --profile and secret scopes', () => {
  it("publishes the profile's ports unless --expose replaces them, layers env image < render_env < profile < --env, and scopes generated secrets", async () => {
    const serve = `${RECORD}; exec busybox httpd -f -p ${port} -h /srv/www`
    const first = workspace()

    // 1. The profile's port, on the same host port; the env layers; the secrets' first values.
    const run = startRun(
      [kit, '--profile', 'probe', '--workspace', first, '--env', 'C=flag', '--', 'busybox', 'sh', '-c', serve],
      {AEGIS_KIT_HOME: home},
    )
    const [, url] = await run.waitFor(/UI: (http:\/\/127\.0\.0\.1:\d+\/)/, 150_000)
    expect(url).toBe(`http://127.0.0.1:${port}/`)
    expect((await fetch(url)).status).toBe(200)
    // The healthy line names the accelerator the boot line does (TCG on these machines).
    const accelerator = run.output().match(/booting scoped: .*, (KVM|TCG), workspace /)?.[1]
    expect(run.output()).toMatch(new RegExp(`scoped is healthy after [\\d.]+s \\(linux/\\w+, QEMU ${accelerator}\\)`))
    const state = readFileSync(path.join(home, 'instances/scoped/state.json'), 'utf8')
    expect(JSON.parse(state)).toMatchObject({ports: [{hostPort: port, guestPort: port}]})
    run.child.kill('SIGINT')
    const firstResult = await run.child
    expect(run.output()).toMatch(
      /warning: secret SESSION_TOKEN is per_session, but this instance is in no session \(run --session NAME\): it gets a new value each boot/,
    )
    expect(readFileSync(path.join(first, 'env.txt'), 'utf8').trim()).toBe('A=image B=profile C=flag T=profile')
    const boot1 = recorded(first)
    expect(readFileSync(path.join(first, 'WS_TOKEN.env'), 'utf8')).toBe(boot1.WS_TOKEN)
    for (const value of Object.values(boot1)) expect(value).toMatch(/^[0-9a-f]{64}$/)
    expect(firstResult.exitCode, run.output()).toBe(143)

    // The per_workspace value is kept in the data directory, not in the workspace: 0600 in 0700.
    const kept = filesContaining(home, boot1.WS_TOKEN)
    expect(kept).toHaveLength(1)
    expect(path.relative(home, kept[0]!)).toMatch(/^secrets\/workspaces\/[0-9a-f]{32}\/scoped\/WS_TOKEN$/)
    expect(statSync(kept[0]!).mode & 0o777).toBe(0o600)
    expect(statSync(path.dirname(kept[0]!)).mode & 0o777).toBe(0o700)

    // 2. The same workspace again: the same per_workspace value, new per_instance and per_session ones.
    const again = await runCli(
      ['run', kit, '--profile', 'probe', '--workspace', first, '--', 'busybox', 'sh', '-c', RECORD],
      {env: {AEGIS_KIT_HOME: home}, timeout: 180_000},
    )
    expect(again.exitCode, again.all).toBe(0)
    const boot2 = recorded(first)
    expect(boot2.WS_TOKEN).toBe(boot1.WS_TOKEN)
    expect(boot2.BOOT_TOKEN).not.toBe(boot1.BOOT_TOKEN)
    expect(boot2.SESSION_TOKEN).not.toBe(boot1.SESSION_TOKEN)

    // 3. Another workspace, and --expose in place of the profile's port.
    const second = workspace()
    const hostPort = await freePort()
    const other = startRun(
      [
        kit,
        '--profile',
        'probe',
        '--workspace',
        second,
        '--expose',
        `${hostPort}:${port}`,
        '--',
        'busybox',
        'sh',
        '-c',
        serve,
      ],
      {AEGIS_KIT_HOME: home},
    )
    const [, otherUrl] = await other.waitFor(/UI: (http:\/\/127\.0\.0\.1:\d+\/)/, 150_000)
    expect(otherUrl).toBe(`http://127.0.0.1:${hostPort}/`)
    expect((await fetch(otherUrl)).status).toBe(200)
    await expect(fetch(`http://127.0.0.1:${port}/`)).rejects.toThrow()
    const otherState = readFileSync(path.join(home, 'instances/scoped/state.json'), 'utf8')
    other.child.kill('SIGINT')
    await other.child
    const boot3 = recorded(second)
    expect(boot3.WS_TOKEN).not.toBe(boot1.WS_TOKEN)

    // No value in any output, state file, log, store or cache; only the kept per_workspace files hold one.
    const outputs = [run.output(), again.all, other.output(), state, otherState]
    for (const value of [...Object.values(boot1), ...Object.values(boot2), ...Object.values(boot3)]) {
      for (const text of outputs) expect(text).not.toContain(value)
      const holders = filesContaining(home, value).map((file) => path.relative(home, file))
      expect(holders.every((file) => file.startsWith('secrets/workspaces/'))).toBe(true)
      expect(holders.length).toBe(value === boot1.WS_TOKEN || value === boot3.WS_TOKEN ? 1 : 0)
    }
  }, 600_000)
})
