/**
 * Reading the files a user points aegis-kit at (a manifest, a config, an archive). Any of them
 * may be a FIFO, which blocks a plain open or read forever, or a device such as /dev/zero, which
 * never ends: only regular files are read, and whole-file reads are capped. The type is checked
 * on the open descriptor (fstat), so a file swapped for a FIFO after a path check is still caught;
 * the open itself is non-blocking so that a FIFO cannot hold it.
 */
import {constants, type Stats} from 'node:fs'
import {open, type FileHandle} from 'node:fs/promises'
import {AegisError, messageOf} from './errors.js'
import {errorCode} from './fs-util.js'

export interface LocalFileOptions {
  /** What the file is to the user, for errors: "config", "archive", "manifest". */
  what: string
}

/** An open regular file: the handle (the caller closes it) and its size when opened. */
export interface RegularFile {
  handle: FileHandle
  size: number
}

/** Opens `path` for reading if it is (or a symlink leads to) a regular file; otherwise a one-line AegisError. */
export async function openRegularFile(path: string, options: LocalFileOptions): Promise<RegularFile> {
  let handle: FileHandle
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK)
  } catch (error) {
    const why = errorCode(error) === 'ENOENT' ? 'it does not exist' : messageOf(error)
    throw new AegisError(`cannot read ${options.what} ${path}: ${why}`, {
      hint: `check the path of the ${options.what}`,
      cause: error,
    })
  }
  try {
    const info = await handle.stat()
    if (!info.isFile()) throw notRegularFile(path, info, options.what)
    return {handle, size: info.size}
  } catch (error) {
    await handle.close()
    throw error
  }
}

/** The whole of a regular file of at most `maxBytes`, refused before reading when larger. */
export async function readRegularFile(path: string, options: LocalFileOptions & {maxBytes: number}): Promise<Buffer> {
  const {handle, size} = await openRegularFile(path, options)
  try {
    const tooLarge = (bytes: number): AegisError =>
      new AegisError(`${path} is ${bytes} bytes; a ${options.what} is at most ${formatLimit(options.maxBytes)}`, {
        hint: `check that this is the ${options.what} you meant`,
      })
    if (size > options.maxBytes) throw tooLarge(size)
    // One byte more than allowed tells a file that grew since the fstat from one that did not.
    const buffer = Buffer.alloc(options.maxBytes + 1)
    let length = 0
    for (;;) {
      const {bytesRead} = await handle.read(buffer, length, buffer.length - length, length)
      if (bytesRead === 0) break
      length += bytesRead
      if (length > options.maxBytes) throw tooLarge(length)
    }
    return buffer.subarray(0, length)
  } finally {
    await handle.close()
  }
}

/** The one-line refusal of a path that exists but is not a regular file. */
export function notRegularFile(path: string, info: Stats, what: string): AegisError {
  return new AegisError(`${path} is not a regular file (${fileKind(info)})`, {
    hint: `give a regular file as the ${what}`,
  })
}

function fileKind(info: Stats): string {
  if (info.isFIFO()) return 'a FIFO'
  if (info.isCharacterDevice()) return 'a character device'
  if (info.isBlockDevice()) return 'a block device'
  if (info.isDirectory()) return 'a directory'
  if (info.isSocket()) return 'a socket'
  if (info.isSymbolicLink()) return 'a symbolic link'
  return 'not a plain file'
}

function formatLimit(bytes: number): string {
  return bytes % (1024 * 1024) === 0 ? `${bytes / (1024 * 1024)} MiB` : `${bytes} bytes`
}
