/**
 * Temp directories that name their owner: `<label>-<pid>@<start>-<random>`, where start is the
 * owner's start time (field 22 of /proc/PID/stat, as src/runner/instances.ts records for an
 * instance), so a pid that a later process reuses is not taken for the owner. A killed command
 * leaves its temp directories behind (a Debian base's scratch is ~118 MB); `sweepStaleTempDirs`
 * removes those whose owner is gone, never a live one's, and never one with a mount under it:
 * deleting through a bind mount deletes the files of the host directory it shows.
 */
import {lstat, readdir, readFile, realpath, rm} from 'node:fs/promises'
import {join} from 'node:path'
import {randomBytes} from 'node:crypto'
import {errorCode, tempFileOwner} from '../fs-util.js'
import {processAlive, processStartTime} from '../process-identity.js'

interface TempOwner {
  pid: number
  /** Undefined for names without one: the store's older `<pid>-<random>` temp names. */
  start?: string
}

export interface SweptTempDirs {
  removed: Array<{path: string; size: number}>
  /** Entries of dead owners kept because something is mounted under them. */
  kept: Array<{path: string; reason: string}>
}

/** A fresh name for a temp directory of this process, e.g. `base-4242@981234-9f1c0e2a7b3d4c5e`. */
export function ownedTempName(label: string): string {
  return `${label}-${process.pid}@${processStartTime(process.pid) ?? ''}-${randomBytes(8).toString('hex')}`
}

/** Who made the entry `name`: its pid (and start time), or undefined when the name does not say. */
function tempDirOwner(name: string): TempOwner | undefined {
  const match = /-(\d+)@(\d*)-[0-9a-f]+$/.exec(name)
  if (match) return {pid: Number(match[1]), ...(match[2] ? {start: match[2]} : {})}
  const pid = tempFileOwner(name)
  return pid === undefined ? undefined : {pid}
}

/**
 * Removes the entries of `parent` whose owner is dead. Entries that name no owner are left
 * alone: nothing says whether their owner still runs.
 */
export async function sweepStaleTempDirs(parent: string): Promise<SweptTempDirs> {
  const swept: SweptTempDirs = {removed: [], kept: []}
  let names: string[]
  try {
    names = await readdir(parent)
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return swept
    throw error
  }
  const stale = names.filter((name) => {
    const owner = tempDirOwner(name)
    return owner !== undefined && !processAlive(owner.pid, owner.start)
  })
  if (stale.length === 0) return swept
  const mountPoints = await readMountPoints()
  for (const name of stale) {
    const path = join(parent, name)
    const real = await realpath(path).catch(() => undefined)
    if (real === undefined) continue
    const mounted = mountPoints.find((point) => point === real || point.startsWith(`${real}/`))
    if (mounted) {
      swept.kept.push({
        path,
        reason: `${mounted} is mounted under it; unmount it (umount --recursive --lazy) and prune again`,
      })
      continue
    }
    const size = await treeSize(path)
    await rm(path, {recursive: true, force: true})
    swept.removed.push({path, size})
  }
  return swept
}

/** Mount points as this process's mount namespace sees them (mountinfo escapes space, tab, newline and \ in octal). */
async function readMountPoints(): Promise<string[]> {
  // Without /proc (not Linux) nothing of aegis-kit's mounts anything.
  const text = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '')
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) =>
      line.split(' ')[4].replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8))),
    )
}

/** Bytes in the files under `path`, symlinks not followed. */
async function treeSize(path: string): Promise<number> {
  const info = await lstat(path).catch(() => undefined)
  if (!info?.isDirectory()) return info?.size ?? 0
  let total = 0
  for (const name of await readdir(path).catch(() => [])) total += await treeSize(join(path, name))
  return total
}
