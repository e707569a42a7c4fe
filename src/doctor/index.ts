/**
 * `aegis-kit doctor`: every part `run` and `build` rely on, probed for real (versions asked,
 * a foreign program run, the store's graphs walked, the KVM probe `run` uses), side by side.
 * Nothing is built and no VM boots but the accelerator's short test boot.
 */
import path from 'node:path'

import {LocalStore} from '../store/index.js'
import {defaultDataDir, defaultStoreRoot} from '../paths.js'
import type {Check} from './check.js'
import {checkCredentialHelpers, checkDisk, checkInstances, checkStore} from './data.js'
import {checkEmulation} from './emulation.js'
import {checkAccelerator, checkAptLists, checkGuestKernel} from './guest.js'
import {checkGvproxy, checkMke2fs, checkMmdebstrap, checkNode, checkQemu, checkVirtiofsd} from './host-tools.js'

export type {Check, CheckStatus} from './check.js'

export interface DoctorReport {
  /** False when a part `run` or `build` needs is MISSING. */
  ok: boolean
  checks: Check[]
}

export async function runDoctor(): Promise<DoctorReport> {
  const dataDir = defaultDataDir()
  const cacheDir = path.join(dataDir, 'cache')
  const store = new LocalStore(defaultStoreRoot())
  const guest = checkGuestKernel(store, path.join(cacheDir, 'guest'))
  const checks = await Promise.all([
    checkNode(),
    checkQemu(),
    guest.then(({guest: found}) => checkAccelerator(found, cacheDir)),
    checkVirtiofsd(),
    checkGvproxy(),
    checkMke2fs(),
    checkMmdebstrap(),
    checkEmulation(),
    checkAptLists(),
    guest.then(({check}) => check),
    checkDisk(dataDir),
    checkStore(store),
    checkInstances(dataDir),
    checkCredentialHelpers(),
  ])
  return {ok: checks.every((check) => check.status !== 'MISSING'), checks}
}

/** One line per part (status, part, what was found), and the fix under each that is not OK. */
export function formatReport(report: DoctorReport): string {
  const width = Math.max(...report.checks.map((check) => check.part.length))
  const lines = report.checks.flatMap((check) => [
    `${check.status.padEnd(7)}  ${check.part.padEnd(width)}  ${check.found}`,
    ...(check.fix ? [`${' '.repeat(9 + width + 2)}fix: ${check.fix}`] : []),
  ])
  const missingParts = report.checks.filter((check) => check.status === 'MISSING').map((check) => check.part)
  lines.push(
    '',
    missingParts.length > 0
      ? `run or build cannot work until these are fixed: ${missingParts.join(', ')}`
      : 'run and build have every part they need',
  )
  return lines.join('\n')
}
