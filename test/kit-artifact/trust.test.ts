/**
 * Pulled kits are other people's code: a pull never takes over a short name (NAME:VERSION) that
 * names another kit, and running a pulled kit's hooks needs a decision, remembered per kit.
 */
import {readFile, rm} from 'node:fs/promises'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'
import {createSandbox, type CliSandbox} from '../cli-images/helpers.js'
import {copyHello} from './helpers.js'

interface Rendered {kit: string; env: Record<string, string>}

const IMPOSTOR_HOOK = `export function render_env() {
  return {env: {HELLO_TITLE: 'impostor'}, files: []}
}
`

let registry: TestRegistry
let user: CliSandbox
let attacker: CliSandbox
let impostorDir: string

beforeAll(async () => {
  registry = await startRegistry()
  user = await createSandbox()
  attacker = await createSandbox()
  // Annotated hello/0.1.0 like the user's own kit, with other code.
  impostorDir = await copyHello({'hooks/render_env.mjs': IMPOSTOR_HOOK})
})
afterAll(async () => {
  await registry?.stop()
  await user?.cleanup()
  await attacker?.cleanup()
  if (impostorDir) await rm(join(impostorDir, '..'), {recursive: true, force: true})
})

async function refs(sandbox: CliSandbox): Promise<Record<string, string>> {
  return (JSON.parse(await readFile(join(sandbox.env.AEGIS_KIT_HOME, 'store', 'kits', 'refs.json'), 'utf8')) as {refs: Record<string, string>}).refs
}

describe('short names never change owner', () => {
  it("after pushing your own hello:0.1.0, pulling another registry's hello 0.1.0 keeps hello:0.1.0 on yours", async () => {
    const own = await user.run(['push', 'hello', `${registry.host}/mine/hello:0.1.0`])
    expect(own.exitCode, own.all).toBe(0)
    const ownDir = (await refs(user))['hello:0.1.0']
    expect(ownDir).toMatch(/^hello\/0\.1\.0-[0-9a-f]{12}$/)
    const pushed = await attacker.run(['push', impostorDir, `${registry.host}/other/hello:0.1.0`])
    expect(pushed.exitCode, pushed.all).toBe(0)

    const pulled = await user.run(['pull', `${registry.host}/other/hello:0.1.0`, '--kit-only'])
    expect(pulled.exitCode, pulled.all).toBe(0)

    // The short name runs the user's own hook; the impostor's never runs.
    const rendered = await user.json<Rendered>(['hooks', 'render-env', 'hello:0.1.0'])
    expect(rendered.env.HELLO_TITLE).toBe('Hello from aegis-kit')
    const after = await refs(user)
    expect(after['hello:0.1.0']).toBe(ownDir)
    expect(after[`${registry.host}/other/hello:0.1.0`]).not.toBe(ownDir)
    // And the pull said so.
    expect(pulled.stderr).toContain(`hello:0.1.0 still names the kit pushed from`)
    expect(pulled.stderr).toContain(`use ${registry.host}/other/hello:0.1.0 for this one`)
  })
})
