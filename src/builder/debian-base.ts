/**
 * A Debian root built from Debian's archive with mmdebstrap, made reproducible: SOURCE_DATE_EPOCH
 * for mmdebstrap, the files that record when or where a build ran (apt lists and caches, logs,
 * machine-id, ldconfig's aux cache) removed or emptied, and the package versions held to the
 * kit's lock (lock.ts) when it has them.
 */
import {readdir, readFile, rm, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {AegisError} from '../errors.js'
import {
  fromPlatform,
  hostArchitecture,
  toDebianArch,
  toElfMachine,
  toQemuUser,
  type Architecture,
} from '../oci/platform.js'
import {lockMismatch, type DebianSpec, type DebPackage} from './lock.js'
import {runMmdebstrap, runTool} from './tools.js'

export const DEBIAN_MIRROR = 'http://deb.debian.org/debian'
export const BINFMT_DIR = '/proc/sys/fs/binfmt_misc'
const PIN_FILE = 'etc/apt/preferences.d/aegis-kit-lock.pref'

export interface DebianRootOptions {
  platform: string
  sourceDateEpoch: number
  /** Exact packages to install (from the lock); without them the archive's current versions. */
  locked?: DebPackage[]
  /** The lock as shown to the user, for errors. */
  lockFile: string
  /** Where the lock can be fixed: the build command to rerun with --update-lock. */
  updateLockHint: string
  /**
   * `--locked`: a lock the archive cannot honour is an error. Otherwise the build goes on with
   * the archive's versions, says so, and the lock is rewritten (as `npm install` does; Debian
   * drops superseded versions at every point release, so a strict default would break every
   * kit a few times a year).
   */
  strict: boolean
  onWarning: (message: string) => void
  onLine?: (line: string) => void
  /** Where binfmt_misc is mounted (tests give a directory of their own). */
  binfmtDir?: string
}

/** Builds the root and returns every package in it (name, exact version, architecture). */
export async function buildDebianRoot(
  base: DebianSpec,
  rootDir: string,
  options: DebianRootOptions,
): Promise<DebPackage[]> {
  assertDebianHost()
  const variant = base.variant ?? 'minbase'
  const arch = fromPlatform(options.platform)
  await checkEmulation(variant, arch, options.binfmtDir)
  const hooks: string[] = []
  if (options.locked) {
    // Pin every locked version above anything else (priority > 1000 may even downgrade). apt
    // falls back to another version when the archive lacks a pinned one: the check below says so.
    const pins = path.join(path.dirname(rootDir), 'lock.pref')
    await writeFile(
      pins,
      options.locked.map((p) => `Package: ${p.name}\nPin: version ${p.version}\nPin-Priority: 1001\n`).join('\n'),
    )
    hooks.push(`--setup-hook=mkdir -p "$1/${path.dirname(PIN_FILE)}" && cp ${shellQuote(pins)} "$1/${PIN_FILE}"`)
  }
  const args = [
    `--variant=${variant}`,
    `--architectures=${toDebianArch(arch)}`,
    // Documentation and translations are dead weight in a VM image.
    '--dpkgopt=path-exclude=/usr/share/doc/*',
    '--dpkgopt=path-include=/usr/share/doc/*/copyright',
    '--dpkgopt=path-exclude=/usr/share/man/*',
    '--dpkgopt=path-exclude=/usr/share/locale/*',
    '--dpkgopt=path-exclude=/usr/share/info/*',
    ...hooks,
    // extract records nothing in dpkg's status: the downloaded .debs say what went in.
    ...(variant === 'extract' ? ['--skip=cleanup/apt/cache'] : []),
    ...(base.packages && base.packages.length > 0 ? [`--include=${base.packages.join(',')}`] : []),
    base.suite,
    rootDir,
    base.snapshot ? `http://snapshot.debian.org/archive/debian/${base.snapshot}` : DEBIAN_MIRROR,
  ]
  await runMmdebstrap(args, {
    env: {SOURCE_DATE_EPOCH: String(options.sourceDateEpoch)},
    hint: 'install it: apt-get install mmdebstrap (scripts/setup does)',
    onLine: options.onLine,
  })
  const installed = variant === 'extract' ? await downloadedDebs(rootDir) : await installedDebs(rootDir)
  if (options.locked) checkLock(options.locked, installed, options)
  await scrubRoot(rootDir)
  return installed
}

/** A foreign architecture's root needs its programs emulated, unless nothing in it runs (variant extract). */
async function checkEmulation(variant: string, arch: Architecture, binfmtDir: string | undefined): Promise<void> {
  // Every variant but extract configures packages: their maintainer scripts run in the new root.
  if (variant !== 'extract' && arch !== hostArchitecture()) {
    const problem = await emulationProblem(arch, binfmtDir)
    if (problem) {
      throw new AegisError(
        `cannot build the ${arch} Debian base (variant ${variant}): its maintainer scripts run as ${arch} programs and ${problem}`,
        {
          hint: 'install qemu-user-static and register it with binfmt_misc with the F flag (scripts/setup does both), or use variant: extract (no maintainer scripts, no emulation); run `aegis-kit doctor` to check the rest',
        },
      )
    }
  }
}

/** What went in against the lock: an error with --locked, otherwise a warning (the lock is rewritten). */
function checkLock(locked: DebPackage[], installed: DebPackage[], options: DebianRootOptions): void {
  const mismatch = lockMismatch(locked, installed, options.lockFile)
  if (mismatch && options.strict)
    throw new AegisError(mismatch, {
      hint: `resolve the base again and rewrite the lock: ${options.updateLockHint} (or pin image.base.debian.snapshot)`,
    })
  if (mismatch)
    options.onWarning(
      `${mismatch}; built with the archive's versions and updating the lock (--locked makes this an error)`,
    )
}

/** Removes what differs between two builds of the same packages. */
async function scrubRoot(rootDir: string): Promise<void> {
  const remove = [
    'var/lib/apt/lists',
    'var/cache/apt',
    'var/cache/ldconfig/aux-cache',
    'var/log',
    'var/lib/dpkg/status-old',
    'var/lib/dpkg/available-old',
    'var/cache/debconf/templates.dat-old',
    'var/cache/debconf/config.dat-old',
    'etc/resolv.conf',
    'etc/hostname',
    PIN_FILE,
  ]
  for (const relative of remove) await rm(path.join(rootDir, relative), {recursive: true, force: true})
  // systemd and dbus expect the file; its content identifies one machine, so empty it.
  await writeFile(path.join(rootDir, 'etc/machine-id'), '').catch(() => undefined)
}

const PACKAGE_FORMAT = '${Package}\\t${Version}\\t${Architecture}\\t${db:Status-Abbrev}\\n'

/** Installed packages, by the host's dpkg-query reading the root's database (no chroot, any architecture). */
export async function installedDebs(rootDir: string): Promise<DebPackage[]> {
  const out = await runTool(
    'dpkg-query',
    [`--admindir=${path.join(rootDir, 'var/lib/dpkg')}`, '--show', `--showformat=${PACKAGE_FORMAT}`],
    {hint: 'dpkg-query comes with dpkg (Debian and Ubuntu hosts)'},
  )
  return parsePackageLines(out)
    .filter((entry) => entry.status.startsWith('ii'))
    .map(({status: _status, ...p}) => p)
}

/** The packages an `extract` build unpacked: its downloaded .debs' own control fields. */
async function downloadedDebs(rootDir: string): Promise<DebPackage[]> {
  const dir = path.join(rootDir, 'var/cache/apt/archives')
  const debs = (await readdir(dir)).filter((name) => name.endsWith('.deb')).sort()
  const packages: DebPackage[] = []
  for (const deb of debs) {
    const out = await runTool('dpkg-deb', [
      '--show',
      `--showformat=${PACKAGE_FORMAT.replace('\\t${db:Status-Abbrev}', '')}`,
      path.join(dir, deb),
    ])
    packages.push(...parsePackageLines(out))
  }
  return packages
}

function parsePackageLines(out: string): Array<DebPackage & {status: string}> {
  return out
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => {
      const [name, version, architecture, status = ''] = line.split('\t')
      return {name, version, architecture, status}
    })
}

