/**
 * Paths inside an unpack root, resolved the way a chroot would: a symlink met in a parent
 * component is followed by us, one component at a time, with absolute targets and `..`
 * clamped to the root, so no host path outside the root is ever reached. The last component
 * is never followed; callers replace whatever is there instead of writing through it.
 */
import {lstatSync, mkdirSync, readlinkSync, rmSync, chmodSync} from 'node:fs'
import {join} from 'node:path'

import {AegisError} from '../errors.js'

const MAX_SYMLINKS = 40 // Linux's own limit for one path lookup

export interface ResolvedPath {
  /** Host path inside the root. */
  hostPath: string
  /** Path relative to the root after following symlinks, `/`-separated. */
  relative: string
  /** The first symlink followed on the way, if any (relative to the root). */
  viaSymlink?: string
}

export class UnpackRoot {
  /** Relative paths known to be real directories (not symlinks) in this root. */
  private readonly knownDirectories = new Set<string>([''])
  /** Directories we made writable to create entries in (by host path): their original modes. */
  readonly borrowedModes = new Map<string, {mode: number; relative: string}>()
  private readonly isRoot = process.getuid?.() === 0

  constructor(readonly root: string) {}

  /**
   * Resolves the parent of `components` (already checked: no `..`, not absolute) inside the
   * root and returns the final host path. With `create`, missing parent directories are made
   * (mode 0755, like other unpackers); without it, undefined when a parent is missing.
   */
  resolve(entryName: string, components: string[], create: boolean): ResolvedPath | undefined {
    const resolved: string[] = []
    let prefix = '' // resolved.join('/'), kept up to date: most entries meet only known directories
    const queue = [...components]
    const last = queue.pop()!
    let viaSymlink: string | undefined
    let followed = 0
    while (queue.length > 0) {
      const part = queue.shift()!
      if (part === '' || part === '.') continue
      if (part === '..') {
        resolved.pop() // only reachable from a symlink target; clamps at the root
        prefix = resolved.join('/')
        continue
      }
      const relative = prefix === '' ? part : `${prefix}/${part}`
      if (this.knownDirectories.has(relative)) {
        resolved.push(part)
        prefix = relative
        continue
      }
      const hostPath = join(this.root, relative)
      const stat = lstatSync(hostPath, {throwIfNoEntry: false})
      if (stat === undefined) {
        if (!create) return undefined
        mkdirSync(hostPath, {mode: 0o755})
      } else if (stat.isSymbolicLink()) {
        if (++followed > MAX_SYMLINKS) throw new AegisError(`layer entry "${entryName}": too many symlinks in its path`)
        viaSymlink ??= relative
        const target = readlinkSync(hostPath)
        if (target.startsWith('/')) {
          resolved.length = 0
          prefix = ''
        }
        queue.unshift(...target.split('/'))
        continue
      } else if (!stat.isDirectory()) {
        throw new AegisError(`layer entry "${entryName}": "${relative}" is not a directory`)
      } else if (create && !this.isRoot && (stat.mode & 0o300) !== 0o300) {
        // Without root, a read-only directory from a lower layer would block this write.
        this.borrowedModes.set(hostPath, {mode: stat.mode & 0o7777, relative})
        chmodSync(hostPath, (stat.mode & 0o7777) | 0o700)
      }
      this.knownDirectories.add(relative)
      resolved.push(part)
      prefix = relative
    }
    if (last === '' || last === '.' || last === '..') {
      throw new AegisError(`layer entry "${entryName}" has no usable name`)
    }
    const relative = prefix === '' ? last : `${prefix}/${last}`
    return {hostPath: join(this.root, relative), relative, ...(viaSymlink === undefined ? {} : {viaSymlink})}
  }

  /** Removes a path (recursively, never following symlinks) and forgets what was under it. */
  remove(hostPath: string, relative: string): void {
    rmSync(hostPath, {recursive: true, force: true})
    this.forget(relative)
  }

  /** Drops cached directory knowledge at and under `relative`. */
  forget(relative: string): void {
    for (const known of this.knownDirectories) {
      if (known === relative || known.startsWith(`${relative}/`)) this.knownDirectories.delete(known)
    }
  }

  /** Has the next entry under `relative` look at it again: it was made read-only since. */
  recheck(relative: string): void {
    this.knownDirectories.delete(relative)
  }

  markDirectory(relative: string): void {
    this.knownDirectories.add(relative)
  }
}
