/** Parsing and checking what `aegis-kit run` is given, each with a one-line error that says the fix. */
import {type Stats, statSync} from 'node:fs'
import {AegisError} from '../errors.js'
import type {Profile} from '../kit/manifest.generated.js'
import {sizeToMiB} from '../kit/units.js'

export interface ExposeMapping {
  hostPort: number
  guestPort: number
}

/** `HOST[:GUEST]`: the host port on 127.0.0.1 and the guest port (default: the same). */
export function parseExpose(text: string): ExposeMapping {
  const match = /^(\d{1,5})(?::(\d{1,5}))?$/.exec(text)
  const hostPort = Number(match?.[1])
  const guestPort = Number(match?.[2] ?? match?.[1])
  if (!match || !validPort(hostPort) || !validPort(guestPort)) {
    throw new AegisError(`--expose ${text}: expected HOST[:GUEST] ports (1-65535)`, {
      hint: 'e.g. --expose 18789 or --expose 8080:18789',
    })
  }
  return {hostPort, guestPort}
}

/** A profile's `exposes`, each published on the host port of the same number (as `--expose PORT`). */
export function profilePorts(profile: Profile | undefined): ExposeMapping[] {
  return (profile?.exposes ?? []).map((port) => ({hostPort: port, guestPort: port}))
}

function validPort(port: number): boolean {
  return Number.isInteger(port) && port >= 1 && port <= 65535
}

/** `K=V` for --env. */
export function parseEnv(text: string): [string, string] {
  const match = /^([A-Za-z_][A-Za-z0-9_]*)=(.*)$/s.exec(text)
  if (!match)
    throw new AegisError(`--env ${text.split('=')[0]}: expected NAME=VALUE`, {
      hint: 'e.g. --env LOG_LEVEL=debug (secrets go through --secret, never --env)',
    })
  return [match[1], match[2]]
}

/** The smallest VM aegis-kit boots: the guest kernel and harness alone need about this much. */
export const MIN_MEMORY_MIB = 128

export function parseMemory(text: string): number {
  const mib = sizeToMiB(text)
  if (mib === undefined)
    throw new AegisError(`--memory ${text}: not a size`, {hint: 'e.g. --memory 2048mb or --memory 2gb'})
  checkMemory(mib, `--memory ${text}`)
  return mib
}

export function checkMemory(mib: number, what: string): void {
  if (mib < MIN_MEMORY_MIB)
    throw new AegisError(`${what} is ${mib} MiB; a VM needs at least ${MIN_MEMORY_MIB} MiB`, {
      hint: 'give more memory, e.g. --memory 512mb',
    })
}

export function checkWorkspace(dir: string): void {
  let info: Stats
  try {
    info = statSync(dir)
  } catch {
    return // created on demand
  }
  if (!info.isDirectory())
    throw new AegisError(`--workspace ${dir} is not a directory`, {
      hint: 'give a directory (it is created when missing)',
    })
}
