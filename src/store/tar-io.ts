/**
 * Tar reading and writing on top of tar-stream. Reading treats the archive as untrusted: entry
 * names are normalised and checked here, before anyone can use them. Writing goes to a temp file
 * beside the target and is renamed into place, so a failed export leaves no half archive.
 */
import {createReadStream, createWriteStream} from 'node:fs'
import {open, rename, unlink, type FileHandle} from 'node:fs/promises'
import {basename, dirname, join} from 'node:path'
import {Readable} from 'node:stream'
import {finished, pipeline} from 'node:stream/promises'
import {createGunzip} from 'node:zlib'
import tar from 'tar-stream'
import {AegisError, messageOf} from '../errors.js'
import {notRegularFile, openRegularFile} from '../local-file.js'
import {statIfExists, syncDirectory, tempFileName} from '../fs-util.js'

export interface TarFileEntry {
  /** Normalised relative path: no leading `./` or `/`, no `.` or `..` segments. */
  name: string
  size: number
  content: Readable
}

/**
 * Calls `onFile` for every regular file in `file` (plain or gzip'd tar). Directories are skipped;
 * links, devices, fifos and unsafe names are refused. `onFile` must consume or drain `content`.
 */
export async function readTarFiles(file: string, onFile: (entry: TarFileEntry) => Promise<void>): Promise<void> {
  const {handle} = await openRegularFile(file, {what: 'archive'})
  let gzipped: boolean
  try {
    gzipped = await startsWithGzipMagic(handle)
  } catch (error) {
    await handle.close()
    throw new AegisError(`cannot read ${file}: ${messageOf(error)}`, {cause: error})
  }
  const source = handle.createReadStream({start: 0})
  const extract = tar.extract()
  const feeding = (gzipped ? pipeline(source, createGunzip(), extract) : pipeline(source, extract)).catch(
    (error: unknown) => error,
  )
  try {
    for await (const entry of extract) {
      const name = safeEntryName(entry.header.name)
      const type: string = entry.header.type
      if (type !== 'file' && type !== 'contiguous-file' && type !== 'directory') {
        throw new AegisError(
          `archive entry "${entry.header.name}" is a ${type}; an image archive holds only plain files`,
          {
            hint: 'the archive is not a valid image archive (links and devices are refused)',
          },
        )
      }
      // A node stream over the entry (tar-stream's are streamx streams, which the store does not take).
      const content = Readable.from(entry, {objectMode: false})
      if (type !== 'directory') await onFile({name, size: entry.header.size, content})
      // tar-stream buffers an entry nobody reads, so whatever onFile left is read and dropped.
      content.resume()
      await finished(content)
    }
  } catch (error) {
    source.destroy()
    extract.destroy()
    await feeding
    throw wrapTarError(file, error)
  }
  const feedError = await feeding
  if (feedError) throw wrapTarError(file, feedError)
}

/** Normalises an entry name, refusing absolute paths and `..` anywhere. */
export function safeEntryName(raw: string): string {
  const unsafe = (why: string): AegisError =>
    new AegisError(`archive entry "${raw}" ${why}; refusing to import it`, {
      hint: 'the archive is malformed or malicious',
    })
  if (raw.includes('\0') || raw.includes('\\')) throw unsafe('has an invalid character')
  if (raw.startsWith('/') || /^[A-Za-z]:/.test(raw)) throw unsafe('is an absolute path')
  const parts = raw.split('/').filter((part) => part !== '' && part !== '.')
  if (parts.includes('..')) throw unsafe('points outside the archive')
  return parts.join('/')
}

export interface TarWriter {
  addBytes(name: string, data: Buffer | string): Promise<void>
  addFile(name: string, path: string, size: number): Promise<void>
  addDirectory(name: string): Promise<void>
}

type EntryHeader = Parameters<tar.Pack['entry']>[0]

/** Fixed metadata keeps exported archives reproducible. */
const ENTRY_DEFAULTS = {mtime: new Date(0), uid: 0, gid: 0, uname: '', gname: ''}

/** Writes a tar to `file` through a temp file in the same directory; `fill` adds the entries. */
export async function writeTarAtomically(file: string, fill: (tar: TarWriter) => Promise<void>): Promise<void> {
  await refuseNonRegularTarget(file)
  const temp = join(dirname(file), `.${basename(file)}.${tempFileName('.part')}`)
  const output = createWriteStream(temp, {flags: 'wx', mode: 0o644})
  try {
    await new Promise<void>((resolve, reject) => output.once('open', () => resolve()).once('error', reject))
  } catch (error) {
    throw new AegisError(`cannot write ${file}: ${messageOf(error)}`, {
      hint: 'check that the directory exists and is writable',
      cause: error,
    })
  }
  const pack = tar.pack()
  const draining = pipeline(pack, output).catch((error: unknown) => error)
  const add = (header: EntryHeader, body?: Buffer): Promise<void> =>
    new Promise((resolve, reject) => {
      const done = (error?: Error | null): void => (error ? reject(error) : resolve())
      if (body === undefined) pack.entry({...ENTRY_DEFAULTS, ...header}, done)
      else pack.entry({...ENTRY_DEFAULTS, ...header}, body, done)
    })
  const writer: TarWriter = {
    addBytes: (name, data) => {
      const body = Buffer.isBuffer(data) ? data : Buffer.from(data)
      return add({name, type: 'file', mode: 0o644, size: body.length}, body)
    },
    addDirectory: (name) => add({name: name.endsWith('/') ? name : `${name}/`, type: 'directory', mode: 0o755}),
    addFile: (name, path, size) =>
      new Promise((resolve, reject) => {
        const entry = pack.entry({...ENTRY_DEFAULTS, name, type: 'file', mode: 0o644, size}, (error) =>
          error ? reject(error) : resolve(),
        )
        const content = createReadStream(path)
        content.once('error', (error) => {
          entry.destroy(error)
          reject(error)
        })
        content.pipe(entry)
      }),
  }
  try {
    await fill(writer)
    pack.finalize()
    const error = await draining
    if (error) throw error
    const handle = await open(temp, 'r')
    await handle.sync().finally(() => handle.close())
    // Again: the export may have taken minutes, and a FIFO or device may have appeared meanwhile.
    await refuseNonRegularTarget(file)
    await rename(temp, file)
    await syncDirectory(dirname(file))
  } catch (error) {
    pack.destroy()
    await draining
    await unlink(temp).catch(() => undefined)
    if (error instanceof AegisError) throw error
    throw new AegisError(`cannot write ${file}: ${messageOf(error)}`, {hint: 'check free disk space', cause: error})
  }
}

async function startsWithGzipMagic(handle: FileHandle): Promise<boolean> {
  const {buffer, bytesRead} = await handle.read(Buffer.alloc(2), 0, 2, 0)
  return bytesRead === 2 && buffer[0] === 0x1f && buffer[1] === 0x8b
}

/**
 * The rename that puts an archive in place would replace whatever is at `file`: fine for an old
 * archive, not for a device node (/dev/full), a FIFO or a directory, or a symlink to one.
 */
async function refuseNonRegularTarget(file: string): Promise<void> {
  const info = await statIfExists(file)
  if (info && !info.isFile()) throw notRegularFile(file, info, 'output (-o)')
}

function wrapTarError(file: string, error: unknown): AegisError {
  if (error instanceof AegisError) return error
  return new AegisError(`cannot read ${file} as a tar archive: ${messageOf(error)}`, {
    hint: 'the file is truncated, corrupt, or not an image archive',
    cause: error,
  })
}
