/**
 * Running a program to completion and collecting its output, with node:child_process alone:
 * execa takes about 100 ms to load, and `run` would pay that before every boot (its hooks, the
 * guest and the root disk are the only programs it runs on the way; docs/performance.md).
 */
import {spawn} from 'node:child_process'
import {existsSync} from 'node:fs'
import path from 'node:path'

export interface ExecResult {
  /** Without the final newline, as a shell's $(...) gives it. */
  stdout: string
  stderr: string
  /** null when a signal ended the program. */
  exitCode: number | null
  signal: NodeJS.Signals | null
  /** Killed (SIGKILL) because it ran past `timeoutMs`. */
  timedOut: boolean
}

export interface ExecOptions {
  cwd?: string
  /** The program's whole environment when given (nothing of ours is added); ours otherwise. */
  env?: NodeJS.ProcessEnv
  /** Written to its stdin; stdin is closed either way. */
  input?: string
  timeoutMs?: number
  /** Bytes kept of each of stdout and stderr; the rest is dropped. Default 32 MiB. */
  maxBuffer?: number
}

/** Runs `file` with `args`. Rejects only when it cannot start (e.g. ENOENT); otherwise look at exitCode. */
export function execFileText(file: string, args: string[], options: ExecOptions = {}): Promise<ExecResult> {
  const maxBuffer = options.maxBuffer ?? 32 * 1024 * 1024
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {cwd: options.cwd, env: options.env, stdio: ['pipe', 'pipe', 'pipe']})
    const collect = (stream: NodeJS.ReadableStream | null) => {
      const chunks: Buffer[] = []
      let kept = 0
      stream?.on('data', (chunk: Buffer) => {
        if (kept >= maxBuffer) return
        chunks.push(chunk.subarray(0, maxBuffer - kept))
        kept += chunk.length
      })
      return () => Buffer.concat(chunks).toString('utf8').replace(/\r?\n$/, '')
    }
    const stdout = collect(child.stdout)
    const stderr = collect(child.stderr)
    let timedOut = false
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => {
      timedOut = true
      child.kill('SIGKILL')
    }, options.timeoutMs)
    child.once('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    child.once('close', (exitCode, signal) => {
      clearTimeout(timer)
      resolve({stdout: stdout(), stderr: stderr(), exitCode, signal, timedOut})
    })
    child.stdin?.on('error', () => undefined) // a program that exits without reading its input
    child.stdin?.end(options.input)
  })
}

/** Where `name` is on PATH, if anywhere. */
export function findOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(path.join(dir, name))) return path.join(dir, name)
  }
  return undefined
}
