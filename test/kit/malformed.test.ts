// The malformed-manifest corpus: every entry must exit 1 with a located, one-or-two-line message
// per problem, quickly, and never a stack trace.
import {mkdtempSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {hasStackTrace, runCli} from '../helpers/cli.js'

const valid = `name: demo
version: 1.0.0
`

interface Case {
  name: string
  content: string | Buffer
  /** Expected `file:line:column` position of the first problem. */
  at: [number, number]
  message: RegExp
  /** A field path the problem names, when it has one. */
  path?: string
  hint?: RegExp
}

const cases: Case[] = [
  {name: 'empty file', content: '', at: [1, 1], message: /manifest is empty/},
  {name: 'only comments', content: '# nothing here\n# still nothing\n', at: [1, 1], message: /manifest is empty/},
  {
    name: 'list at top level',
    content: '- name: demo\n- version: 1.0.0\n',
    at: [1, 1],
    message: /must be a mapping.*got a list/,
  },
  {name: 'scalar at top level', content: 'just a string\n', at: [1, 1], message: /must be a mapping.*got the string/},
  {
    name: 'YAML syntax error (unclosed flow)',
    content: 'name: [demo\nversion: 1.0.0\n',
    at: [2, 1],
    message: /YAML syntax error/,
  },
  {
    name: 'tab indentation',
    content: 'name: demo\nversion: 1.0.0\nimage:\n\tbase: debian\n',
    at: [4, 1],
    message: /Tabs are not allowed/,
    hint: /spaces, not tabs/,
  },
  {
    name: 'duplicate key',
    content: 'name: demo\nversion: 1.0.0\nname: other\n',
    at: [3, 1],
    message: /keys must be unique/,
    hint: /appear once/,
  },
  {
    name: 'alias bomb',
    content:
      'name: demo\nversion: 1.0.0\na: &a [x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c]\n',
    at: [4, 8],
    message: /too many YAML alias expansions/,
  },
  {
    name: 'non-UTF-8 (latin-1 byte)',
    content: Buffer.from('name: demo\ndescription: caf\xe9\nversion: 1.0.0\n', 'latin1'),
    at: [2, 17],
    message: /not UTF-8/,
  },
  {
    name: 'binary garbage with NUL',
    content: Buffer.from([0x6e, 0x61, 0x6d, 0x65, 0x3a, 0x00, 0x01, 0x02, 0xff, 0x10]),
    at: [1, 6],
    message: /(not UTF-8|binary data)/,
  },
  {name: 'control characters', content: 'name: demo\x07\nversion: 1.0.0\n', at: [1, 11], message: /binary data/},
  {
    name: 'two YAML documents',
    content: 'name: demo\nversion: 1.0.0\n---\nname: again\n',
    at: [3, 1],
    message: /YAML syntax error/,
    hint: /single YAML document/,
  },
  {
    name: 'missing version',
    content: 'name: demo\n',
    at: [1, 1],
    path: 'version',
    message: /missing required field "version"/,
    hint: /version: 1\.0\.0/,
  },
  {
    name: 'missing name',
    content: 'version: 1.0.0\n',
    at: [1, 1],
    path: 'name',
    message: /missing required field "name"/,
  },
  {
    name: 'version read as a number',
    content: 'name: demo\nversion: 1.0\n',
    at: [2, 10],
    path: 'version',
    message: /wrong type: got number/,
    hint: /quote it: `"1\.0"`/,
  },
  {
    name: 'version not semver',
    content: 'name: demo\nversion: "1.0"\n',
    at: [2, 10],
    path: 'version',
    message: /not in the expected form/,
  },
  {
    name: 'name with upper case',
    content: 'name: Demo\nversion: 1.0.0\n',
    at: [1, 7],
    path: 'name',
    message: /not in the expected form/,
  },
  {
    name: 'unknown top-level key with suggestion',
    content: `${valid}resorces:\n  cpu: 2\n`,
    at: [3, 1],
    path: 'resorces',
    message: /unknown field "resorces"/,
    hint: /did you mean "resources"/,
  },
  {
    name: 'unknown nested key with suggestion',
    content: `${valid}image:\n  base: debian:bookworm\n  comand: [x]\n`,
    at: [5, 3],
    path: 'image.comand',
    message: /unknown field "comand"/,
    hint: /did you mean "command"/,
  },
  {
    name: 'unknown key without suggestion',
    content: `${valid}flux_capacitor: true\n`,
    at: [3, 1],
    path: 'flux_capacitor',
    message: /unknown field/,
    hint: /remove it/,
  },
  {
    name: 'bad enum with suggestion',
    content: `${valid}workspace:\n  mode: sharde\n`,
    at: [4, 9],
    path: 'workspace.mode',
    message: /not allowed/,
    hint: /did you mean "shared"/,
  },
  {
    name: 'port out of range',
    content: `${valid}routing:\n  expose:\n    - port: 70000\n`,
    at: [5, 13],
    path: 'routing.expose[0].port',
    message: /must be <= 65535/,
  },
  {
    name: 'port zero',
    content: `${valid}routing:\n  expose:\n    - port: 0\n`,
    at: [5, 13],
    path: 'routing.expose[0].port',
    message: /must be >= 1/,
  },
  {
    name: 'duplicate exposed port',
    content: `${valid}routing:\n  expose:\n    - port: 8080\n    - port: 8080\n`,
    at: [6, 13],
    path: 'routing.expose[1].port',
    message: /exposed twice/,
  },
  {
    name: 'secret name not an env var',
    content: `${valid}secrets:\n  required:\n    - name: my-key\n`,
    at: [5, 13],
    path: 'secrets.required[0].name',
    message: /not in the expected form/,
  },
  {
    name: 'secret name starting with a digit',
    content: `${valid}secrets:\n  required:\n    - name: 1PASSWORD\n`,
    at: [5, 13],
    path: 'secrets.required[0].name',
    message: /not in the expected form/,
  },
  {
    name: 'duplicate secret',
    content: `${valid}secrets:\n  required:\n    - name: KEY\n    - name: KEY\n`,
    at: [6, 13],
    path: 'secrets.required[1].name',
    message: /declared twice/,
  },
  {
    name: 'bad secret scope',
    content: `${valid}secrets:\n  required:\n    - name: KEY\n      scope: per_galaxy\n`,
    at: [6, 14],
    path: 'secrets.required[0].scope',
    message: /not allowed/,
  },
  {
    name: 'size that does not parse',
    content: `${valid}resources:\n  memory: lots\n`,
    at: [4, 11],
    path: 'resources.memory',
    message: /not in the expected form/,
    hint: /2048mb/,
  },
  {
    name: 'size zero',
    content: `${valid}resources:\n  memory: 0mb\n`,
    at: [4, 11],
    path: 'resources.memory',
    message: /greater than zero/,
  },
  {
    name: 'missing hook file',
    content: `${valid}hooks:\n  render_env: hooks/nope.mjs\n`,
    at: [4, 15],
    path: 'hooks.render_env',
    message: /does not exist/,
  },
  {
    name: 'hook path escaping the kit',
    content: `${valid}hooks:\n  render_env: ../../etc/passwd\n`,
    at: [4, 15],
    path: 'hooks.render_env',
    message: /outside the kit directory/,
  },
  {
    name: 'profile uses undeclared secret',
    content: `${valid}secrets:\n  required:\n    - name: ANTHROPIC_API_KEY\nprofiles:\n  bot:\n    secrets: [ANTHROPIC_API_KEYS]\n`,
    at: [8, 15],
    path: 'profiles.bot.secrets[0]',
    message: /does not declare/,
    hint: /did you mean ANTHROPIC_API_KEY/,
  },
  {
    name: 'profile exposes an undeclared port',
    content: `${valid}routing:\n  expose:\n    - port: 80\nprofiles:\n  web:\n    exposes: [81]\n`,
    at: [8, 15],
    path: 'profiles.web.exposes[0]',
    message: /does not declare/,
  },
  {
    name: 'profile exposes a port twice',
    content: `${valid}routing:\n  expose:\n    - port: 80\nprofiles:\n  web:\n    exposes: [80, 80]\n`,
    at: [8, 19],
    path: 'profiles.web.exposes[1]',
    message: /port 80 is listed twice/,
  },
  {
    name: 'generated and user_provided',
    content: `${valid}secrets:\n  required:\n    - name: TOKEN\n      generated: true\n      user_provided: true\n`,
    at: [5, 7],
    path: 'secrets.required[0]',
    message: /both generated and user_provided/,
  },
  {
    name: 'image base of the wrong type',
    content: `${valid}image:\n  base: 42\n`,
    at: [4, 9],
    path: 'image.base',
    message: /wrong type/,
  },
  {
    name: 'npm package not pinned',
    content: `${valid}image:\n  base: debian:bookworm\n  npm:\n    packages: [openclaw@latest]\n`,
    at: [6, 16],
    path: 'image.npm.packages[0]',
    message: /not in the expected form/,
  },
  {
    name: 'env var name with a dash',
    content: `${valid}image:\n  base: x\n  env:\n    MY-VAR: "1"\n`,
    at: [6, 5],
    path: 'image.env.MY-VAR',
    message: /not a valid name/,
  },
]

describe('validate rejects malformed manifests with located messages', () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'aegis-kit-malformed-'))

  it('has a corpus of at least 25 cases', () => {
    expect(cases.length).toBeGreaterThanOrEqual(25)
  })

  for (const [index, testCase] of cases.entries()) {
    it(testCase.name, async () => {
      const file = path.join(dir, `case-${index}.yaml`)
      writeFileSync(file, testCase.content)
      const started = Date.now()
      const result = await runCli(['validate', file], {cwd: dir})
      expect(result.exitCode).toBe(1)
      expect(hasStackTrace(result.all)).toBe(false)
      const [line, column] = testCase.at
      const first = result.stderr.split('\n')[0]
      expect(first.startsWith(`case-${index}.yaml:${line}:${column}:`), `first line: ${first}`).toBe(true)
      expect(result.stderr).toMatch(testCase.message)
      if (testCase.path) expect(first).toContain(` ${testCase.path}:`)
      if (testCase.hint) expect(result.stderr).toMatch(new RegExp(`hint: .*${testCase.hint.source}`))
      expect(result.stderr).toMatch(/hint: /)
      // Hostile input (an alias bomb, say) is refused, not chewed on: a guard against hangs, with
      // room for a loaded machine; CLI start included.
      expect(Date.now() - started).toBeLessThan(15_000)
    })
  }

  it('reports every problem of a manifest at once, sorted by position', async () => {
    const file = path.join(dir, 'many.yaml')
    writeFileSync(file, 'name: demo\nversoin: 1.0.0\nimage:\n  bse: x\nworkspace:\n  mode: nope\n')
    const result = await runCli(['validate', file, '--json'], {cwd: dir})
    expect(result.exitCode).toBe(1)
    const report = JSON.parse(result.stdout) as {valid: boolean; problems: Array<{line: number; path: string}>}
    expect(report.valid).toBe(false)
    expect(report.problems.map((p) => p.path)).toEqual([
      'version',
      'versoin',
      'image.base',
      'image.bse',
      'workspace.mode',
    ])
    expect(report.problems.map((p) => p.line)).toEqual([...report.problems.map((p) => p.line)].sort((a, b) => a - b))
  })
})
