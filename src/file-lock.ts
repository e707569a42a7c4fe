/**
 * A cross-process lock (the store's index.json, kits/refs.json, trust records): a lock file
 * created with O_EXCL that holds `pid hostname nonce`. A lock whose process is gone (killed
 * mid-command) is stale and is broken by the next command. Locks held on another host (a shared
 * filesystem) are never broken automatically; the error names the file to delete.
 */
import {randomUUID} from 'node:crypto'
import {link, open, readFile, rename, stat, unlink} from 'node:fs/promises'
import {hostname} from 'node:os'
import {setTimeout as sleep} from 'node:timers/promises'
import {AegisError} from './errors.js'
import {errorCode} from './fs-util.js'
import {processAlive} from './process-identity.js'

export interface LockOptions {
  /** How long to wait for another command to finish before giving up. */
  timeoutMs?: number
}

/** A lock file still empty after this long belongs to a process that died between create and write. */
const EMPTY_LOCK_GRACE_MS = 5_000

export async function withFileLock<T>(
  lockPath: string,
  action: () => Promise<T>,
  options: LockOptions = {},
): Promise<T> {
  const token = `${process.pid} ${hostname()} ${randomUUID()}\n`
  await acquire(lockPath, token, options.timeoutMs ?? 30_000)
  try {
    return await action()
  } finally {
    await release(lockPath, token)
  }
}

async function acquire(lockPath: string, token: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (let attempt = 0; ; attempt++) {
    try {
      const handle = await open(lockPath, 'wx', 0o644)
      try {
        await handle.writeFile(token)
      } finally {
        await handle.close()
      }
      return
    } catch (error) {
      if (errorCode(error) !== 'EEXIST') throw lockError(lockPath, error)
    }
    const holder = await readLock(lockPath)
    if (holder === undefined) continue // released between our open and read: try again at once
    if (await isStale(lockPath, holder)) {
      await breakStaleLock(lockPath, holder)
      continue
    }
    if (Date.now() > deadline) {
      throw new AegisError(`the image store is busy: ${describeHolder(holder)} holds ${lockPath}`, {
        hint: `wait for that command to finish, or delete ${lockPath} if no aegis-kit command is running`,
      })
    }
    // Short waits first: index updates take milliseconds.
    await sleep(Math.min(5 + attempt * 5, 100) * (0.5 + Math.random()))
  }
}

async function release(lockPath: string, token: string): Promise<void> {
  // Only remove the file if it is still ours; never fail the command over it.
  const holder = await readLock(lockPath)
  if (holder === token) await unlink(lockPath).catch(() => undefined)
}

async function readLock(lockPath: string): Promise<string | undefined> {
  try {
    return await readFile(lockPath, 'utf8')
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined
    throw lockError(lockPath, error)
  }
}

async function isStale(lockPath: string, holder: string): Promise<boolean> {
  if (holder === '') {
    const info = await stat(lockPath).catch(() => undefined)
    return info !== undefined && Date.now() - info.mtimeMs > EMPTY_LOCK_GRACE_MS
  }
  const [pidText, host] = holder.trim().split(' ')
  const pid = Number(pidText)
  if (host !== hostname() || !Number.isInteger(pid) || pid <= 0) return false
  return !processAlive(pid)
}

/**
 * Moves the stale file aside and checks that what moved is the stale content we saw. If another
 * process broke it and locked again in between, its fresh lock is put back.
 */
async function breakStaleLock(lockPath: string, staleHolder: string): Promise<void> {
  const aside = `${lockPath}.stale-${randomUUID()}`
  try {
    await rename(lockPath, aside)
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return
    throw lockError(lockPath, error)
  }
  const moved = await readFile(aside, 'utf8').catch(() => staleHolder)
  if (moved !== staleHolder) await link(aside, lockPath).catch(() => undefined)
  await unlink(aside).catch(() => undefined)
}

function describeHolder(holder: string): string {
  const [pid, host] = holder.trim().split(' ')
  if (!pid) return 'another aegis-kit command'
  return host && host !== hostname() ? `process ${pid} on ${host}` : `process ${pid}`
}

function lockError(lockPath: string, cause: unknown): AegisError {
  return new AegisError(`cannot lock the image store (${lockPath}): ${(cause as Error).message}`, {
    hint: 'check that the store directory exists and is writable',
    cause,
  })
}
