/**
 * When a kit's image says it was created, without giving up reproducibility: a time that depends
 * only on the kit, never on when the build ran (as ko and apko read SOURCE_DATE_EPOCH).
 *
 * - `git`: the kit is in a git work tree with nothing uncommitted under its directory: the time of
 *   the last commit that touched it. The same checkout gives the same time on every machine.
 * - `files`: otherwise, the newest modification time of the kit's files: the same while the
 *   files are untouched, and later after any edit.
 *
 * aegis-kit.lock.json counts in neither: the build itself writes it, so counting it would make
 * the second build of a fresh kit differ from the first.
 */
import {execFile} from 'node:child_process'
import {lstat, readdir} from 'node:fs/promises'
import path from 'node:path'
import {promisify} from 'node:util'
import {LOCK_FILE} from './lock.js'

export type SourceDateOrigin = 'SOURCE_DATE_EPOCH' | 'git' | 'files'

export interface SourceDate {
  /** Seconds since the Unix epoch. */
  epoch: number
  from: SourceDateOrigin
}

/** Directories that are version control, not kit. */
const NOT_KIT = new Set(['.git', '.hg', '.svn'])

export async function kitSourceDate(kitDir: string): Promise<SourceDate> {
  const committed = await lastCommitTime(kitDir)
  if (committed !== undefined) return {epoch: committed, from: 'git'}
  return {epoch: await newestFileTime(kitDir), from: 'files'}
}

/** `2026-11-22T08:46:50Z (the kit's last commit)`: how build output names the time and its origin. */
export function describeSourceDate(created: string, from: SourceDateOrigin): string {
  const origin = {SOURCE_DATE_EPOCH: 'SOURCE_DATE_EPOCH', git: "the kit's last commit", files: "the kit's newest file"}[
    from
  ]
  return `${created.replace(/\.000Z$/, 'Z')} (${origin})`
}

async function lastCommitTime(kitDir: string): Promise<number | undefined> {
  const git = async (...args: string[]) =>
    (await promisify(execFile)('git', ['-C', kitDir, ...args], {encoding: 'utf8'})).stdout
  try {
    const [status, time] = await Promise.all([
      git('status', '--porcelain', '--untracked-files=all', '--', '.'),
      git('log', '-1', '--format=%ct', '--', '.'),
    ])
    const changed = status.split('\n').filter((line) => line !== '' && path.basename(line.slice(3)) !== LOCK_FILE)
    return changed.length === 0 && /^\d+$/.test(time.trim()) ? Number(time.trim()) : undefined
  } catch {
    return undefined // not a git work tree, or no git on this machine
  }
}

async function newestFileTime(dir: string): Promise<number> {
  let newest = 0
  for (const entry of await readdir(dir, {withFileTypes: true})) {
    if (NOT_KIT.has(entry.name) || entry.name === LOCK_FILE) continue
    const full = path.join(dir, entry.name)
    const time = entry.isDirectory() ? await newestFileTime(full) : Math.floor((await lstat(full)).mtimeMs / 1000)
    newest = Math.max(newest, time)
  }
  return newest
}
