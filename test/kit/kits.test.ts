// The bundled kits, the seed 002 manifest, `init`, and the manifest's single source of truth.
import {existsSync, mkdtempSync, readFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {execa} from 'execa'
import {describe, expect, it} from 'vitest'
import {hasStackTrace, repoRoot, runCli} from '../helpers/cli.js'

const seedFile = path.join(repoRoot, '..', 'shared', 'seeds', '002_f987b92e4a0341cc.txt')

describe('valid kits', () => {
  for (const kit of ['kits/openclaw', 'kits/hello', 'openclaw', 'hello', 'test/fixtures/manifests/seed-002.yaml']) {
    it(`validate ${kit} exits 0 with one line`, async () => {
      const result = await runCli(['validate', kit])
      // Warnings for fields not acted on yet are checked in unhonoured.test.ts; nothing else.
      expect(result.stderr.split('\n').filter((line) => line !== '' && !line.startsWith('warning: '))).toEqual([])
      expect(result.exitCode).toBe(0)
      expect(result.stdout.trim().split('\n')).toHaveLength(1)
      expect(result.stdout).toMatch(/valid kit (openclaw|hello) /)
    })
  }

  it('the seed 002 fixture is the manifest exactly as the seed writes it', (context) => {
    if (!existsSync(seedFile)) context.skip()
    const seed = readFileSync(seedFile, 'utf8')
    const block = /```yaml\n(# aegis-kit\.yaml[\s\S]*?)```/.exec(seed)?.[1]
    expect(block).toBeDefined()
    expect(readFileSync(path.join(repoRoot, 'test/fixtures/manifests/seed-002.yaml'), 'utf8')).toBe(block)
  })

  it('validate --json reports a valid kit', async () => {
    const result = await runCli(['validate', 'openclaw', '--json'])
    expect(result.exitCode).toBe(0)
    expect(JSON.parse(result.stdout)).toMatchObject({valid: true, name: 'openclaw', version: '2026.9.6', problems: []})
  })

  it('validate with no argument uses the current directory', async () => {
    const result = await runCli(['validate'], {cwd: path.join(repoRoot, 'kits/hello')})
    expect(result.exitCode).toBe(0)
    expect(result.stdout).toContain('aegis-kit.yaml: valid kit hello')
  })

  it('an unknown kit is a one-line error with a hint', async () => {
    const result = await runCli(['validate', 'no-such-kit'])
    expect(result.exitCode).toBe(1)
    const [error, hint, ...more] = result.stderr.trim().split('\n')
    expect(error).toMatch(/^Error: no kit "no-such-kit"/)
    expect(hint).toMatch(/^ {2}hint: .*aegis-kit init no-such-kit/)
    expect(more).toEqual([])
    expect(hasStackTrace(result.all)).toBe(false)
  })

  it('a directory without a manifest is a clear error', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'aegis-kit-empty-'))
    const result = await runCli(['validate', dir])
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(/no aegis-kit\.yaml in/)
  })
})

describe('init', () => {
  it('scaffolds a kit that validates', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'aegis-kit-init-'))
    const created = await runCli(['init', 'my-agent'], {cwd: dir})
    expect(created.exitCode).toBe(0)
    expect(created.stdout).toContain('created kit my-agent')
    const validated = await runCli(['validate', 'my-agent'], {cwd: dir})
    expect(validated.stdout).toContain('valid kit my-agent 0.1.0')
    expect(validated.exitCode).toBe(0)
  })

  it('refuses an invalid name and a non-empty directory', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'aegis-kit-init-'))
    const bad = await runCli(['init', 'My_Agent'], {cwd: dir})
    expect(bad.exitCode).toBe(1)
    expect(bad.stderr).toMatch(/not a valid kit name/)
    await runCli(['init', 'twice'], {cwd: dir})
    const again = await runCli(['init', 'twice'], {cwd: dir})
    expect(again.exitCode).toBe(1)
    expect(again.stderr).toMatch(/already exists and is not empty/)
  })
})

describe('CLI conventions', () => {
  it('every command has a summary and examples, and validate --help shows its examples', async () => {
    const manifest = JSON.parse(readFileSync(path.join(repoRoot, 'oclif.manifest.json'), 'utf8')) as {
      commands: Record<string, {description?: string; summary?: string; examples?: unknown[]}>
    }
    const ids = Object.keys(manifest.commands)
    expect(ids).toEqual(expect.arrayContaining(['validate', 'init', 'hooks:render-env', 'hooks:validate-config']))
    for (const id of ids) {
      expect(manifest.commands[id].summary ?? manifest.commands[id].description, id).toBeTruthy()
      expect(manifest.commands[id].examples?.length ?? 0, id).toBeGreaterThan(0)
    }
    const help = await runCli(['validate', '--help'])
    expect(help.stdout).toContain('EXAMPLES')
  })

  it('an unknown flag is a one-line error without a stack trace', async () => {
    const result = await runCli(['validate', 'hello', '--frobnicate'])
    expect(result.exitCode).not.toBe(0)
    expect(result.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^Error: Nonexistent flag: --frobnicate/)])
    expect(hasStackTrace(result.all)).toBe(false)
  })

  it('--debug adds the stack trace that is otherwise hidden', async () => {
    const plain = await runCli(['hooks', 'render-env', 'hello', '--config', '/nonexistent/config.json'])
    expect(plain.exitCode).toBe(1)
    expect(hasStackTrace(plain.all)).toBe(false)
    const debug = await runCli(['hooks', 'render-env', 'hello', '--config', '/nonexistent/config.json', '--debug'])
    expect(debug.exitCode).toBe(1)
    expect(debug.stderr).toMatch(/cannot read config/)
    expect(hasStackTrace(debug.stderr)).toBe(true)
  })
})

describe('the manifest types and docs are generated from the schema', () => {
  it('src/kit/manifest.generated.ts and docs/manifest.md are up to date', async () => {
    await execa('node', ['scripts/gen-types.mjs', '--check'], {cwd: repoRoot})
    await execa('node', ['scripts/gen-manifest-doc.mjs', '--check'], {cwd: repoRoot})
    const doc = readFileSync(path.join(repoRoot, 'docs/manifest.md'), 'utf8')
    for (const field of [
      'image.npm.packages',
      'secrets.required[].scope',
      'profiles.<name>.memory_mb',
      'healthcheck.path',
      'routing.expose[].ui',
    ]) {
      expect(doc).toContain(`\`${field}\``)
    }
  })

  it('the schema is draft 2020-12 with an $id', () => {
    const schema = JSON.parse(readFileSync(path.join(repoRoot, 'schemas/aegis-kit.schema.json'), 'utf8')) as Record<
      string,
      string
    >
    expect(schema.$schema).toBe('https://json-schema.org/draft/2020-12/schema')
    expect(schema.$id).toMatch(/^https:\/\//)
  })
})
