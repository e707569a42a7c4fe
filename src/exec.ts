/**
 * The one way aegis-kit runs a program: node:child_process alone, collecting its output, with
 * its lines streamed for progress and cancellation by AbortSignal. execa took ~130-190 ms to
 * import (this module ~14 ms), and `run` would pay that before every boot (its hooks, the guest
 * and the root disk are the only programs it runs on the way; docs/performance.md).
 */
import {spawn} from 'node:child_process'
import {existsSync} from 'node:fs'
import path from 'node:path'
import {StringDecoder} from 'node:string_decoder'

export interface ExecResult {
  /** Without the final newline, as a shell's $(...) gives it. */
  stdout: string
  stderr: string
  /** stdout and stderr interleaved as they arrived (when `all` was asked for), without the final newline. */
  all?: string
  /** null when a signal ended the program. */
  exitCode: number | null
  signal: NodeJS.Signals | null
  /** Killed (SIGKILL) because it ran past `timeoutMs`. */
  timedOut: boolean
  /** Ended because `signal` was aborted. */
  canceled: boolean
}

export interface ExecOptions {
  cwd?: string
  /** The program's whole environment when given (nothing of ours is added); ours otherwise. */
  env?: NodeJS.ProcessEnv
  /** Written to its stdin; stdin is closed either way. */
  input?: string
  timeoutMs?: number
  /** Bytes kept of each of stdout and stderr (and of `all`); the rest is dropped. Default 32 MiB. */
  maxBuffer?: number
  /** Also keep stdout and stderr interleaved, in `all`: what a failed tool's last lines are read from. */
  all?: boolean
  /** Each line of stdout and stderr as it arrives, without its line ending: progress for the user. */
  onLine?: (line: string) => void
  /** Aborting ends the program with `killSignal`, and with SIGKILL if it is still there 5 s later. */
  signal?: AbortSignal
  /** Default SIGTERM. */
  killSignal?: NodeJS.Signals
}

/** How long a canceled program may take to exit after `killSignal` before it gets SIGKILL. */
const FORCE_KILL_AFTER_MS = 5000

/** Runs `file` with `args`. Rejects only when it cannot start (e.g. ENOENT); otherwise look at exitCode. */
export function execFileText(file: string, args: string[], options: ExecOptions = {}): Promise<ExecResult> {
  const maxBuffer = options.maxBuffer ?? 32 * 1024 * 1024
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {cwd: options.cwd, env: options.env, stdio: ['pipe', 'pipe', 'pipe']})
    const all = options.all ? new OutputBuffer(maxBuffer) : undefined
    const stdout = collectOutput(child.stdout, maxBuffer, all, options.onLine)
    const stderr = collectOutput(child.stderr, maxBuffer, all, options.onLine)
    let timedOut = false
    let canceled = false
    const timer =
      options.timeoutMs === undefined
        ? undefined
        : setTimeout(() => {
            timedOut = true
            child.kill('SIGKILL')
          }, options.timeoutMs)
    let forceKill: NodeJS.Timeout | undefined
    const cancel = () => {
      canceled = true
      child.kill(options.killSignal ?? 'SIGTERM')
      forceKill = setTimeout(() => child.kill('SIGKILL'), FORCE_KILL_AFTER_MS)
      forceKill.unref()
    }
    const settle = () => {
      clearTimeout(timer)
      clearTimeout(forceKill)
      options.signal?.removeEventListener('abort', cancel)
    }
    if (options.signal?.aborted) cancel()
    else options.signal?.addEventListener('abort', cancel, {once: true})
    child.once('error', (error) => {
      settle()
      reject(error)
    })
    child.once('close', (exitCode, signal) => {
      settle()
      resolve({
        stdout: stdout(),
        stderr: stderr(),
        ...(all ? {all: all.text()} : {}),
        exitCode,
        signal,
        timedOut,
        canceled,
      })
    })
    child.stdin?.on('error', () => undefined) // a program that exits without reading its input
    child.stdin?.end(options.input)
  })
}

/** Keeps a stream's output (and adds it to `all`), passing its lines to `onLine`; returns its text so far. */
function collectOutput(
  stream: NodeJS.ReadableStream | null,
  maxBuffer: number,
  all: OutputBuffer | undefined,
  onLine: ExecOptions['onLine'],
): () => string {
  const kept = new OutputBuffer(maxBuffer)
  const lines = onLine ? new LineSplitter(onLine) : undefined
  stream?.on('data', (chunk: Buffer) => {
    kept.add(chunk)
    all?.add(chunk)
    lines?.add(chunk)
  })
  stream?.on('end', () => lines?.end())
  return () => kept.text()
}

/** Output kept up to a limit, the rest dropped. */
class OutputBuffer {
  private readonly chunks: Buffer[] = []
  private kept = 0

  constructor(private readonly limit: number) {}

  add(chunk: Buffer): void {
    if (this.kept >= this.limit) return
    this.chunks.push(chunk.subarray(0, this.limit - this.kept))
    this.kept += chunk.length
  }

  text(): string {
    return Buffer.concat(this.chunks)
      .toString('utf8')
      .replace(/\r?\n$/, '')
  }
}

/** Cuts a stream's chunks into lines, a character or a line split across chunks included. */
class LineSplitter {
  private readonly decoder = new StringDecoder('utf8')
  private partial = ''

  constructor(private readonly onLine: (line: string) => void) {}

  add(chunk: Buffer): void {
    const lines = (this.partial + this.decoder.write(chunk)).split('\n')
    this.partial = lines.pop() ?? ''
    for (const line of lines) this.onLine(line.replace(/\r$/, ''))
  }

  end(): void {
    const rest = this.partial + this.decoder.end()
    this.partial = ''
    if (rest !== '') this.onLine(rest.replace(/\r$/, ''))
  }
}

/** Where `name` is on PATH, if anywhere. */
export function findOnPath(name: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    if (dir && existsSync(path.join(dir, name))) return path.join(dir, name)
  }
  return undefined
}
