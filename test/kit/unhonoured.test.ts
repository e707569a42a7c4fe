// Every manifest field is acted on by aegis-kit or warned about: the schema walk, the warnings
// validate prints, and the READMEs and docs that must not promise what the warned fields would do.
import {mkdtempSync, readFileSync, readdirSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'
import type {Kit} from '../../src/kit/kit.js'
import {resolveSecrets} from '../../src/kit/secrets.js'
import {UNHONOURED_FIELDS} from '../../src/kit/unhonoured.js'
import {repoRoot, runCli} from '../helpers/cli.js'
import {analyseManifestConsumers, type SchemaField} from './manifest-consumers.js'

/** For people reading the manifest: nothing is meant to act on it. */
const FOR_READERS = new Set(['profiles.<name>.description'])

/**
 * Fields read only by src/hooks/operations.ts, which copies them into the hooks' app context.
 * That counts as acting only where the hook contract (src/hooks/contract.ts) names them as hook
 * input or aegis-kit uses the context's value itself; each is judged here.
 */
const HOOK_CONTEXT_FIELDS: Record<string, string> = {
  'resources.memory': 'app.resources.memory_mb, which run boots the VM with',
  'resources.cpu': 'app.resources.vcpus, which run boots the VM with',
  'profiles.<name>.memory_mb': 'app.resources.memory_mb, which run boots the VM with',
  'profiles.<name>.vcpus': 'app.resources.vcpus, which run boots the VM with',
  'profiles.<name>.exposes': 'app.expose (contract: "Ports the instance exposes"); run --profile publishes them',
  config: 'app.config, the hooks\' documented input (contract: "The kit\'s `config`")',
}

describe('the schema walk: every field is acted on or warned about', () => {
  let fields: SchemaField[]
  let consumed: (field: SchemaField) => string[]
  beforeAll(() => {
    ;({fields, consumed} = analyseManifestConsumers(repoRoot))
  }, 120_000)

  it('finds the fields (the walk and the generated types agree)', () => {
    const paths = fields.map((field) => field.path)
    for (const known of [
      'policies.warm_pool',
      'secrets.required[].scope',
      'profiles.<name>.always_on',
      'image.base.debian.suite',
      'healthcheck.timeout',
    ])
      expect(paths).toContain(known)
    expect(fields.filter((field) => field.symbol === undefined).map((field) => field.path)).toEqual([])
    // Reads are found: these fields are certainly read by the builder and the runner.
    for (const path of ['image.npm.packages', 'healthcheck.port', 'hooks.render_env'])
      expect(consumed(fields.find((field) => field.path === path) as SchemaField)).not.toEqual([])
  })

  it('every listed field is a field of the schema', () => {
    const paths = new Set(fields.map((field) => field.path))
    expect(Object.keys(UNHONOURED_FIELDS).filter((listed) => !paths.has(listed))).toEqual([])
  })

  it('no field is neither read outside src/kit/ nor in src/kit/unhonoured.ts', () => {
    const ignored = fields.filter(
      (field) =>
        !field.container &&
        consumed(field).length === 0 &&
        !(field.path in UNHONOURED_FIELDS) &&
        !FOR_READERS.has(field.path),
    )
    expect(ignored.map((field) => field.path)).toEqual([])
  })

  it('no field in src/kit/unhonoured.ts is read by code that could act on it (honoured fields leave the list)', () => {
    const honoured = fields.filter((field) => field.path in UNHONOURED_FIELDS && consumed(field).length > 0)
    expect(honoured.map((field) => `${field.path}: read at ${consumed(field).join(', ')}`)).toEqual([])
  })

  it("fields only copied into the hooks' app context are each judged to be acted on", () => {
    const onlyCopied = fields.filter(
      (field) =>
        consumed(field).length > 0 && consumed(field).every((where) => where.startsWith('src/hooks/operations.ts:')),
    )
    expect(onlyCopied.map((field) => field.path).sort()).toEqual(
      Object.keys(HOOK_CONTEXT_FIELDS)
        .filter((path) => onlyCopied.some((field) => field.path === path))
        .sort(),
    )
    expect(onlyCopied.filter((field) => !(field.path in HOOK_CONTEXT_FIELDS)).map((field) => field.path)).toEqual([])
  })
})

describe('secrets.required[].description is acted on', () => {
  it("a missing secret's error says what it is", () => {
    const kit: Kit = {
      dir: '/k',
      manifestFile: '/k/aegis-kit.yaml',
      displayFile: 'aegis-kit.yaml',
      warnings: [],
      manifest: {
        name: 'k',
        version: '1.0.0',
        secrets: {required: [{name: 'API_KEY', description: 'the provider key'}, {name: 'OTHER'}]},
      },
    }
    expect(() => resolveSecrets(kit, [], {env: {}})).toThrow('kit k needs secrets API_KEY (the provider key), OTHER')
  })
})

describe('validate warns about fields it does not act on', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'aegis-unhonoured-'))
  const manifest = path.join(dir, 'aegis-kit.yaml')
  writeFileSync(
    manifest,
    [
      'name: pool',
      'version: 1.0.0',
      'policies:',
      '  warm_pool: 3',
      'secrets:',
      '  required:',
      '    - name: API_KEY',
      '      user_provided: true',
      '    - name: OTHER_KEY',
      '      user_provided: true',
      '',
    ].join('\n'),
  )

  it('one warning per field, located, on stderr; still exit 0', async () => {
    const result = await runCli(['validate', manifest])
    expect(result.exitCode).toBe(0)
    expect(result.stdout.trim()).toBe(`${manifest}: valid kit pool 1.0.0`)
    expect(result.stderr.trim().split('\n')).toEqual([
      `warning: ${manifest}:4:3 policies.warm_pool is accepted but not acted on yet`,
      `warning: ${manifest}:8:7 secrets.required[0].user_provided is accepted but not acted on yet (also on line 10)`,
    ])
  })

  it('--json lists them as warnings with what would act on them', async () => {
    const result = await runCli(['validate', manifest, '--json'])
    expect(result.exitCode).toBe(0)
    expect(result.stderr).toBe('')
    const report = JSON.parse(result.stdout)
    expect(report).toMatchObject({valid: true, problems: []})
    expect(report.warnings).toEqual([
      {
        file: manifest,
        line: 4,
        column: 3,
        path: 'policies.warm_pool',
        field: 'policies.warm_pool',
        message: 'is accepted but not acted on yet',
        alsoOnLines: [],
        hint: UNHONOURED_FIELDS['policies.warm_pool'],
      },
      expect.objectContaining({
        line: 8,
        column: 7,
        path: 'secrets.required[0].user_provided',
        field: 'secrets.required[].user_provided',
        alsoOnLines: [10],
      }),
    ])
  })

  it('an invalid manifest keeps exit 1 and still names the warned fields', async () => {
    const invalid = path.join(dir, 'invalid.yaml')
    writeFileSync(invalid, 'name: pool\nversion: one\npolicies:\n  warm_pool: 2\n')
    const result = await runCli(['validate', invalid])
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toContain(`warning: ${invalid}:4:3 policies.warm_pool is accepted but not acted on yet`)
    expect(result.stderr).toMatch(/invalid\.yaml:2:10: version:/)
  })

  // What the bundled kits set and aegis-kit ignores, written out: a new warning, or a kit
  // field that starts to be honoured, must change this list on purpose.
  const bundled: Record<string, string[]> = {
    openclaw: ['secrets.required[0].user_provided', 'routing.websocket'],
    hello: ['secrets.required[0].user_provided'],
  }
  for (const [kit, paths] of Object.entries(bundled)) {
    it(`the bundled ${kit} kit is warned about exactly the fields it sets and aegis-kit ignores`, async () => {
      const result = await runCli(['validate', kit])
      expect(result.exitCode).toBe(0)
      const warned = result.stderr
        .trim()
        .split('\n')
        .map(
          (line) =>
            /^warning: kits\/[a-z]+\/aegis-kit\.yaml:\d+:\d+ (\S+) is accepted but not acted on yet/.exec(line)?.[1] ??
            `unexpected: ${line}`,
        )
      expect(warned).toEqual(paths)
    })
  }
})

