// A typo'd command names the one meant and exits at once, with or without a terminal; shell
// completion sets itself up and completes commands and flags in a real bash.
import {mkdtempSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {execa} from 'execa'
import {describe, expect, it} from 'vitest'
import {binRun, repoRoot, runCli} from '../helpers/cli.js'

describe('a command that does not exist', () => {
  it('names the closest command and exits 127 without waiting for input (stdin a pipe left open)', async () => {
    const started = Date.now()
    const result = await runCli(['biuld', 'hello'], {timeout: 15_000})
    expect(result.exitCode).toBe(127)
    expect(result.stderr).toContain('Error: biuld is not an aegis-kit command. Did you mean build?')
    expect(result.stdout).toBe('')
    expect(Date.now() - started).toBeLessThan(10_000)
  })

  it('does not prompt on a terminal either', async () => {
    // script(1) gives the CLI a pseudo-terminal for stdin and stdout; a prompt would wait here.
    const result = await execa('script', ['-qfec', `${process.execPath} ${binRun} psuh`, '/dev/null'], {
      cwd: repoRoot,
      reject: false,
      timeout: 15_000,
    })
    expect(result.timedOut).toBe(false)
    expect(result.exitCode).toBe(127)
    expect(String(result.stdout)).toContain('psuh is not an aegis-kit command. Did you mean push?')
  })

  it('suggests within a topic, and nothing for a word that is no typo', async () => {
    const inTopic = await runCli(['hooks', 'rendr-env'], {timeout: 15_000})
    expect(inTopic.stderr).toContain('Did you mean hooks render-env?')
    const unrelated = await runCli(['frobnicate'], {timeout: 15_000})
    expect(unrelated.exitCode).toBe(127)
    expect(unrelated.stderr).toContain('frobnicate is not an aegis-kit command.\n')
    expect(unrelated.stderr).not.toContain('Did you mean')
  })
})

describe('autocomplete', () => {
  it('prints the setup instructions, and the completion it sets up completes commands and flags', async () => {
    const cache = mkdtempSync(path.join(tmpdir(), 'aegis-ac-'))
    const env = {XDG_CACHE_HOME: cache}
    const instructions = await runCli(['autocomplete', 'bash'], {env, timeout: 30_000})
    expect(instructions.exitCode).toBe(0)
    expect(instructions.stdout).toContain('aegis-kit autocomplete script bash')

    const setupLine = await runCli(['autocomplete', 'script', 'bash'], {env, timeout: 30_000})
    expect(setupLine.stdout).toContain(path.join(cache, 'aegis-kit', 'autocomplete', 'bash_setup'))
    const complete = (words: string[]) =>
      [
        `COMP_WORDS=(${words.join(' ')}); COMP_CWORD=${words.length - 1}; COMP_LINE='${words.join(' ')}'`,
        '_aegis-kit_autocomplete; echo "${COMPREPLY[*]}"',
      ].join('; ')
    const bash = await execa('bash', [
      '-c',
      [
        `source ${path.join(cache, 'aegis-kit', 'autocomplete', 'bash_setup')}`,
        complete(['aegis-kit', 'bui']),
        complete(['aegis-kit', 'build', '--no-c']),
        complete(['aegis-kit', 'images', 'pu']),
      ].join('\n'),
    ])
    expect(String(bash.stdout).split('\n')).toEqual(['build', '--no-cache', 'pull push'])
  })
})
