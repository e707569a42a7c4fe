/** Runs the external tools a build drives (mmdebstrap, npm) with errors that say what failed and how to fix it. */
import {AegisError} from '../errors.js'

export interface ToolOptions {
  env?: Record<string, string>
  cwd?: string
  hint?: string
  /** Each output line, for progress. */
  onLine?: (line: string) => void
  signal?: AbortSignal
}

export async function runTool(command: string, args: string[], options: ToolOptions = {}): Promise<string> {
  // Loaded on the first tool run: `run` checks a cached build on its critical path and runs none.
  const {execa} = await import('execa')
  const child = execa(command, args, {env: options.env, cwd: options.cwd, all: true, reject: false, cancelSignal: options.signal, buffer: true})
  if (options.onLine) {
    child.all?.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) if (line.trim() !== '') options.onLine!(line)
    })
  }
  const result = await child
  if ((result as {code?: string}).code === 'ENOENT') {
    throw new AegisError(`${command} is not installed`, {hint: `${options.hint ? `${options.hint}; ` : ''}run \`aegis-kit doctor\` to check the rest`})
  }
  if (result.isCanceled) throw new AegisError(`${command} was interrupted`)
  if (result.exitCode !== 0) {
    const tail = String(result.all ?? '').trim().split('\n').slice(-6).join('\n  ')
    throw new AegisError(`${command} failed (exit ${result.exitCode ?? result.signal}):\n  ${tail}`, {hint: options.hint})
  }
  return String(result.stdout ?? '')
}
