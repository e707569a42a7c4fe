/** Running `aegis-kit run` as a user does, watching its output, and checking what it leaves behind. */
import {mkdtempSync, readdirSync, readFileSync, symlinkSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {execa, type ResultPromise} from 'execa'
import {binRun, repoRoot} from '../helpers/cli.js'

export interface RunningCli {
  child: ResultPromise
  output: () => string
  /** Resolves with the first match of `pattern` in stdout+stderr, or rejects after `timeoutMs`. */
  waitFor: (pattern: RegExp, timeoutMs: number) => Promise<RegExpMatchArray>
}

export function startRun(args: string[], env: Record<string, string>): RunningCli {
  const child = execa(process.execPath, [binRun, 'run', ...args], {
    cwd: repoRoot,
    env,
    reject: false,
    all: true,
    buffer: true,
  })
  let text = ''
  child.all?.on('data', (chunk: Buffer) => {
    text += chunk.toString('utf8')
  })
  const waitFor = async (pattern: RegExp, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const match = text.match(pattern)
      if (match) return match
      if (child.exitCode !== null || Date.now() > deadline)
        throw new Error(`no ${pattern} in the output of aegis-kit run:\n${text.slice(-3000)}`)
      await new Promise((resolve) => setTimeout(resolve, 200))
    }
  }
  return {child, output: () => text, waitFor}
}

/** Every process below `pid` (qemu, virtiofsd, gvproxy, the watchdog). */
export function descendants(pid: number): number[] {
  const parents = new Map<number, number>()
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      parents.set(Number(entry), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]))
    } catch {
      // exited meanwhile
    }
  }
  const found: number[] = []
  const queue = [pid]
  while (queue.length > 0) {
    const parent = queue.shift()!
    for (const [child, ppid] of parents) {
      if (ppid === parent && !found.includes(child)) {
        found.push(child)
        queue.push(child)
      }
    }
  }
  return found
}

export function alive(pids: number[]): number[] {
  return pids.filter((pid) => {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
      return !/\) Z /.test(stat) // a zombie is gone, only not yet reaped
    } catch {
      return false
    }
  })
}

export async function waitGone(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs
  while (alive(pids).length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 200))
  return alive(pids)
}

export async function commandLines(pids: number[]): Promise<string[]> {
  return pids.flatMap((pid) => {
    try {
      return [readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ')]
    } catch {
      return []
    }
  })
}

/**
 * A PATH for a machine that lacks `missing`: a directory linking every program in /usr/bin
 * except those, then /usr/sbin (on Debian 12, /bin and /sbin are links to these two).
 */
export function pathWithout(...missing: string[]): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'aegis-kit-path-'))
  for (const name of readdirSync('/usr/bin'))
    if (!missing.includes(name)) symlinkSync(path.join('/usr/bin', name), path.join(dir, name))
  return `${dir}:/usr/sbin`
}

/** An empty directory, e.g. for a search path that must find nothing. */
export function emptyDir(): string {
  return mkdtempSync(path.join(tmpdir(), 'aegis-kit-empty-'))
}

/**
 * Live processes whose environment holds `NAME=value`: every helper `run` starts (qemu,
 * virtiofsd, gvproxy, apt-get, the watchdog) inherits the CLI's environment, so a marker set for
 * one CLI run finds whatever that run left behind.
 */
function processesWithEnv(entry: string): number[] {
  return alive(
    readdirSync('/proc')
      .filter((name) => /^\d+$/.test(name) && Number(name) !== process.pid)
      .map(Number)
      .filter((pid) => {
        try {
          return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(entry)
        } catch {
          return false // exited meanwhile, or not ours to read
        }
      }),
  )
}

/**
 * The processes with `entry` in their environment that are still alive after `graceMs`: a
 * helper's own children die with its process group, but a moment after the CLI saw it exit.
 */
export function lingeringWithEnv(entry: string, graceMs = 2000): Promise<number[]> {
  return waitGone(processesWithEnv(entry), graceMs)
}

/** Every file under `dir` containing `needle` (binary-safe): where a secret must never be. */
export function filesContaining(dir: string, needle: string): string[] {
  const found: string[] = []
  const walk = (current: string) => {
    for (const entry of readdirSync(current, {withFileTypes: true})) {
      const full = path.join(current, entry.name)
      if (entry.isDirectory()) walk(full)
      else if (entry.isFile() && readFileSync(full).includes(needle)) found.push(full)
    }
  }
  walk(dir)
  return found
}

export {execa}

export {freePort} from '../helpers/registry.js'
