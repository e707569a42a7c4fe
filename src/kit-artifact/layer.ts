/**
 * The kit layer: the kit directory (manifest, hooks, files) as one reproducible tar+gzip, and its
 * safe unpacking. Packing (through the image layers' LayerWriter) sorts entries, zeroes owners
 * and times, keeps only the executable bit of modes and follows symlinks that stay inside the
 * kit, so the same kit always gives the same bytes. Unpacking treats the layer as hostile: only
 * plain files and directories, no absolute names, no `..`, no links, bounded in size.
 */
import {lstat, mkdir, open, readdir, realpath, stat} from 'node:fs/promises'
import path from 'node:path'
import {Writable, type Readable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {createGunzip} from 'node:zlib'
import {AegisError, messageOf} from '../errors.js'
import {isInside} from '../fs-util.js'
import {LayerWriter, type LayerWriterOptions} from '../image/layer-writer.js'

/** Never packed: version-control metadata and desktop litter. Everything else the kit has goes in. */
const EXCLUDED = new Set(['.git', '.hg', '.svn', '.DS_Store'])
/** A kit is a manifest, hooks and a few files; a layer beyond this is refused both ways. */
export const MAX_KIT_BYTES = 256 * 1024 * 1024
const MAX_ENTRIES = 100_000

/**
 * The kit layer's format, as it was when tar-stream and zlib.gzipSync wrote it: published kits
 * keep their digests. Depth-first order, tar-stream's headers, one gzip stream at level 9 (the
 * OS byte "unknown"), all times 0 and owners 0:0 (LayerWriter's defaults).
 */
const KIT_LAYER_FORMAT: LayerWriterOptions = {
  compression: 'gzip',
  level: 9,
  gzipFraming: 'single-stream',
  order: 'depth-first',
  tarHeaders: 'tar-stream',
}

interface PackEntry {
  name: string
  type: 'file' | 'directory'
  mode: number
  /** Absolute path of the content (a symlink's target, for followed links). */
  source?: string
  /** Bytes of a file's content. */
  size: number
}

/** The kit directory `dir` as a deterministic gzip'd tar. */
export async function packKitLayer(dir: string): Promise<Buffer> {
  const root = await realpath(dir)
  const entries: PackEntry[] = []
  await collect(root, '', entries)
  const total = entries.reduce((sum, entry) => sum + entry.size, 0)
  if (total > MAX_KIT_BYTES)
    throw new AegisError(`the kit in ${dir} is larger than ${MAX_KIT_BYTES / 1024 / 1024} MiB`, {
      hint: 'keep large files out of the kit directory; the image builder fetches what the image needs',
    })
  const writer = new LayerWriter(KIT_LAYER_FORMAT)
  for (const entry of entries) {
    if (entry.type === 'directory') writer.addDirectory(entry.name, {mode: entry.mode})
    else writer.addFile(entry.name, entry.source as string, {mode: entry.mode})
  }
  const chunks: Buffer[] = []
  await writer.write(
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        chunks.push(chunk)
        done()
      },
    }),
  )
  return Buffer.concat(chunks)
}

async function collect(root: string, relative: string, out: PackEntry[]): Promise<void> {
  const names = (await readdir(path.join(root, relative))).filter((name) => !EXCLUDED.has(name)).sort(compareBytes)
  for (const name of names) {
    const rel = relative ? `${relative}/${name}` : name
    const full = path.join(root, rel)
    const info = await lstat(full)
    if (info.isDirectory()) {
      out.push({name: rel, type: 'directory', mode: 0o755, size: 0})
      await collect(root, rel, out)
    } else if (info.isFile()) {
      out.push({name: rel, type: 'file', mode: fileMode(info.mode), source: full, size: info.size})
    } else if (info.isSymbolicLink()) {
      out.push(await followLink(root, rel, full))
    } else {
      throw new AegisError(`${rel} in the kit is not a file or directory`, {
        hint: 'a kit holds only files, directories and symlinks to files inside it',
      })
    }
    if (out.length > MAX_ENTRIES)
      throw new AegisError(`the kit has more than ${MAX_ENTRIES} files`, {
        hint: 'keep build output and dependencies out of the kit directory',
      })
  }
}

