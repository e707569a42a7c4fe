/**
 * The kit's lock, `aegis-kit.lock.json` beside its manifest: what the image's base resolved to
 * when it was last resolved, per platform. For a Debian base, every installed package's exact
 * version and architecture; for a registry base, the platform manifest's digest. Builds install
 * exactly that (or fail saying what moved); `build --update-lock` resolves again. See
 * docs/lock.md.
 */
import {readFile, rename, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {AegisError, messageOf} from '../errors.js'
import type {DebianBase} from '../kit/manifest.generated.js'
import {stableJson} from './layer-cache.js'

export const LOCK_FILE = 'aegis-kit.lock.json'
const LOCK_VERSION = 1

export type DebianSpec = DebianBase['debian']

export interface DebPackage {
  name: string
  version: string
  architecture: string
}

export type BaseLock =
  | {debian: DebianSpec; platforms: Record<string, {packages: DebPackage[]}>}
  | {image: string; platforms: Record<string, {digest: string}>}

export interface KitLock {
  lockVersion: typeof LOCK_VERSION
  base?: BaseLock
}

/** What a lock is for: the manifest's `image.base`, with defaults filled in so an explicit default is no change. */
export function baseSpec(base: string | DebianBase): {debian: DebianSpec} | {image: string} {
  return typeof base === 'string'
    ? {image: base}
    : {debian: {...base.debian, variant: base.debian.variant ?? 'minbase'}}
}

/**
 * The lock as read at the start of a build and updated as each platform's base is resolved;
 * `save` writes it once the whole build has succeeded.
 */
export class LockState {
  private base: BaseLock | undefined
  private readonly original: string | undefined

  private constructor(
    readonly file: string,
    readonly displayFile: string,
    lock: KitLock | undefined,
    spec: ReturnType<typeof baseSpec>,
  ) {
    this.original = lock ? formatLock(lock) : undefined
    // A lock for another base (the manifest's image.base changed) locks nothing any more.
    const stale = !lock?.base || stableJson(specOf(lock.base)) !== stableJson(spec)
    this.base = stale
      ? 'debian' in spec
        ? {debian: spec.debian, platforms: {}}
        : {image: spec.image, platforms: {}}
      : lock.base
  }

  static async load(kitDir: string, displayDir: string, base: string | DebianBase): Promise<LockState> {
    const file = path.join(kitDir, LOCK_FILE)
    return new LockState(
      file,
      path.join(displayDir, LOCK_FILE),
      await readLock(file, path.join(displayDir, LOCK_FILE)),
      baseSpec(base),
    )
  }

  /** The locked Debian packages for a platform, when the lock has them. */
  debianPackages(platform: string): DebPackage[] | undefined {
    return this.base && 'debian' in this.base ? this.base.platforms[platform]?.packages : undefined
  }

  /** The locked manifest digest of a registry base for a platform. */
  imageDigest(platform: string): string | undefined {
    return this.base && 'image' in this.base ? this.base.platforms[platform]?.digest : undefined
  }

  setDebianPackages(platform: string, packages: DebPackage[]): void {
    if (this.base && 'debian' in this.base) this.base.platforms[platform] = {packages: sortPackages(packages)}
  }

  setImageDigest(platform: string, digest: string): void {
    if (this.base && 'image' in this.base) this.base.platforms[platform] = {digest}
  }

  /** Writes the lock when its content changed (never touching an up-to-date file); true when it wrote. */
  async save(): Promise<boolean> {
    if (!this.base || Object.keys(this.base.platforms).length === 0) return false
    const text = formatLock({lockVersion: LOCK_VERSION, base: this.base})
    if (text === this.original) return false
    const temp = `${this.file}.${process.pid}.tmp`
    try {
      await writeFile(temp, text)
      await rename(temp, this.file)
    } catch (error) {
      throw new AegisError(`cannot write ${this.displayFile}: ${messageOf(error)}`, {
        hint: 'build from a copy of the kit in a writable directory',
      })
    }
    return true
  }
}

function specOf(base: BaseLock): ReturnType<typeof baseSpec> {
  return 'debian' in base ? {debian: base.debian} : {image: base.image}
}

export async function readLock(file: string, displayFile: string): Promise<KitLock | undefined> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new AegisError(`cannot read ${displayFile}: ${messageOf(error)}`)
  }
  const invalid = (problem: string) =>
    new AegisError(`${displayFile} is not a valid lock: ${problem}`, {
      hint: 'delete it (or rebuild with --update-lock) to resolve the base again',
    })
  let lock: unknown
  try {
    lock = JSON.parse(text)
  } catch (error) {
    throw invalid(messageOf(error))
  }
  if (!isObject(lock) || lock.lockVersion !== LOCK_VERSION) throw invalid(`expected lockVersion ${LOCK_VERSION}`)
  if (lock.base === undefined) return {lockVersion: LOCK_VERSION}
  const base = lock.base
  if (!isObject(base) || !isObject(base.platforms)) throw invalid('base.platforms is missing')
  if (!isObject(base.debian) && typeof base.image !== 'string') throw invalid('base needs debian or image')
  for (const [platform, entry] of Object.entries(base.platforms)) {
    if (!isObject(entry)) throw invalid(`base.platforms["${platform}"] is not an object`)
    if ('debian' in base) {
      const ok =
        Array.isArray(entry.packages) &&
        entry.packages.every(
          (p) =>
            isObject(p) &&
            typeof p.name === 'string' &&
            typeof p.version === 'string' &&
            typeof p.architecture === 'string',
        )
      if (!ok) throw invalid(`base.platforms["${platform}"].packages must list {name, version, architecture}`)
    } else if (typeof entry.digest !== 'string' || !/^sha256:[0-9a-f]{64}$/.test(entry.digest)) {
      throw invalid(`base.platforms["${platform}"].digest is not a sha256 digest`)
    }
  }
  return lock as unknown as KitLock
}

