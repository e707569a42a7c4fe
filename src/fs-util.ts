/** Small filesystem helpers shared by the store and the modules beside it (errors, atomic writes, pid-named temp files). */
import type {Stats} from 'node:fs'
import {open, rename, stat, unlink} from 'node:fs/promises'
import {dirname, isAbsolute, relative} from 'node:path'
import {randomBytes} from 'node:crypto'

/** Whether `candidate` is `root` or lies under it (lexically: symlinks are not followed). */
export function isInside(root: string, candidate: string): boolean {
  const rest = relative(root, candidate)
  return rest === '' || (!rest.startsWith('..') && !isAbsolute(rest))
}

/** The `code` of a Node system error (`ENOENT`, `EEXIST`, ...), if any. */
export function errorCode(error: unknown): string | undefined {
  if (typeof error === 'object' && error !== null && 'code' in error && typeof error.code === 'string')
    return error.code
  return undefined
}

/** `stat`, or undefined when nothing is there. */
export async function statIfExists(path: string): Promise<Stats | undefined> {
  try {
    return await stat(path)
  } catch (error) {
    if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') return undefined
    throw error
  }
}

/**
 * Name of a temp file owned by this process: `<pid>-<random><suffix>`. Prune recognises temp
 * files of dead processes by the pid prefix.
 */
export function tempFileName(suffix: string): string {
  return `${process.pid}-${randomBytes(8).toString('hex')}${suffix}`
}

/** The pid encoded in a temp file name, if it has one. */
export function tempFileOwner(fileName: string): number | undefined {
  const match = /^(\d+)-/.exec(fileName)
  return match?.[1] === undefined ? undefined : Number(match[1])
}

/** Writes `data` to `path` through a synced temp file and a rename: readers see old or new, never half. */
export async function writeFileAtomically(path: string, data: string | Buffer, tempDir = dirname(path)): Promise<void> {
  const temp = `${tempDir}/${tempFileName('.write')}`
  const handle = await open(temp, 'wx', 0o644)
  try {
    await handle.writeFile(data)
    await handle.sync()
  } catch (error) {
    await handle.close().catch(() => undefined)
    await unlink(temp).catch(() => undefined)
    throw error
  }
  await handle.close()
  try {
    await rename(temp, path)
  } catch (error) {
    await unlink(temp).catch(() => undefined)
    throw error
  }
  await syncDirectory(dirname(path))
}

/** Makes a rename durable. Best effort: some filesystems refuse to open directories. */
export async function syncDirectory(dir: string): Promise<void> {
  try {
    const handle = await open(dir, 'r')
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }
  } catch {
    // Durability only; the rename itself already happened.
  }
}
