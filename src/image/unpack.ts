/**
 * Applies OCI layers (untrusted: they come from registries) to a directory. Nothing is ever
 * written outside it: names with `..` or a leading `/` are refused, parent symlinks are
 * resolved by us inside the root (see UnpackRoot), the final component is replaced rather
 * than written through (O_EXCL|O_NOFOLLOW), hardlink targets must resolve inside the root,
 * and device nodes, fifos and setuid bits are left out unless asked for.
 */
import {spawnSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {
  closeSync,
  constants,
  fchmodSync,
  fchownSync,
  futimesSync,
  lchownSync,
  linkSync,
  lstatSync,
  lutimesSync,
  mkdirSync,
  openSync,
  readdirSync,
  realpathSync,
  symlinkSync,
  unlinkSync,
  writeSync,
  chmodSync,
  chownSync,
  utimesSync,
} from 'node:fs'
import {join} from 'node:path'
import type {Readable} from 'node:stream'
import {extract, type Header} from 'tar-stream'

import {AegisError, isAegisError, messageOf} from '../errors.js'
import {errorCode} from '../fs-util.js'
import {OPAQUE_WHITEOUT, WHITEOUT_PREFIX} from './layer-entries.js'
import {UnpackRoot, type ResolvedPath} from './unpack-root.js'
import {openTarSource, type LayerEncoding} from './unpack-source.js'
import {BackgroundWrites} from './unpack-writes.js'

export interface UnpackOptions {
  /** Keep setuid/setgid bits on files (needed for a bootable root, e.g. `su`). Default false. */
  preserveSetuid?: boolean
  /** chown entries to their uid/gid. Default: only when running as root. */
  preserveOwners?: boolean
  /** Create device nodes and fifos (only as root, with mknod). Default false: skipped with a warning. */
  allowDevices?: boolean
  /** Fail (after applying) when the uncompressed tar's sha256 differs. */
  expectedDiffId?: string
  onWarning?: (message: string) => void
}

export interface UnpackResult {
  encoding: LayerEncoding
  /** sha256 of the uncompressed tar. */
  diffId: string
  entries: number
  warnings: string[]
}

/** A layer to apply: a stream, or a function opening one (so a stack opens one at a time). */
export type LayerSource = Readable | (() => Readable | Promise<Readable>)

/** Applies one layer blob (gzip, zstd or plain tar) to `destDir`, creating it if needed. */
export async function unpackLayer(blob: Readable, destDir: string, options: UnpackOptions = {}): Promise<UnpackResult> {
  return applyLayer(blob, openRoot(destDir), options)
}

/** Applies layers bottom to top. On failure `destDir` is left half-made: discard it. */
export async function unpackImage(
  layers: LayerSource[],
  destDir: string,
  options: Omit<UnpackOptions, 'expectedDiffId'> & {diffIds?: string[]} = {},
): Promise<UnpackResult[]> {
  const root = openRoot(destDir)
  const results: UnpackResult[] = []
  for (const [index, layer] of layers.entries()) {
    const blob = typeof layer === 'function' ? await layer() : layer
    const expectedDiffId = options.diffIds?.[index]
    results.push(await applyLayer(blob, root, {...options, ...(expectedDiffId === undefined ? {} : {expectedDiffId})}))
  }
  return results
}

function openRoot(destDir: string): UnpackRoot {
  mkdirSync(destDir, {recursive: true})
  return new UnpackRoot(realpathSync(destDir))
}

interface DirectoryFinish {
  hostPath: string
  relative: string
  mode: number
  uid: number
  gid: number
  mtime: Date
}

async function applyLayer(blob: Readable, root: UnpackRoot, options: UnpackOptions): Promise<UnpackResult> {
  const layer = new LayerApplier(root, options)
  const source = await openTarSource(blob)
  const hash = createHash('sha256')
  const extractor = extract()
  let stopped = false
  // tar-stream speaks streamx, not node:stream; feed it by hand and hash what it is fed.
  const feeding = (async () => {
    for await (const chunk of source.tar as AsyncIterable<Buffer>) {
      if (stopped) break
      hash.update(chunk)
      if (!extractor.write(chunk)) {
        await new Promise<void>((resolve) => {
          const done = (): void => {
            extractor.off('drain', done)
            extractor.off('close', done)
            resolve()
          }
          extractor.on('drain', done)
          extractor.on('close', done)
        })
      }
    }
    extractor.end(undefined)
  })()
  feeding.catch((error: unknown) => extractor.destroy(error instanceof Error ? error : new Error(String(error))))
  let entries = 0
  try {
    for await (const entry of extractor) {
      entries++
      await layer.apply(entry.header, entry as unknown as Readable) // a streamx Readable: async-iterable and resume()-able
    }
  } catch (error) {
    stopped = true
    extractor.destroy(new Error('unpack stopped'))
    await layer.writes.settle() // no descriptor outlives the layer
    if (isAegisError(error)) throw error
    throw new AegisError(`layer is not a valid tar archive (after ${entries} entries): ${messageOf(error)}`, {
      cause: error,
    })
  }
  await feeding
  await layer.writes.drain()
  layer.finish()
  const diffId = `sha256:${hash.digest('hex')}`
  if (options.expectedDiffId !== undefined && options.expectedDiffId !== diffId) {
    throw new AegisError(`layer content does not match its diff_id: expected ${options.expectedDiffId}, got ${diffId}`)
  }
  return {encoding: source.encoding, diffId, entries, warnings: layer.warnings}
}

/**
 * Files this large are written on the threadpool (see BackgroundWrites); smaller ones are
 * written here, where a write costs less than handing it over.
 */
const BACKGROUND_WRITE_BYTES = 64 * 1024

class LayerApplier {
  readonly warnings: string[] = []
  readonly writes = new BackgroundWrites()
  /** Relative paths this layer created: an opaque whiteout keeps them. */
  private readonly created = new Set<string>()
  private readonly directories: DirectoryFinish[] = []
  private readonly isRoot = process.getuid?.() === 0
  private readonly preserveOwners: boolean

  constructor(
    private readonly root: UnpackRoot,
    private readonly options: UnpackOptions,
  ) {
    this.preserveOwners = options.preserveOwners ?? this.isRoot
  }

  async apply(header: Header, content: Readable): Promise<void> {
    try {
      await this.applyEntry(header, content)
    } catch (error) {
      content.resume()
      if (isAegisError(error)) throw error
      throw new AegisError(`cannot unpack layer entry "${header.name}": ${messageOf(error)}`, {cause: error})
    }
  }

  /** Directory modes and times last: children are written first, and read-only dirs stay writable until then. */
  finish(): void {
    for (const [hostPath, {mode, relative}] of this.root.borrowedModes) {
      if (isRealDirectory(hostPath)) chmodSync(hostPath, mode)
      this.root.recheck(relative) // the next layer must borrow it again
    }
    this.root.borrowedModes.clear()
    for (const dir of this.directories.reverse()) {
      // Checked again: a later entry of this layer may have replaced the directory with a symlink.
      if (!isRealDirectory(dir.hostPath)) continue
      if (this.preserveOwners) chownSync(dir.hostPath, dir.uid, dir.gid)
      chmodSync(dir.hostPath, dir.mode)
      utimesSync(dir.hostPath, dir.mtime, dir.mtime)
      if (!this.isRoot && (dir.mode & 0o300) !== 0o300) this.root.recheck(dir.relative) // as above
    }
  }

  private async applyEntry(header: Header, content: Readable): Promise<void> {
    const name = header.name
    const components = entryComponents(name, name)
    const base = components.at(-1)
    if (base === undefined) {
      content.resume() // the root itself ("./"): its owner and mode are the caller's
      return
    }
    if (base === OPAQUE_WHITEOUT) return this.opaque(name, components, content)
    if (base.startsWith(WHITEOUT_PREFIX)) return this.whiteout(name, components, base, content)

    switch (header.type) {
      case 'file':
      case 'contiguous-file':
        return this.file(name, components, header, content)
      case 'directory':
        content.resume()
        return this.directory(name, components, header)
      case 'symlink':
        content.resume()
        return this.symlink(name, components, header)
      case 'link':
        content.resume()
        return this.hardlink(name, components, header)
      case 'character-device':
      case 'block-device':
      case 'fifo':
        content.resume()
        return this.special(name, components, header)
      default:
        content.resume()
        this.warn(`skipped layer entry "${name}": unsupported tar type ${String(header.type)}`)
    }
  }

  private async file(name: string, components: string[], header: Header, content: Readable): Promise<void> {
    const target = this.place(name, components)
    const fd = this.replacing(target, () =>
      openSync(
        target.hostPath,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o600,
      ),
    )
    const finish = (fd: number): void => {
      if (this.preserveOwners) fchownSync(fd, ...ownerOf(header))
      fchmodSync(fd, this.fileMode(name, header.mode ?? 0o644))
      const mtime = header.mtime ?? new Date(0)
      futimesSync(fd, mtime, mtime)
    }
    if ((header.size ?? 0) >= BACKGROUND_WRITE_BYTES)
      return this.writes.add(name, fd, content as AsyncIterable<Buffer>, finish)
    try {
      for await (const chunk of content as AsyncIterable<Buffer>) {
        for (let off = 0; off < chunk.length; ) off += writeSync(fd, chunk, off)
      }
      finish(fd)
    } finally {
      closeSync(fd)
    }
  }

  private directory(name: string, components: string[], header: Header): void {
    const target = this.place(name, components)
    let made = true
    try {
      mkdirSync(target.hostPath, {mode: 0o700})
    } catch (error) {
      if (errorCode(error) !== 'EEXIST') throw error
      made = this.clear(target, true) !== 'directory'
      if (made) mkdirSync(target.hostPath, {mode: 0o700})
    }
    // One already there is left to resolve() to check (and, without root, make writable) when an entry goes in.
    if (made) this.root.markDirectory(target.relative)
    this.directories.push({
      hostPath: target.hostPath,
      relative: target.relative,
      mode: (header.mode ?? 0o755) & 0o7777,
      uid: ownerOf(header)[0],
      gid: ownerOf(header)[1],
      mtime: header.mtime ?? new Date(0),
    })
  }

  private symlink(name: string, components: string[], header: Header): void {
    const linkname = header.linkname
    if (!linkname) throw new AegisError(`layer entry "${name}" is a symlink without a target`)
    const target = this.place(name, components)
    // Stored verbatim: a symlink is only text; it is never followed while unpacking.
    this.replacing(target, () => symlinkSync(linkname, target.hostPath))
    if (this.preserveOwners) lchownSync(target.hostPath, ...ownerOf(header))
    const mtime = header.mtime ?? new Date(0)
    lutimesSync(target.hostPath, mtime, mtime)
  }

  private hardlink(name: string, components: string[], header: Header): void {
    const linkname = header.linkname ?? ''
    const linkComponents = entryComponents(linkname, name, 'hardlink target')
    if (linkComponents.length === 0) throw new AegisError(`layer entry "${name}" is a hardlink without a target`)
    const source = this.root.resolve(name, linkComponents, false)
    const sourceStat = source === undefined ? undefined : lstatSync(source.hostPath, {throwIfNoEntry: false})
    if (source === undefined || sourceStat === undefined) {
      throw new AegisError(`layer entry "${name}" is a hardlink to "${linkname}", which does not exist`)
    }
    if (sourceStat.isDirectory())
      throw new AegisError(`layer entry "${name}" is a hardlink to a directory ("${linkname}")`)
    const target = this.place(name, components)
    if (target.hostPath === source.hostPath) return
    this.replacing(target, () => linkSync(source.hostPath, target.hostPath))
  }

  private special(name: string, components: string[], header: Header): void {
    if (!(this.options.allowDevices && this.isRoot)) {
      this.warn(
        `skipped layer entry "${name}": ${header.type} entries are not created (allowDevices is off or not root)`,
      )
      return
    }
    const target = this.place(name, components)
    this.clear(target, false)
    const kind =
      header.type === 'fifo'
        ? ['p']
        : [header.type === 'block-device' ? 'b' : 'c', String(header.devmajor ?? 0), String(header.devminor ?? 0)]
    const made = spawnSync('mknod', [target.hostPath, ...kind])
    if (made.status !== 0)
      throw new AegisError(`cannot create ${header.type} "${name}": ${made.stderr.toString().trim()}`)
    const stat = lstatSync(target.hostPath)
    if (stat.isSymbolicLink() || stat.isDirectory()) throw new AegisError(`layer entry "${name}" changed while created`)
    chownSync(target.hostPath, ...ownerOf(header))
    chmodSync(target.hostPath, (header.mode ?? 0o600) & 0o777)
  }

  private whiteout(name: string, components: string[], base: string, content: Readable): void {
    content.resume()
    const hiddenName = base.slice(WHITEOUT_PREFIX.length)
    if (hiddenName === '' || hiddenName === '.' || hiddenName === '..') {
      throw new AegisError(`layer entry "${name}" is a whiteout with no usable name`)
    }
    const hidden = this.root.resolve(name, [...components.slice(0, -1), hiddenName], false)
    if (hidden === undefined) return
    this.noteSymlink(name, hidden)
    if (lstatSync(hidden.hostPath, {throwIfNoEntry: false}) !== undefined)
      this.root.remove(hidden.hostPath, hidden.relative)
  }

  private opaque(name: string, components: string[], content: Readable): void {
    content.resume()
    const marker = this.place(name, components)
    const dirHost = join(marker.hostPath, '..')
    const dirRelative = marker.relative.split('/').slice(0, -1).join('/')
    this.root.markDirectory(dirRelative)
    for (const child of readdirSync(dirHost)) {
      const relative = dirRelative === '' ? child : `${dirRelative}/${child}`
      if (!this.created.has(relative)) this.root.remove(join(dirHost, child), relative)
    }
  }

  /** Resolves an entry's path (making parents) and records it as created by this layer. */
  private place(name: string, components: string[]): ResolvedPath {
    const target = this.root.resolve(name, components, true)!
    this.noteSymlink(name, target)
    // Parents made on the way count as this layer's too; a parent already there has its own.
    for (
      let slash = target.relative.lastIndexOf('/');
      slash !== -1;
      slash = target.relative.lastIndexOf('/', slash - 1)
    ) {
      const parent = target.relative.slice(0, slash)
      if (this.created.has(parent)) break
      this.created.add(parent)
    }
    this.created.add(target.relative)
    return target
  }

  /**
   * Creates `target` with `create`, which must fail with EEXIST when anything is there (O_EXCL,
   * mkdir, symlink, link never follow a final symlink); then clears it and creates again. Most
   * entries are new, so this saves an lstat each.
   */
  private replacing<T>(target: ResolvedPath, create: () => T): T {
    try {
      return create()
    } catch (error) {
      if (errorCode(error) !== 'EEXIST') throw error
    }
    this.clear(target, false)
    return create()
  }

  /** Makes room at `target`: keeps an existing directory when asked to, removes anything else. */
  private clear(target: ResolvedPath, keepDirectory: boolean): 'directory' | 'empty' {
    const stat = lstatSync(target.hostPath, {throwIfNoEntry: false})
    if (stat === undefined) return 'empty'
    if (stat.isDirectory()) {
      if (keepDirectory) return 'directory'
      this.root.remove(target.hostPath, target.relative)
    } else {
      unlinkSync(target.hostPath)
    }
    return 'empty'
  }

  private fileMode(name: string, mode: number): number {
    const bits = mode & 0o7777
    if ((bits & 0o6000) === 0 || this.options.preserveSetuid) return bits
    this.warn(`cleared setuid/setgid bits of "${name}" (preserveSetuid is off)`)
    return bits & ~0o6000
  }

  private noteSymlink(name: string, target: ResolvedPath): void {
    if (target.viaSymlink === undefined) return
    this.warn(
      `layer entry "${name}" goes through symlink "${target.viaSymlink}"; resolved inside the root to "${target.relative}"`,
    )
  }

  private warn(message: string): void {
    this.warnings.push(message)
    this.options.onWarning?.(message)
  }
}

/** The path components of a tar name; absolute names and `..` are refused, naming the entry. */
function entryComponents(name: string, entryName: string, what = 'path'): string[] {
  if (name.startsWith('/')) throw new AegisError(`layer entry "${entryName}": ${what} "${name}" is absolute`)
  const parts = name.split('/').filter((part) => part !== '' && part !== '.')
  if (parts.includes('..')) throw new AegisError(`layer entry "${entryName}": ${what} "${name}" contains ".."`)
  return parts
}

function isRealDirectory(hostPath: string): boolean {
  return lstatSync(hostPath, {throwIfNoEntry: false})?.isDirectory() ?? false
}

/** uid and gid, from PAX records when present: tar-stream leaves large ids to us. */
function ownerOf(header: Header): [number, number] {
  const pax = (header.pax ?? {}) as Record<string, string | undefined>
  const id = (value: string | undefined, fallback: number | undefined): number =>
    value !== undefined && /^\d+$/.test(value) ? Number(value) : (fallback ?? 0)
  return [id(pax.uid, header.uid), id(pax.gid, header.gid)]
}