/** Stable JSON, one package per line, so a lock's diff reads as the packages that moved. */
export function formatLock(lock: KitLock): string {
  const base = lock.base
  if (!base) return `${JSON.stringify({lockVersion: lock.lockVersion}, null, 2)}\n`
  const platforms = Object.keys(base.platforms).sort()
  const entry = (platform: string): string => {
    if ('debian' in base) {
      const packages = base.platforms[platform].packages.map(
        (p) => `          ${JSON.stringify({name: p.name, version: p.version, architecture: p.architecture})}`,
      )
      return `      ${JSON.stringify(platform)}: {\n        "packages": [\n${packages.join(',\n')}\n        ]\n      }`
    }
    return `      ${JSON.stringify(platform)}: {"digest": ${JSON.stringify(base.platforms[platform].digest)}}`
  }
  const spec = 'debian' in base ? `"debian": ${stableJson(base.debian)}` : `"image": ${JSON.stringify(base.image)}`
  return `{\n  "lockVersion": ${lock.lockVersion},\n  "base": {\n    ${spec},\n    "platforms": {\n${platforms.map(entry).join(',\n')}\n    }\n  }\n}\n`
}

function sortPackages(packages: DebPackage[]): DebPackage[] {
  return [...packages].sort((a, b) =>
    a.name === b.name ? (a.architecture < b.architecture ? -1 : 1) : a.name < b.name ? -1 : 1,
  )
}

/**
 * Installed against locked: the first difference as one line (the archive dropped a locked
 * version, or its dependencies changed), or undefined when they agree.
 */
export function lockMismatch(locked: DebPackage[], installed: DebPackage[], lockFile: string): string | undefined {
  const key = (p: DebPackage) => `${p.name}:${p.architecture}`
  const have = new Map(installed.map((p) => [key(p), p]))
  const want = new Map(locked.map((p) => [key(p), p]))
  const problems: string[] = []
  for (const p of locked) {
    const got = have.get(key(p))
    if (!got)
      problems.push(
        `Debian package ${p.name} ${p.version} (${p.architecture}), locked in ${lockFile}, was not installed: the archive's dependencies changed`,
      )
    else if (got.version !== p.version)
      problems.push(
        `Debian package ${p.name} ${p.version} (${p.architecture}), locked in ${lockFile}, is no longer in the archive (it has ${got.version})`,
      )
  }
  for (const p of installed) {
    if (!want.has(key(p)))
      problems.push(
        `Debian package ${p.name} ${p.version} (${p.architecture}) is installed but not in ${lockFile}: the archive's dependencies changed`,
      )
  }
  if (problems.length === 0) return undefined
  return problems.length === 1
    ? problems[0]
    : `${problems[0]} (and ${problems.length - 1} more difference${problems.length === 2 ? '' : 's'})`
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}
