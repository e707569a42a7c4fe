/** One line of `aegis-kit doctor`: a part of the machine, what was found, and how to fix it. */

/**
 * OK: works. WARN: works with a limitation, or only some commands need it (arm64 builds,
 * registries with a credential helper). MISSING: absent or unusable, and `run` or `build` needs it.
 */
export type CheckStatus = 'OK' | 'WARN' | 'MISSING'

export interface Check {
  /** What was checked, e.g. "qemu", "gvproxy", "store". */
  part: string
  status: CheckStatus
  /** What was found: a version and a path, or what is wrong. */
  found: string
  /** The command or step that makes it OK on this platform; only when it is not OK. */
  fix?: string
}

export function ok(part: string, found: string): Check {
  return {part, status: 'OK', found}
}

export function warn(part: string, found: string, fix: string): Check {
  return {part, status: 'WARN', found, fix}
}

export function missing(part: string, found: string, fix: string): Check {
  return {part, status: 'MISSING', found, fix}
}

/** The first line a program printed, without its trailing copyright lines. */
export function firstLine(text: string): string {
  return text.trim().split('\n')[0]?.trim() ?? ''
}
