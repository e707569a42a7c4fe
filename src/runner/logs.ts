/** `aegis-kit logs`: a detached instance's console.log, optionally followed as it grows. */
import {open, stat} from 'node:fs/promises'
import {AegisError} from '../errors.js'
import {processAlive} from '../process-identity.js'
import type {InstanceRegistry} from './instances.js'

export interface FollowOptions {
  follow: boolean
  /** Start with only the last N lines. */
  tail?: number
  signal: AbortSignal
  write: (text: string) => void
}

const POLL_MS = 250

export async function followLog(registry: InstanceRegistry, name: string, options: FollowOptions): Promise<void> {
  const entry = await registry.get(name)
  const file = registry.logFile(name)
  const size = await stat(file).then(
    (s) => s.size,
    () => undefined,
  )
  if (size === undefined) {
    throw new AegisError(
      `${name} keeps no log: it runs in the foreground, and its output goes to the terminal that started it`,
      {
        hint: 'start it with aegis-kit run KIT --detach to keep its output in a log',
      },
    )
  }
  const handle = await open(file, 'r')
  try {
    let position = options.tail === undefined ? 0 : await tailOffset(handle, size, options.tail)
    const buffer = Buffer.alloc(64 * 1024)
    let exited = false
    for (;;) {
      const {bytesRead} = await handle.read(buffer, 0, buffer.length, position)
      if (bytesRead > 0) {
        options.write(buffer.subarray(0, bytesRead).toString('utf8'))
        position += bytesRead
        continue
      }
      if (!options.follow || options.signal.aborted || exited) return
      // Seen gone: read to the end once more, for the last lines it wrote after the read above.
      if (!processAlive(entry.pid, entry.pidStart)) {
        exited = true
        continue
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS))
    }
  } finally {
    await handle.close()
  }
}

/** The byte offset where the last `lines` lines of the file begin. */
async function tailOffset(handle: Awaited<ReturnType<typeof open>>, size: number, lines: number): Promise<number> {
  if (lines === 0) return size
  const chunk = 64 * 1024
  let end = size
  let seen = 0
  // A final newline ends the last line; it does not start another.
  let skipFinalNewline = true
  while (end > 0) {
    const start = Math.max(0, end - chunk)
    const buffer = Buffer.alloc(end - start)
    await handle.read(buffer, 0, buffer.length, start)
    for (let i = buffer.length - 1; i >= 0; i--) {
      if (buffer[i] !== 0x0a) {
        skipFinalNewline = false
        continue
      }
      if (skipFinalNewline) {
        skipFinalNewline = false
        continue
      }
      if (++seen === lines) return start + i + 1
    }
    end = start
  }
  return 0
}