describe('build and run print the same warnings as validate', () => {
  // A kit that builds and runs (hello's recipe) with one warned field; each command is made to
  // fail at the first check after the warnings, so nothing is built and no VM boots.
  const dir = mkdtempSync(path.join(tmpdir(), 'aegis-unhonoured-commands-'))
  const manifest = path.join(dir, 'aegis-kit.yaml')
  writeFileSync(
    manifest,
    [
      'name: pool',
      'version: 1.0.0',
      'image:',
      '  base:',
      '    debian:',
      '      suite: bookworm',
      '      variant: extract',
      '      packages: [busybox-static]',
      '  command: [busybox, sleep, "1"]',
      'policies:',
      '  warm_pool: 3',
      '',
    ].join('\n'),
  )
  const warning = `warning: ${manifest}:11:3 policies.warm_pool is accepted but not acted on yet`
  const home = () => ({AEGIS_KIT_HOME: mkdtempSync(path.join(tmpdir(), 'aegis-unhonoured-home-'))})

  it('validate: the warning the other commands must repeat', async () => {
    const result = await runCli(['validate', manifest])
    expect(result.exitCode).toBe(0)
    expect(result.stderr.trim().split('\n')).toEqual([warning])
  })

  it('build prints it once, before it fails on an unknown platform', async () => {
    const result = await runCli(['build', manifest, '--platform', 'linux/riscv64'], {env: home()})
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(/cannot build for linux\/riscv64/)
    expect(result.stderr.split('\n').filter((line) => line.startsWith('warning:'))).toEqual([warning])
  })

  it('run prints it once, before it refuses --memory 1kb (no VM boots)', async () => {
    const result = await runCli(['run', manifest, '--memory', '1kb'], {env: home()})
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(/--memory 1kb/)
    expect(result.stderr.split('\n').filter((line) => line.startsWith('warning:'))).toEqual([warning])
  })
})

