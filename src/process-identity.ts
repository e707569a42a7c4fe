/**
 * Whether a process recorded earlier is still that process: its pid alive, and, when its start
 * time was recorded too, started at that time (a pid reused by another process is not it).
 */
import {readFileSync} from 'node:fs'

/** The process's start time (in clock ticks since boot, as /proc gives it), or undefined when it is gone. */
export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // The command name (field 2) may hold spaces and parentheses: count fields after its last ')'.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

/** Alive, and (with `startTime`) the same process that was recorded. EPERM: alive, someone else's. */
export function processAlive(pid: number, startTime?: string): boolean {
  try {
    process.kill(pid, 0)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false
  }
  if (startTime === undefined) return true
  const now = processStartTime(pid)
  return now === undefined || now === startTime
}
