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

export async function runCli(args: string[], options: Omit<Options, 'node'> & {node?: string} = {}): Promise<CliResult> {
  const {node, ...rest} = options
  const result = await execa(node ?? process.execPath, [binRun, ...args], {reject: false, cwd: repoRoot, all: true, timeout: 120_000, ...rest})
  return {exitCode: result.exitCode ?? -1, stdout: String(result.stdout), stderr: String(result.stderr), all: String(result.all)}
}

/** Lines that only a stack trace prints. */
export function hasStackTrace(text: string): boolean {
  return /^\s+at .+(\(|:\d+:\d+)/m.test(text) || /node:internal/.test(text)
}
