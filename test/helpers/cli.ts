/** Runs the built CLI (bin/run.js) the way a user does, and collects what it printed. */
import {fileURLToPath} from 'node:url'
import {execa, type Options} from 'execa'

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url))
export const binRun = fileURLToPath(new URL('../../bin/run.js', import.meta.url))

export interface CliResult {
  exitCode: number
  stdout: string
  stderr: string
  /** stdout and stderr together, for "never printed anywhere" checks. */
  all: string
}

export async function runCli(
  args: string[],
  options: Omit<Options, 'node'> & {node?: string} = {},
): Promise<CliResult> {
  const {node, ...rest} = options
  const result = await execa(node ?? process.execPath, [binRun, ...args], {
    reject: false,
    cwd: repoRoot,
    all: true,
    timeout: 120_000,
    ...rest,
  })
  return {
    exitCode: result.exitCode ?? -1,
    stdout: String(result.stdout),
    stderr: String(result.stderr),
    all: String(result.all),
  }
}

/** Lines that only a stack trace prints. */
export function hasStackTrace(text: string): boolean {
  return /^\s+at .+(\(|:\d+:\d+)/m.test(text) || /node:internal/.test(text)
}

/** Runs the CLI on a pseudo-terminal (script(1)); returns what the terminal received, with \r\n as \n. */
export async function onTerminal(
  args: string[],
  home: string,
  timeoutMs = 300_000,
): Promise<{exitCode: number; screen: string}> {
  const command = [process.execPath, binRun, ...args].map((word) => `'${word}'`).join(' ')
  const result = await execa('script', ['-qfec', command, '/dev/null'], {
    cwd: repoRoot,
    env: {AEGIS_KIT_HOME: home},
    reject: false,
    timeout: timeoutMs,
  })
  return {exitCode: result.exitCode ?? -1, screen: String(result.stdout).replaceAll('\r\n', '\n')}
}

/** The lines left on a terminal once every live line has been redrawn over. */
export function finalLines(screen: string): string[] {
  return screen.split('\n').map((line) =>
    line
      .split('\r')
      .at(-1)!
      .replace(/^\x1b\[K/, ''),
  )
}
