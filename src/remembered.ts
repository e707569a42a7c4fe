/** Answers that cost a process or more, kept in a file between commands. */
import {mkdir, readFile, rename, writeFile} from 'node:fs/promises'
import path from 'node:path'

export interface RememberOptions<T> {
  /** Whether a kept value still holds, given when it was computed (ms since the epoch). Default: it does. */
  stillValid?: (value: T, savedAt: number) => boolean
}

/**
 * `compute()`, remembered in `memoFile` for as long as `stamp` (what the answer depends on: file
 * sizes and times, a boot id) stays the same. An unreadable file means computing again.
 */
export async function remembered<T>(
  memoFile: string,
  stamp: string,
  compute: () => Promise<T>,
  options: RememberOptions<T> = {},
): Promise<T> {
  try {
    const saved = JSON.parse(await readFile(memoFile, 'utf8')) as {stamp: string; value: T; savedAt?: number}
    if (
      saved.stamp === stamp &&
      saved.value !== undefined &&
      (options.stillValid?.(saved.value, saved.savedAt ?? 0) ?? true)
    )
      return saved.value
  } catch {
    // not computed yet, or unreadable: compute it
  }
  const value = await compute()
  await mkdir(path.dirname(memoFile), {recursive: true})
  await writeFile(`${memoFile}.${process.pid}`, JSON.stringify({stamp, value, savedAt: Date.now()}))
  await rename(`${memoFile}.${process.pid}`, memoFile)
  return value
}
