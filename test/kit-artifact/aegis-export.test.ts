/**
 * `aegis-kit export KIT --format aegis`: the files are checked against JSON Schemas written from
 * Aegis's Go structs (test/fixtures/aegis/*.schema.json, each naming its Go file and commit) and
 * for their values. No Aegis daemon runs here: nothing below shows that Aegis accepts or runs an
 * export, only that the files have the shapes its structs declare and the values the kit says.
 */
import {mkdtemp, readdir, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join, relative} from 'node:path'
import {Ajv2020, type ValidateFunction} from 'ajv/dist/2020.js'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {hasStackTrace, repoRoot, runCli, type CliResult} from '../helpers/cli.js'
import {copyHello} from './helpers.js'

const fixtures = join(repoRoot, 'test/fixtures/aegis')
const CANARIES = {
  OPENAI_API_KEY: 'sk-export-canary-7f3a9c1e',
  TELEGRAM_BOT_TOKEN: '123456:export-canary-bot-token',
  OPENCLAW_GATEWAY_TOKEN: 'export-canary-gateway-5d2b',
  HELLO_GREETING: 'export-canary-greeting-e41f',
}

let scratch: string
let home: string
const validators = {} as Record<'kit' | 'instance' | 'expose', ValidateFunction>

async function loadSchema(name: string): Promise<ValidateFunction> {
  const ajv = new Ajv2020({allErrors: true, strict: true})
  return ajv.compile(JSON.parse(await readFile(join(fixtures, name), 'utf8')) as object)
}

async function exportKit(kit: string, out: string, extra: string[] = []): Promise<CliResult> {
  return runCli(['export', kit, '--format', 'aegis', '-o', out, ...extra], {
    env: {...CANARIES, AEGIS_KIT_HOME: home},
  })
}

