/** The programs `run` and `build` drive, each asked for its version (a binary that cannot run is not OK). */
import {existsSync, readFileSync} from 'node:fs'
import {fileURLToPath} from 'node:url'

import {isAegisError, messageOf} from '../errors.js'
import {execFileText, findOnPath} from '../exec.js'
import {findGvproxy} from '../guest/gvproxy.js'
import {QEMU, QEMU_PACKAGE, VIRTIOFSD} from '../guest/qemu.js'
import {firstLine, missing, ok, type Check} from './check.js'

/** This file is src/doctor/ or dist/doctor/: the package root is two up. */
const packageRoot = new URL('../../', import.meta.url)
const installGvproxy = fileURLToPath(new URL('scripts/install-gvproxy', packageRoot))
/** Older gvproxy lacks the flags `run` starts it with (gvproxy.ts). */
const GVPROXY_MIN = [0, 7]

/** `program args` gives its version line, or the reason it does not run. */
async function versionOf(program: string, args: string[]): Promise<{version: string} | {error: string}> {
  try {
    const result = await execFileText(program, args, {timeoutMs: 10_000})
    const text = firstLine(result.stdout) || firstLine(result.stderr)
    if (result.exitCode === 0 && text !== '') return {version: text}
    return {
      error: `${program} ${args.join(' ')} failed (${result.timedOut ? 'no answer in 10 s' : `exit ${result.exitCode ?? result.signal}`})${text ? `: ${text}` : ''}`,
    }
  } catch (error) {
    return {error: `${program} does not start: ${messageOf(error)}`}
  }
}

export function checkNode(): Check {
  const engines =
    (JSON.parse(readFileSync(new URL('package.json', packageRoot), 'utf8')) as {engines?: {node?: string}}).engines
      ?.node ?? ''
  const wanted = /(\d+)\.(\d+)/.exec(engines)
  const have = process.versions.node.split('.').map(Number)
  const found = `v${process.versions.node} (${process.execPath})`
  if (!wanted || !have[0] || have[1] === undefined) return ok('node', found)
  const [major, minor] = [Number(wanted[1]), Number(wanted[2])]
  if (have[0] > major || (have[0] === major && have[1] >= minor)) return ok('node', found)
  return missing(
    'node',
    `${found}; aegis-kit needs ${engines}`,
    `install Node.js ${major}.${minor} or newer (Debian 12's nodejs is 18): NodeSource's node_${major}.x repository, or nvm install ${major}`,
  )
}

/** QEMU's system emulator; `run` needs Linux, since virtiofsd is Linux-only. */
export async function checkQemu(): Promise<Check> {
  if (process.platform !== 'linux')
    return missing(
      'qemu',
      `this is ${process.platform}: run needs a Linux host (QEMU's virtiofsd is Linux-only)`,
      'run kits on a Linux machine or in a Linux VM; build, validate and push work here',
    )
  const binary = findOnPath(QEMU)
  const fix = `apt-get install ${QEMU_PACKAGE}`
  if (!binary) return missing('qemu', `${QEMU} is not on PATH`, fix)
  const result = await versionOf(binary, ['--version'])
  return 'version' in result ? ok('qemu', `${result.version} (${binary})`) : missing('qemu', result.error, fix)
}

export async function checkVirtiofsd(): Promise<Check> {
  const fix = `apt-get install ${QEMU_PACKAGE} (Debian 12 ships virtiofsd with QEMU)`
  if (!existsSync(VIRTIOFSD)) return missing('virtiofsd', `${VIRTIOFSD} does not exist`, fix)
  const result = await versionOf(VIRTIOFSD, ['--version'])
  return 'version' in result
    ? ok('virtiofsd', `${result.version} (${VIRTIOFSD})`)
    : missing('virtiofsd', result.error, fix)
}

export async function checkGvproxy(): Promise<Check> {
  const fix = existsSync(installGvproxy)
    ? `${installGvproxy} (Debian 13's gvproxy package, on Debian 12)`
    : "install podman's gvproxy 0.7 or newer"
  let binary: string
  try {
    binary = findGvproxy()
  } catch (error) {
    if (!isAegisError(error)) throw error
    return missing('gvproxy', error.message, fix)
  }
  const result = await versionOf(binary, ['-version'])
  if (!('version' in result)) return missing('gvproxy', result.error, fix)
  const version = /v?(\d+)\.(\d+)/.exec(result.version)
  const found = `${result.version} (${binary})`
  if (
    version &&
    (Number(version[1]) < GVPROXY_MIN[0]! ||
      (Number(version[1]) === GVPROXY_MIN[0] && Number(version[2]) < GVPROXY_MIN[1]!))
  ) {
    return missing('gvproxy', `${found}: run needs ${GVPROXY_MIN.join('.')} or newer`, fix)
  }
  return ok('gvproxy', found)
}

/** Debian bases (every bundled kit's) are built with mmdebstrap. */
export async function checkMmdebstrap(): Promise<Check> {
  const fix = 'apt-get install mmdebstrap'
  const binary = findOnPath('mmdebstrap')
  if (!binary) return missing('mmdebstrap', 'mmdebstrap is not on PATH (build needs it for Debian bases)', fix)
  const result = await versionOf(binary, ['--version'])
  return 'version' in result
    ? ok('mmdebstrap', `${result.version} (${binary})`)
    : missing('mmdebstrap', result.error, fix)
}

/** `run` makes the image's root disk with mke2fs. */
export async function checkMke2fs(): Promise<Check> {
  const fix = 'apt-get install e2fsprogs'
  const binary = findOnPath('mke2fs')
  if (!binary) return missing('mke2fs', 'mke2fs is not on PATH (run makes the root disk with it)', fix)
  const result = await versionOf(binary, ['-V'])
  return 'version' in result ? ok('mke2fs', `${result.version} (${binary})`) : missing('mke2fs', result.error, fix)
}
