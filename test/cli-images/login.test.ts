/**
 * `aegis-kit login` / `logout` against a docker-registry with htpasswd Basic auth and one with
 * token auth: credentials are checked before they are stored, stored the docker way, used by
 * push, removed by logout, and the password never appears in anything printed.
 */
import {existsSync} from 'node:fs'
import {readFile} from 'node:fs/promises'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {hasStackTrace} from '../helpers/cli.js'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'
import {createSandbox, makeUmociImage, skopeoInspect, type CliSandbox} from './helpers.js'

let sandbox: CliSandbox

beforeAll(async () => {
  sandbox = await createSandbox()
  const layout = await makeUmociImage(sandbox.dir, 'app', {tag: '1.0', layers: 1})
  await sandbox.json(['images', 'import', `oci-layout:${layout}:1.0`, '--tag', 'app:1.0'])
})
afterAll(() => sandbox?.cleanup())

async function dockerConfig(): Promise<{auths?: Record<string, {auth?: string}>}> {
  const file = join(sandbox.env.DOCKER_CONFIG, 'config.json')
  return existsSync(file) ? (JSON.parse(await readFile(file, 'utf8')) as {auths?: Record<string, {auth?: string}>}) : {}
}

for (const auth of ['basic', 'token'] as const) {
  describe(`login with ${auth} auth`, () => {
    let registry: TestRegistry
    let username: string
    let password: string

    beforeAll(async () => {
      registry = await startRegistry({auth})
      ;({username, password} = registry.credentials!)
    })
    afterAll(() => registry?.stop())

    it('a push without login fails and says to log in', async () => {
      const result = await sandbox.run(['images', 'push', 'app:1.0', `${registry.host}/team/app:1.0`])
      expect(result.exitCode).toBe(1)
      expect(result.stderr).toMatch(/^Error: Push of app:1\.0 .* failed: /)
      expect(result.stderr).toMatch(/aegis-kit login/)
      expect(hasStackTrace(result.all)).toBe(false)
    })

    it('a wrong password is refused clearly, stores nothing and prints no password', async () => {
      const wrong = `${password}-wrong`
      const result = await sandbox.run(['login', registry.host, '-u', username, '--password-stdin'], {
        input: `${wrong}\n`,
      })
      expect(result.exitCode).toBe(1)
      expect(result.stderr).toContain(
        `Error: Login to ${registry.host} failed: the registry refused the username or password for user ${username}.`,
      )
      expect(result.all).not.toContain(wrong)
      expect(result.all).not.toContain(password)
      expect(hasStackTrace(result.all)).toBe(false)
      expect((await dockerConfig()).auths?.[registry.host]).toBeUndefined()
    })

    it('the right password is stored in $DOCKER_CONFIG/config.json, then push works, then logout removes it', async () => {
      const login = await sandbox.run(['login', registry.host, '-u', username, '--password-stdin'], {
        input: `${password}\n`,
      })
      expect(login.exitCode, login.all).toBe(0)
      expect(login.stdout).toContain(`Logged in to ${registry.host} as ${username}`)
      expect(login.all).not.toContain(password)
      const stored = (await dockerConfig()).auths?.[registry.host]?.auth
      expect(Buffer.from(stored ?? '', 'base64').toString('utf8')).toBe(`${username}:${password}`)

      const push = await sandbox.run(['images', 'push', 'app:1.0', `${registry.host}/team/app:1.0`])
      expect(push.exitCode, push.all).toBe(0)
      expect(push.all).not.toContain(password)
      expect((await skopeoInspect(`${registry.host}/team/app:1.0`, {username, password})).Layers).toHaveLength(1)

      const pull = await createSandbox()
      try {
        const pulled = await pull.run(['images', 'pull', `${registry.host}/team/app:1.0`], {
          env: {DOCKER_CONFIG: sandbox.env.DOCKER_CONFIG},
        })
        expect(pulled.exitCode, pulled.all).toBe(0)
      } finally {
        await pull.cleanup()
      }

      const logout = await sandbox.json<{registry: string; removed: boolean}>(['logout', registry.host])
      expect(logout).toEqual({registry: registry.host, removed: true})
      expect((await dockerConfig()).auths?.[registry.host]).toBeUndefined()
      const again = await sandbox.run(['logout', registry.host])
      expect(again.stdout).toContain(`Not logged in to ${registry.host}`)
    })
  })
}

describe('login usage errors', () => {
  it('needs --password-stdin and a registry host', async () => {
    const noStdin = await sandbox.run(['login', '127.0.0.1:5000', '-u', 'me'])
    expect(noStdin.exitCode).toBe(1)
    expect(noStdin.stderr).toMatch(/^Error: Give the password on standard input with --password-stdin\./)
    const notHost = await sandbox.run(['login', 'justaname', '-u', 'me', '--password-stdin'], {input: 'x'})
    expect(notHost.stderr).toMatch(/^Error: "justaname" is not a registry host/)
  })
})