/**
 * Why this machine cannot run `arch` programs inside a chroot, or undefined when it can: that
 * needs a binfmt_misc handler for the architecture's ELF header with the F flag (the kernel
 * opens the interpreter at registration, so the chroot needs no copy of it).
 */
export async function emulationProblem(arch: Architecture, binfmtDir = BINFMT_DIR): Promise<string | undefined> {
  // ELF64 little-endian, then e_machine (16 bits, little-endian) at byte 18, as hex in the magic.
  const machineBytes = Buffer.alloc(2)
  machineBytes.writeUInt16LE(toElfMachine(arch))
  const machine = machineBytes.toString('hex')
  const qemu = toQemuUser(arch)
  let entries: string[]
  try {
    if ((await readFile(path.join(binfmtDir, 'status'), 'utf8')).trim() !== 'enabled') return 'binfmt_misc is disabled'
    entries = await readdir(binfmtDir)
  } catch {
    return `binfmt_misc is not mounted at ${binfmtDir}`
  }
  let found: 'disabled' | 'without F' | undefined
  for (const name of entries.filter((entry) => entry !== 'status' && entry !== 'register').sort()) {
    const text = await readFile(path.join(binfmtDir, name), 'utf8').catch(() => '')
    const magic = /^magic ([0-9a-f]+)$/m.exec(text)?.[1] ?? ''
    if (!magic.startsWith('7f454c4602') || magic.slice(36, 40) !== machine) continue
    if (!text.startsWith('enabled')) found ??= 'disabled'
    else if (/^flags: \S*F/m.test(text)) return undefined
    else found = 'without F'
  }
  if (found === 'without F') return `${qemu} is registered with binfmt_misc without the F (fix-binary) flag`
  return found === 'disabled'
    ? `${qemu} is registered with binfmt_misc but disabled`
    : `no ${qemu} is registered with binfmt_misc`
}

function shellQuote(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`
}

function assertDebianHost(): void {
  if (process.platform !== 'linux') {
    throw new AegisError('a Debian base is built with mmdebstrap, which needs Linux', {
      hint: 'use an image reference as image.base on this machine',
    })
  }
}
