/**
 * Write leases: a blob pushed by an import or a pull is unreferenced until the final tag, so a
 * prune running at that moment would delete it. While a lease is held, a marker file
 * `.tmp/<pid>-<random>.lease` exists; prune keeps every unreferenced blob modified after the
 * oldest live lease started (blob writes and re-pushes of present blobs refresh the mtime).
 * A lease of a killed process is dead (its pid is gone) and prune deletes the marker.
 */
import {mkdir, open, readdir, stat, unlink} from 'node:fs/promises'
import {join} from 'node:path'
import {errorCode, tempFileName, tempFileOwner} from '../fs-util.js'
import {processAlive} from '../process-identity.js'
import type {StorePaths} from './paths.js'

export const LEASE_SUFFIX = '.lease'

export async function withWriteLease<T>(paths: StorePaths, action: () => Promise<T>): Promise<T> {
  await mkdir(paths.tmpDir, {recursive: true})
  const marker = join(paths.tmpDir, tempFileName(LEASE_SUFFIX))
  await (await open(marker, 'wx', 0o644)).close()
  try {
    return await action()
  } finally {
    await unlink(marker).catch(() => undefined)
  }
}

/**
 * The start time (ms) of the oldest live lease, or undefined when none is live. Markers of dead
 * processes are deleted on the way.
 */
export async function oldestLiveLease(paths: StorePaths): Promise<number | undefined> {
  let names: string[]
  try {
    names = await readdir(paths.tmpDir)
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined
    throw error
  }
  let oldest: number | undefined
  for (const name of names.filter((entry) => entry.endsWith(LEASE_SUFFIX))) {
    const path = join(paths.tmpDir, name)
    const owner = tempFileOwner(name)
    if (owner === undefined || !processAlive(owner)) {
      await unlink(path).catch(() => undefined)
      continue
    }
    const started = await stat(path).then(
      (info) => info.mtimeMs,
      () => undefined,
    )
    if (started !== undefined && (oldest === undefined || started < oldest)) oldest = started
  }
  return oldest
}