describe('READMEs and docs claim only what works', () => {
  // Words for what the warned fields would do; a README using them must say, in the same
  // paragraph, that the field is "not acted on yet". (Idle pausing, waking and always_on are
  // acted on since the instance lifecycle: test/run/lifecycle.test.ts; `networking.egress: deny`
  // since the frame filter drops egress: test/guest/gvproxy.test.ts.)
  const behaviour = /\b(warm[ -]pool)\b/i
  const kitReadmes = readdirSync(path.join(repoRoot, 'kits')).map((kit) => path.join('kits', kit, 'README.md'))
  const readmes = [...kitReadmes, 'README.md', 'docs/architecture.md', 'docs/hooks.md', 'docs/lock.md'].filter(
    (file) => {
      try {
        readFileSync(path.join(repoRoot, file))
        return true
      } catch {
        return false
      }
    },
  )

  it('the guard sees the READMEs and docs', () => {
    expect(readmes).toEqual(expect.arrayContaining(['kits/openclaw/README.md', 'README.md', 'docs/hooks.md']))
  })

  for (const file of readmes) {
    it(`${file}: warm pools are mentioned only as not acted on yet`, () => {
      const paragraphs = readFileSync(path.join(repoRoot, file), 'utf8').split(/\n\s*\n/)
      const claims = paragraphs.filter((paragraph) => behaviour.test(paragraph) && !/not acted on yet/.test(paragraph))
      expect(claims).toEqual([])
    })
  }
})