/** A symlink to a file inside the kit is packed as that file; anything else is refused. */
async function followLink(root: string, rel: string, full: string): Promise<PackEntry> {
  let target: string
  try {
    target = await realpath(full)
  } catch (error) {
    throw new AegisError(`${rel} in the kit is a broken symlink: ${messageOf(error)}`, {
      hint: 'remove it or point it at a file inside the kit',
    })
  }
  if (!isInside(root, target)) {
    throw new AegisError(`${rel} in the kit is a symlink to ${target}, outside the kit`, {
      hint: 'a published kit carries only its own files: copy the file into the kit directory instead of linking to it',
    })
  }
  const info = await stat(target)
  if (!info.isFile())
    throw new AegisError(`${rel} in the kit is a symlink to a directory`, {
      hint: 'link files, not directories, or move the directory into place',
    })
  return {name: rel, type: 'file', mode: fileMode(info.mode), source: target, size: info.size}
}

/** 0755 when anyone may execute the file, else 0644: nothing else of the mode is reproducible. */
function fileMode(mode: number): number {
  return mode & 0o111 ? 0o755 : 0o644
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}

/**
 * Writes the kit layer `content` (gzip'd tar) into `target`, which must not exist yet. Refuses,
 * with nothing written outside `target`, entries that are not plain files or directories, names
 * that are absolute or contain `..`, duplicate files, and layers beyond MAX_KIT_BYTES.
 */
export async function unpackKitLayer(content: Readable, target: string): Promise<void> {
  await mkdir(target, {mode: 0o755})
  const tar = await import('tar-stream')
  const extract = tar.default.extract()
  const feeding = pipeline(content, createGunzip(), extract).catch((error: unknown) => error)
  let total = 0
  let count = 0
  try {
    for await (const entry of extract) {
      const raw = entry.header.name
      const name = safeKitEntryName(raw)
      const type: string = entry.header.type
      if (++count > MAX_ENTRIES) throw hostile(`it has more than ${MAX_ENTRIES} entries`)
      if (type === 'directory') {
        if (name !== '') await mkdir(path.join(target, name), {recursive: true, mode: 0o755})
      } else if (type === 'file' || type === 'contiguous-file') {
        if (name === '') throw hostile(`entry "${raw}" is a file without a name`)
        const file = path.join(target, name)
        await mkdir(path.dirname(file), {recursive: true, mode: 0o755})
        const handle = await open(file, 'wx', fileMode(entry.header.mode ?? 0o644)).catch((error: unknown) => {
          throw hostile(`entry "${raw}" cannot be written (${messageOf(error)})`)
        })
        try {
          for await (const chunk of entry as AsyncIterable<Buffer>) {
            total += chunk.length
            if (total > MAX_KIT_BYTES) throw hostile(`it unpacks to more than ${MAX_KIT_BYTES / 1024 / 1024} MiB`)
            await handle.write(chunk)
          }
        } finally {
          await handle.close()
        }
      } else {
        throw hostile(`entry "${raw}" is a ${type}; a kit layer holds only files and directories`)
      }
      entry.resume()
    }
  } catch (error) {
    extract.destroy()
    await feeding
    throw error instanceof AegisError ? error : hostile(messageOf(error))
  }
  const feedError = await feeding
  if (feedError) throw feedError instanceof AegisError ? feedError : hostile(messageOf(feedError))
}

/** `raw` as a relative path without `.` segments; absolute names, `..` and odd characters are refused. */
function safeKitEntryName(raw: string): string {
  if (raw.includes('\0') || raw.includes('\\')) throw hostile(`entry "${raw}" has an invalid character`)
  if (raw.startsWith('/') || /^[A-Za-z]:/.test(raw)) throw hostile(`entry "${raw}" is an absolute path`)
  const parts = raw.split('/').filter((part) => part !== '' && part !== '.')
  if (parts.includes('..')) throw hostile(`entry "${raw}" leaves the kit (..)`)
  return parts.join('/')
}

function hostile(why: string): AegisError {
  return new AegisError(`the kit layer is not a safe kit archive: ${why}`, {
    hint: 'nothing was unpacked; the published kit is malformed or malicious',
  })
}
