/**
 * A deterministic cpio "newc" archive, the format the kernel unpacks as an initramfs.
 * Entries are sorted by path, owned by root, stamped with one fixed time and numbered
 * in order, so the same inputs always give the same bytes.
 */

export type CpioEntry =
  | {path: string; type: 'dir'; mode: number}
  | {path: string; type: 'file'; mode: number; data: Uint8Array}
  | {path: string; type: 'symlink'; target: string}
  | {path: string; type: 'chardev'; mode: number; major: number; minor: number}

const S_IFDIR = 0o040000
const S_IFREG = 0o100000
const S_IFLNK = 0o120000
const S_IFCHR = 0o020000

function hex8(value: number): string {
  return value.toString(16).padStart(8, '0')
}

function pad4(length: number): Buffer {
  return Buffer.alloc((4 - (length % 4)) % 4)
}

function record(
  ino: number,
  name: string,
  mode: number,
  data: Uint8Array,
  rdev: {major: number; minor: number},
  mtime: number,
): Buffer[] {
  const nameBytes = Buffer.from(name + '\0', 'utf8')
  const fields = [
    ino,
    mode,
    0 /* uid */,
    0 /* gid */,
    1 /* nlink */,
    mtime,
    data.length,
    0,
    0 /* dev major, minor */,
    rdev.major,
    rdev.minor,
    nameBytes.length,
    0 /* check */,
  ]
  const header = Buffer.from('070701' + fields.map(hex8).join(''), 'ascii')
  return [header, nameBytes, pad4(header.length + nameBytes.length), Buffer.from(data), pad4(data.length)]
}

/** Adds the parent directories an entry list leaves out, so the kernel can create every path. */
function withParents(entries: CpioEntry[]): CpioEntry[] {
  const byPath = new Map(entries.map((entry) => [entry.path, entry]))
  for (const entry of entries) {
    const parts = entry.path.split('/')
    for (let i = 1; i < parts.length; i++) {
      const parent = parts.slice(0, i).join('/')
      if (!byPath.has(parent)) byPath.set(parent, {path: parent, type: 'dir', mode: 0o755})
    }
  }
  return [...byPath.values()]
}

/** The archive for `entries` (paths relative, no leading slash), with a fixed mtime. */
export function buildCpio(entries: CpioEntry[], mtime = 0): Buffer {
  const sorted = withParents(entries).sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0))
  const chunks: Buffer[] = []
  const noDevice = {major: 0, minor: 0}
  sorted.forEach((entry, index) => {
    const ino = index + 1
    switch (entry.type) {
      case 'dir':
        chunks.push(...record(ino, entry.path, S_IFDIR | entry.mode, new Uint8Array(), noDevice, mtime))
        break
      case 'file':
        chunks.push(...record(ino, entry.path, S_IFREG | entry.mode, entry.data, noDevice, mtime))
        break
      case 'symlink':
        chunks.push(...record(ino, entry.path, S_IFLNK | 0o777, Buffer.from(entry.target, 'utf8'), noDevice, mtime))
        break
      case 'chardev':
        chunks.push(...record(ino, entry.path, S_IFCHR | entry.mode, new Uint8Array(), entry, mtime))
        break
    }
  })
  chunks.push(...record(0, 'TRAILER!!!', 0, new Uint8Array(), noDevice, 0))
  return Buffer.concat(chunks)
}
