/**
 * Checks for a kernel and an initramfs someone hands to `run` (--kernel, --initrd): that they
 * exist and look like what QEMU can boot, so a wrong path fails in one line before anything
 * starts rather than as a QEMU error after a build.
 */

import {open} from 'node:fs/promises'

import {AegisError, messageOf} from '../errors.js'

const ELF_MAGIC = '\x7fELF'
const EM_X86_64 = 62
const PT_NOTE = 4
/** The ELF note QEMU needs to boot an uncompressed kernel: Xen's PHYS32_ENTRY, i.e. a PVH entry point. */
const XEN_ELFNOTE_PHYS32_ENTRY = 18

/** Magic numbers of the formats Linux unpacks an initramfs from. */
const INITRAMFS_MAGIC: Array<[string, Buffer]> = [
  ['cpio', Buffer.from('07070')],
  ['gzip', Buffer.from([0x1f, 0x8b])],
  ['xz', Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])],
  ['zstd', Buffer.from([0x28, 0xb5, 0x2f, 0xfd])],
  ['lz4', Buffer.from([0x02, 0x21, 0x4c, 0x18])],
  ['bzip2', Buffer.from('BZh')],
  ['lzma', Buffer.from([0x5d, 0x00, 0x00])],
  ['lzo', Buffer.from([0x89, 0x4c, 0x5a, 0x4f])],
]

type FileHandle = Awaited<ReturnType<typeof open>>

async function openFile(file: string, flag: string, hint: string): Promise<FileHandle> {
  let handle: FileHandle
  try {
    handle = await open(file, 'r')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const why =
      code === 'ENOENT'
        ? 'does not exist'
        : code === 'EACCES'
          ? 'is not readable'
          : `cannot be opened (${messageOf(error)})`
    throw new AegisError(`${flag} ${file} ${why}`, {hint})
  }
  if (!(await handle.stat()).isFile()) {
    await handle.close()
    throw new AegisError(`${flag} ${file} is not a file`, {hint})
  }
  return handle
}

async function readAt(handle: FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.alloc(length)
  const {bytesRead} = await handle.read(buffer, 0, length, position)
  return buffer.subarray(0, bytesRead)
}

/** True when the ELF64 file has a PVH entry note in one of its PT_NOTE segments. */
async function hasPvhNote(handle: FileHandle, header: Buffer): Promise<boolean> {
  const phoff = Number(header.readBigUInt64LE(0x20))
  const phentsize = header.readUInt16LE(0x36)
  const phnum = header.readUInt16LE(0x38)
  const table = await readAt(handle, phoff, phentsize * phnum)
  for (let i = 0; i < phnum && (i + 1) * phentsize <= table.length; i++) {
    const entry = table.subarray(i * phentsize)
    if (entry.readUInt32LE(0) !== PT_NOTE) continue
    const size = Number(entry.readBigUInt64LE(0x20))
    const notes = await readAt(handle, Number(entry.readBigUInt64LE(0x08)), Math.min(size, 1 << 20))
    for (let at = 0; at + 12 <= notes.length; ) {
      const nameSize = notes.readUInt32LE(at)
      const descSize = notes.readUInt32LE(at + 4)
      const type = notes.readUInt32LE(at + 8)
      const name = notes.toString('latin1', at + 12, at + 12 + nameSize)
      if (name === 'Xen\0' && type === XEN_ELFNOTE_PHYS32_ENTRY) return true
      at += 12 + Math.ceil(nameSize / 4) * 4 + Math.ceil(descSize / 4) * 4
    }
  }
  return false
}

/**
 * Fails unless `file` is an x86-64 Linux kernel QEMU boots: an ELF vmlinux with a PVH entry
 * note, or a bzImage. `flag` names where the path came from, e.g. "--kernel".
 */
export async function checkKernelFile(file: string, flag: string): Promise<void> {
  const hint = `give a vmlinux or bzImage (vmlinuz) built for x86-64, or drop ${flag} to boot the guest aegis-kit assembles`
  const handle = await openFile(file, flag, hint)
  try {
    const header = await readAt(handle, 0, 0x240)
    if (header.toString('latin1', 0, 4) === ELF_MAGIC && header.length >= 64) {
      if (header[4] !== 2 || header.readUInt16LE(0x12) !== EM_X86_64)
        throw new AegisError(`${flag} ${file} is an ELF file for another machine, not an x86-64 kernel`, {hint})
      if (!(await hasPvhNote(handle, header)))
        throw new AegisError(
          `${flag} ${file} is an ELF file but not a kernel QEMU can boot (it has no PVH entry note)`,
          {hint: 'give a kernel built with CONFIG_PVH=y, or its bzImage (vmlinuz)'},
        )
      return
    }
    if (header.toString('latin1', 0x202, 0x206) === 'HdrS') return
    throw new AegisError(`${flag} ${file} is not a Linux kernel (neither an ELF vmlinux nor a bzImage)`, {hint})
  } finally {
    await handle.close()
  }
}

/** Fails unless `file` starts like an initramfs: a cpio archive, plain or compressed. */
export async function checkInitrdFile(file: string, flag: string): Promise<void> {
  const hint = `give a cpio archive (gzip'd like the one aegis-kit assembles, with its harness as /init), or drop ${flag}`
  const handle = await openFile(file, flag, hint)
  try {
    const head = await readAt(handle, 0, 8)
    if (!INITRAMFS_MAGIC.some(([, magic]) => head.subarray(0, magic.length).equals(magic))) {
      throw new AegisError(`${flag} ${file} is not an initramfs (neither a cpio archive nor a compressed one)`, {hint})
    }
  } finally {
    await handle.close()
  }
}
