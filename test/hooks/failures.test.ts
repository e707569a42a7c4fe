// Every way a hook can misbehave gets one clear error naming the hook and the kit, exit 1, no
// stack trace, and no secret value in the output.
import {mkdirSync, mkdtempSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {hasStackTrace, runCli} from '../helpers/cli.js'

const SECRET = 'sk-test-HOOKSECRET-0123456789'

/**
 * A throwaway kit whose render_env hook has the given body. Its time limit is short only for
 * the hooks meant to hang: a loaded machine can take seconds to start Node for the others.
 */
function kitWithHook(source: string, timeout = '30s'): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'aegis-kit-hook-'))
  mkdirSync(path.join(dir, 'hooks'))
  writeFileSync(
    path.join(dir, 'aegis-kit.yaml'),
    `name: broken
version: 0.0.1
secrets:
  required:
    - name: API_KEY
      user_provided: true
hooks:
  render_env: hooks/render_env.mjs
  timeout: ${timeout}
`,
  )
  writeFileSync(path.join(dir, 'hooks', 'render_env.mjs'), source)
  return dir
}

async function renderEnv(dir: string, extraEnv: Record<string, string> = {}) {
  return runCli(['hooks', 'render-env', dir, '--secret', 'API_KEY'], {env: {API_KEY: SECRET, ...extraEnv}})
}

const failures: Array<{name: string; source: string; error: RegExp; timeout?: string}> = [
  {
    name: 'throws',
    source: 'export function render_env(app, secrets) {\n  throw new Error(`cannot use ${secrets.API_KEY}`)\n}\n',
    error:
      /hook render_env of kit broken \(hooks\/render_env\.mjs\) failed: cannot use \*\*\*\* \(at hooks\/render_env\.mjs:2:9\)/,
  },
  {
    name: 'rejects asynchronously',
    source:
      'export async function render_env() {\n  await new Promise((r) => setTimeout(r, 10))\n  throw new Error("async failure")\n}\n',
    error: /hook render_env of kit broken .* failed: async failure/,
  },
  {
    name: 'hangs past its time limit',
    source: 'export function render_env() { return new Promise(() => { setInterval(() => {}, 1000) }) }\n',
    error: /hook render_env of kit broken .* did not finish within 2s and was stopped/,
    timeout: '2s',
  },
  {
    name: 'loops forever synchronously',
    source: 'export function render_env() { for (;;) {} }\n',
    error: /hook render_env of kit broken .* did not finish within 2s/,
    timeout: '2s',
  },
  {
    name: 'calls process.exit',
    source: 'export function render_env() { process.exit(3) }\n',
    error: /hook render_env of kit broken .* exited with code 3 before returning a result/,
  },
  {
    name: 'crashes from an unhandled rejection',
    source:
      'export function render_env() { Promise.reject(new Error("stray")); return new Promise(() => { setInterval(() => {}, 1000) }) }\n',
    error: /hook render_env of kit broken .* exited with code 1 before returning a result.*stray/,
  },
  {
    name: 'prints non-JSON to stdout',
    source: 'export function render_env() { process.stdout.write("hello there\\n"); return {env: {}} }\n',
    error: /hook render_env of kit broken .* wrote non-JSON to stdout: "hello there/,
  },
  {
    name: 'returns a value that is not JSON',
    source: 'export function render_env() { return {env: {}, big: 10n} }\n',
    error: /hook render_env of kit broken .* is broken: returned a value that is not JSON/,
  },
  {
    name: 'returns nothing',
    source: 'export function render_env() {}\n',
    error: /hook render_env of kit broken .* is broken: returned nothing/,
  },
  {
    name: 'returns the wrong shape',
    source: 'export function render_env() { return {env: {PORT: 8080}} }\n',
    error: /returned an invalid result: env\.PORT must be a string, got number/,
  },
  {
    name: 'returns a relative file path',
    source: 'export function render_env() { return {env: {}, files: [{path: "etc/x", content: ""}]} }\n',
    error: /returned an invalid result: files\[0\]\.path must be an absolute path/,
  },
  {
    name: 'exports no such function',
    source: 'export function something_else() { return {} }\n',
    error: /is broken: exports no function render_env/,
  },
  {
    name: 'has a syntax error',
    source: 'export function render_env( {\n',
    error: /hook render_env of kit broken .* failed: .*(Unexpected|SyntaxError|expected)/i,
  },
]

describe('hook failure modes', () => {
  for (const failure of failures) {
    it(`a hook that ${failure.name}`, async () => {
      const result = await renderEnv(kitWithHook(failure.source, failure.timeout))
      expect(result.exitCode).toBe(1)
      expect(result.stderr).toMatch(failure.error)
      expect(hasStackTrace(result.all)).toBe(false)
      expect(result.all).not.toContain(SECRET)
    })
  }

  it('console.log in a hook does not corrupt the reply', async () => {
    const dir = kitWithHook(
      'export function render_env(app, secrets) { console.log("debugging", secrets.API_KEY); return {env: {A: "1"}} }\n',
    )
    const result = await runCli(['hooks', 'render-env', dir, '--secret', 'API_KEY', '--json'], {env: {API_KEY: SECRET}})
    expect(result.exitCode).toBe(0)
    expect(JSON.parse(result.stdout).env).toEqual({A: '1'})
    expect(result.all).not.toContain(SECRET)
  })

  it('a hook sees only the secrets it is given, none of the caller environment', async () => {
    const dir = kitWithHook(
      'export function render_env(app, secrets) { return {env: {SEEN: Object.keys(process.env).sort().join(","), ARGS: Object.keys(secrets).join(",")}} }\n',
    )
    const result = await runCli(['hooks', 'render-env', dir, '--secret', 'API_KEY', '--json'], {
      env: {API_KEY: SECRET, OTHER_TOKEN: 'caller-only-value'},
    })
    expect(result.exitCode).toBe(0)
    const env = JSON.parse(result.stdout).env as Record<string, string>
    expect(env.ARGS).toBe('API_KEY')
    expect(env.SEEN.split(',')).not.toContain('API_KEY')
    expect(env.SEEN.split(',')).not.toContain('OTHER_TOKEN')
    expect(result.all).not.toContain('caller-only-value')
  })

  it('a secret the kit does not declare is refused', async () => {
    const dir = kitWithHook('export function render_env() { return {env: {}} }\n')
    const result = await runCli(['hooks', 'render-env', dir, '--secret', 'API_KEYS'], {env: {API_KEYS: SECRET}})
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(/does not declare a secret API_KEYS/)
    expect(result.stderr).toMatch(/did you mean API_KEY/)
  })

  it('a required secret that is not passed is named', async () => {
    const dir = kitWithHook('export function render_env() { return {env: {}} }\n')
    const result = await runCli(['hooks', 'render-env', dir])
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(/needs secret API_KEY/)
  })

  it('a secret whose variable is unset is named, never a value on the command line', async () => {
    const dir = kitWithHook('export function render_env() { return {env: {}} }\n')
    const unset = await runCli(['hooks', 'render-env', dir, '--secret', 'API_KEY=NOT_SET_ANYWHERE'])
    expect(unset.exitCode).toBe(1)
    expect(unset.stderr).toMatch(/\$NOT_SET_ANYWHERE is not set/)
    const literal = await runCli(['hooks', 'render-env', dir, '--secret', `API_KEY=${SECRET}`])
    expect(literal.exitCode).toBe(1)
    expect(literal.stderr).toMatch(/expected NAME or NAME=SOURCE_ENV/)
    expect(literal.all).not.toContain(SECRET)
  })
})
