/**
 * A Debian root built from Debian's archive with mmdebstrap, made reproducible: SOURCE_DATE_EPOCH
 * for mmdebstrap, and the files that record when or where a build ran (apt lists and caches,
 * logs, machine-id, ldconfig's aux cache) removed or emptied.
 */
import {readFile, rm, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {AegisError} from '../errors.js'
import type {DebianBase} from '../kit/manifest.generated.js'
import type {PackageRecord} from './layer-cache.js'
import {runTool} from './tools.js'

export const DEBIAN_MIRROR = 'http://deb.debian.org/debian'

export function debianArch(platform: string): string {
  return platform === 'linux/arm64' ? 'arm64' : 'amd64'
}

export async function buildDebianRoot(base: DebianBase['debian'], rootDir: string, options: {platform: string; sourceDateEpoch: number; onLine?: (line: string) => void}): Promise<PackageRecord[]> {
  const variant = base.variant ?? 'minbase'
  const args = [
    `--variant=${variant}`,
    `--architectures=${debianArch(options.platform)}`,
    // Documentation and translations are dead weight in a VM image.
    '--dpkgopt=path-exclude=/usr/share/doc/*',
    '--dpkgopt=path-include=/usr/share/doc/*/copyright',
    '--dpkgopt=path-exclude=/usr/share/man/*',
    '--dpkgopt=path-exclude=/usr/share/locale/*',
    '--dpkgopt=path-exclude=/usr/share/info/*',
    ...(base.packages && base.packages.length > 0 ? [`--include=${base.packages.join(',')}`] : []),
    base.suite,
    rootDir,
    base.snapshot ? `http://snapshot.debian.org/archive/debian/${base.snapshot}` : DEBIAN_MIRROR,
  ]
  await runTool('mmdebstrap', args, {
    env: {SOURCE_DATE_EPOCH: String(options.sourceDateEpoch)},
    hint: 'install it: apt-get install mmdebstrap (scripts/setup does)',
    onLine: options.onLine,
  })
  await scrubRoot(rootDir)
  return readDpkgStatus(rootDir)
}

/** Removes what differs between two builds of the same packages. */
async function scrubRoot(rootDir: string): Promise<void> {
  const remove = ['var/lib/apt/lists', 'var/cache/apt', 'var/cache/ldconfig/aux-cache', 'var/log', 'var/lib/dpkg/status-old', 'var/lib/dpkg/available-old', 'var/cache/debconf/templates.dat-old', 'var/cache/debconf/config.dat-old', 'etc/resolv.conf', 'etc/hostname']
  for (const relative of remove) await rm(path.join(rootDir, relative), {recursive: true, force: true})
  // systemd and dbus expect the file; its content identifies one machine, so empty it.
  await writeFile(path.join(rootDir, 'etc/machine-id'), '').catch(() => undefined)
}

/** Installed packages from dpkg's status file (absent in the `extract` variant: then from the names asked for). */
export async function readDpkgStatus(rootDir: string): Promise<PackageRecord[]> {
  let status: string
  try {
    status = await readFile(path.join(rootDir, 'var/lib/dpkg/status'), 'utf8')
  } catch {
    return []
  }
  const packages: PackageRecord[] = []
  for (const stanza of status.split(/\n\n+/)) {
    const field = (name: string) => new RegExp(`^${name}: (.*)$`, 'm').exec(stanza)?.[1]
    const name = field('Package')
    const version = field('Version')
    if (name && version && /install ok installed/.test(field('Status') ?? '')) packages.push({kind: 'deb', name, version})
  }
  return packages.sort((a, b) => (a.name < b.name ? -1 : 1))
}

export function assertDebianHost(): void {
  if (process.platform !== 'linux') {
    throw new AegisError('a Debian base is built with mmdebstrap, which needs Linux', {hint: 'use an image reference as image.base on this machine'})
  }
}