/** Every file under dir, relative, sorted. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, {recursive: true, withFileTypes: true})
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => relative(dir, join(entry.parentPath, entry.name)))
    .sort()
}

async function readJson(file: string): Promise<unknown> {
  return JSON.parse(await readFile(file, 'utf8')) as unknown
}

function expectValid(validate: ValidateFunction, value: unknown, what: string): void {
  const ok = validate(value)
  expect(ok, `${what}: ${JSON.stringify(validate.errors)}`).toBe(true)
}

beforeAll(async () => {
  scratch = await mkdtemp(join(tmpdir(), 'aegis-kit-export-'))
  home = join(scratch, 'home')
  validators.kit = await loadSchema('kit.schema.json')
  validators.instance = await loadSchema('instance-request.schema.json')
  validators.expose = await loadSchema('expose-request.schema.json')
})
afterAll(async () => {
  if (scratch) await rm(scratch, {recursive: true, force: true})
})

describe("the schemas are Aegis's, not written to fit the export", () => {
  it("accept Aegis's own kits/agent.json and refuse what its structs do not have", async () => {
    // kits/agent.json copied from xfeldman/aegisvm at 49d0a104 (Apache-2.0).
    const agent = await readJson(join(fixtures, 'aegisvm-kits-agent.json'))
    expectValid(validators.kit, agent, 'aegisvm kits/agent.json')
    expect(validators.kit({...(agent as object), image: {base: 'python:3.12-alpine'}})).toBe(false)
    expect(validators.kit({...(agent as object), profiles: {}})).toBe(false)
    const body = {command: ['aegis-agent'], handle: 'a', kit: 'agent'}
    expectValid(validators.instance, body, 'a minimal create body')
    // createInstanceRequest has no exposes: ports go through POST /v1/instances/{id}/expose.
    expect(validators.instance({...body, exposes: [8080]})).toBe(false)
    expect(validators.instance({...body, command: []})).toBe(false)
    expect(validators.instance({...body, capabilities: {spawn: true, allowed_kits: ['self']}})).toBe(false)
    expect(validators.expose([{port: 8080, protocol: 'http'}])).toBe(true)
    expect(validators.expose([8080])).toBe(false)
  })
})

describe('export openclaw --format aegis', () => {
  let out: string
  let result: CliResult

  beforeAll(async () => {
    out = join(scratch, 'openclaw')
    result = await exportKit('openclaw', out, ['--json'])
  })

  it('writes the kit file, one request per profile and the expose bodies, and lists them under --json', async () => {
    expect(result.exitCode, result.all).toBe(0)
    const files = await filesUnder(out)
    expect(files).toEqual([
      'instances/bot.expose.json',
      'instances/bot.json',
      'instances/work.expose.json',
      'instances/work.json',
      'kits/openclaw.json',
    ])
    const report = JSON.parse(result.stdout) as {files: string[]; leftOut: string[]}
    expect(report.files).toEqual(files.map((file) => join(out, file)))
  })

  it("every file has the shape Aegis's structs declare", async () => {
    expectValid(validators.kit, await readJson(join(out, 'kits/openclaw.json')), 'kits/openclaw.json')
    for (const profile of ['bot', 'work']) {
      expectValid(validators.instance, await readJson(join(out, `instances/${profile}.json`)), profile)
      expectValid(validators.expose, await readJson(join(out, `instances/${profile}.expose.json`)), profile)
    }
  })

  it("the bot's request: its memory, handle, policy, secret names, and its capabilities as Aegis's claims", async () => {
    const bot = (await readJson(join(out, 'instances/bot.json'))) as Record<string, unknown>
    expect(bot).toMatchObject({
      image_ref: 'openclaw:2026.9.6',
      command: ['openclaw', 'gateway', '--allow-unconfigured'],
      handle: 'openclaw-bot',
      workspace: 'openclaw-bot',
      memory_mb: 1024,
      vcpus: 1,
      idle_policy: 'leases_only',
      kit: 'openclaw',
    })
    expect(bot.secrets).toEqual([
      'ANTHROPIC_API_KEY',
      'OPENAI_API_KEY',
      'GEMINI_API_KEY',
      'TELEGRAM_BOT_TOKEN',
      'TELEGRAM_WEBHOOK_SECRET',
      'OPENCLAW_GATEWAY_TOKEN',
    ])
    expect((bot.env as Record<string, string>).OPENCLAW_STATE_DIR).toBe('/workspace/.openclaw')
    expect(bot.capabilities).toEqual({
      spawn: true,
      spawn_depth: 1,
      max_children: 2,
      allowed_images: ['openclaw:2026.9.6'],
      max_memory_mb: 2048,
      max_vcpus: 2,
      max_expose_ports: 1,
      allowed_secrets: ['ANTHROPIC_API_KEY', 'OPENAI_API_KEY', 'GEMINI_API_KEY', 'OPENCLAW_GATEWAY_TOKEN'],
    })
    expect(await readJson(join(out, 'instances/bot.expose.json'))).toEqual([{port: 18789, protocol: 'http'}])
    const work = (await readJson(join(out, 'instances/work.json'))) as Record<string, unknown>
    expect(work).toMatchObject({handle: 'openclaw-work', memory_mb: 2048, vcpus: 2, idle_policy: 'default'})
    expect(work.capabilities).toMatchObject({spawn: false, spawn_depth: 0})
    expect(work.capabilities).not.toHaveProperty('allowed_images')
  })

  it('the kit file: the image as base with nothing to inject, the image command, no capabilities without --profile', async () => {
    const kit = (await readJson(join(out, 'kits/openclaw.json'))) as Record<string, unknown>
    expect(kit).toMatchObject({
      name: 'openclaw',
      version: '2026.9.6',
      image: {base: 'openclaw:2026.9.6', inject: []},
      defaults: {command: ['openclaw', 'gateway', '--allow-unconfigured']},
    })
    expect(kit.defaults).not.toHaveProperty('capabilities')
  })

  it('secret values set in the environment appear in no file and no output, only their names', async () => {
    for (const file of await filesUnder(out)) {
      const text = await readFile(join(out, file), 'utf8')
      for (const value of Object.values(CANARIES)) expect(text, file).not.toContain(value)
    }
    for (const value of Object.values(CANARIES)) expect(result.all).not.toContain(value)
    expect(await readFile(join(out, 'instances/bot.json'), 'utf8')).toContain('"TELEGRAM_BOT_TOKEN"')
  })

  it('names what was left out in one warning line on stderr, the extra claim included', () => {
    const warnings = result.stderr.split('\n').filter((line) => line.startsWith('warning:'))
    expect(warnings).toHaveLength(1)
    expect(warnings[0]).toContain('profiles.bot.capabilities.allowed_profiles')
    expect(warnings[0]).toContain('hooks.render_env')
    expect((JSON.parse(result.stdout) as {leftOut: string[]}).leftOut).toContain(
      'profiles.bot.capabilities.allowed_profiles',
    )
  })

  it('is deterministic: 2-space JSON with sorted keys and a trailing newline, the same bytes twice', async () => {
    const again = join(scratch, 'openclaw-again')
    const second = await exportKit('openclaw', again)
    expect(second.exitCode, second.all).toBe(0)
    for (const file of await filesUnder(out)) {
      const text = await readFile(join(out, file), 'utf8')
      expect(await readFile(join(again, file), 'utf8'), file).toBe(text)
      expect(text.endsWith('}\n') || text.endsWith(']\n'), file).toBe(true)
      expect(text).toMatch(/^[[{]\n {2}\S/)
    }
    const kitText = await readFile(join(out, 'kits/openclaw.json'), 'utf8')
    const keys = Object.keys(JSON.parse(kitText) as object)
    expect(keys).toEqual([...keys].sort())
  })

  it('keeps existing files unless --force', async () => {
    const kitFile = join(out, 'kits/openclaw.json')
    await writeFile(kitFile, 'mine\n')
    const refused = await exportKit('openclaw', out)
    expect(refused.exitCode).toBe(1)
    expect(refused.stderr).toMatch(/already exists/)
    expect(refused.stderr).toMatch(/--force/)
    expect(hasStackTrace(refused.all)).toBe(false)
    expect(await readFile(kitFile, 'utf8')).toBe('mine\n')
    const forced = await exportKit('openclaw', out, ['--force'])
    expect(forced.exitCode, forced.all).toBe(0)
    expectValid(validators.kit, await readJson(kitFile), 'kits/openclaw.json after --force')
  })

  it("--profile bot and --image-ref: the defaults are the bot's, the reference is the one given", async () => {
    const dir = join(scratch, 'openclaw-bot')
    const ref = 'registry.example:5000/kits/openclaw:2026.9.6'
    const run = await exportKit('openclaw', dir, ['--profile', 'bot', '--image-ref', ref])
    expect(run.exitCode, run.all).toBe(0)
    const kit = (await readJson(join(dir, 'kits/openclaw.json'))) as {
      image: {base: string}
      defaults: {capabilities: {spawn: boolean; allowed_images: string[]; max_children: number}}
    }
    expectValid(validators.kit, kit, 'kit file with --profile bot')
    expect(kit.image.base).toBe(ref)
    expect(kit.defaults.capabilities).toMatchObject({spawn: true, max_children: 2, allowed_images: [ref]})
    expect(((await readJson(join(dir, 'instances/work.json'))) as {image_ref: string}).image_ref).toBe(ref)
  })

  it('refuses an unknown profile and an unknown format', async () => {
    const noProfile = await exportKit('openclaw', join(scratch, 'none'), ['--profile', 'nope'])
    expect(noProfile.exitCode).toBe(1)
    expect(noProfile.stderr).toMatch(/no profile "nope"/)
    expect(noProfile.stderr).toMatch(/bot, work/)
    const format = await runCli(['export', 'openclaw', '--format', 'docker', '-o', join(scratch, 'none')], {
      env: {AEGIS_KIT_HOME: home},
    })
    expect(format.exitCode).not.toBe(0)
    expect(format.stderr).toMatch(/aegis/)
  })
})

describe('export hello --format aegis', () => {
  it('has the shapes and values of the hello kit, and no capabilities (it sets none)', async () => {
    const out = join(scratch, 'hello')
    const run = await exportKit('hello', out)
    expect(run.exitCode, run.all).toBe(0)
    expect(await filesUnder(out)).toEqual([
      'instances/default.expose.json',
      'instances/default.json',
      'kits/hello.json',
    ])
    const kit = await readJson(join(out, 'kits/hello.json'))
    expectValid(validators.kit, kit, 'kits/hello.json')
    const request = (await readJson(join(out, 'instances/default.json'))) as Record<string, unknown>
    expectValid(validators.instance, request, 'instances/default.json')
    expect(request).toEqual({
      image_ref: 'hello:0.1.0',
      command: ['busybox', 'httpd', '-f', '-v', '-p', '8080', '-h', '/srv/www'],
      secrets: ['HELLO_GREETING'],
      handle: 'hello-default',
      workspace: 'hello-default',
      memory_mb: 256,
      vcpus: 1,
      kit: 'hello',
    })
    expect(await readJson(join(out, 'instances/default.expose.json'))).toEqual([{port: 8080, protocol: 'http'}])
    for (const file of await filesUnder(out))
      expect(await readFile(join(out, file), 'utf8')).not.toContain(CANARIES.HELLO_GREETING)
    expect(run.stderr).not.toMatch(/capabilities/)
  })

  it('a kit with the claims Aegis lacks (allowed_kits, allowed_profiles, ttl) warns, naming each', async () => {
    const dir = await copyHello()
    const manifestFile = join(dir, 'aegis-kit.yaml')
    const manifest = await readFile(manifestFile, 'utf8')
    const withClaims = manifest.replace(
      '    secrets: [HELLO_GREETING]\n',
      '    secrets: [HELLO_GREETING]\n    capabilities:\n      spawn: true\n      allowed_kits: [self]\n      allowed_profiles: [default]\n      ttl: 1h\n',
    )
    expect(withClaims).not.toBe(manifest)
    await writeFile(manifestFile, withClaims)
    try {
      const out = join(scratch, 'hello-claims')
      const run = await exportKit(dir, out)
      expect(run.exitCode, run.all).toBe(0)
      const warnings = run.stderr.split('\n').filter((line) => line.startsWith('warning:'))
      expect(warnings).toHaveLength(1)
      for (const claim of ['allowed_kits', 'allowed_profiles', 'ttl'])
        expect(warnings[0]).toContain(`profiles.default.capabilities.${claim}`)
      const request = (await readJson(join(out, 'instances/default.json'))) as {capabilities: Record<string, unknown>}
      expectValid(validators.instance, request, 'hello with claims')
      expect(request.capabilities).toEqual({
        spawn: true,
        spawn_depth: 1,
        max_children: 0,
        allowed_images: ['hello:0.1.0'],
        max_memory_mb: 0,
        max_vcpus: 0,
        max_expose_ports: 0,
      })
    } finally {
      await rm(join(dir, '..'), {recursive: true, force: true})
    }
  })
})
