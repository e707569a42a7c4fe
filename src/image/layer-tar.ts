/**
 * Tar headers for deterministic layers: ustar, plus a PAX extended header only when a field
 * does not fit ustar (long or non-ASCII names, huge sizes or ids). Owner names are always
 * empty and the only time written is mtime, so equal inputs give equal bytes.
 */

export const TAR_BLOCK = 512
/** Two zero blocks end an archive. */
export const TAR_END = Buffer.alloc(TAR_BLOCK * 2)

export type TarEntryType = 'file' | 'hardlink' | 'symlink' | 'directory'

export interface TarHeader {
  /** Path inside the layer, without a leading `/` or `./`; directories without the trailing `/`. */
  path: string
  type: TarEntryType
  /** Permission bits, including setuid, setgid and sticky (`mode & 0o7777`). */
  mode: number
  uid: number
  gid: number
  /** Content size in bytes; 0 for everything but regular files. */
  size: number
  /** Whole seconds since the epoch, never negative. */
  mtime: number
  /** Symlink target, or the earlier path a hardlink points at. */
  linkname?: string
}

/**
 * How headers are written. `posix`: ustar fields ended by NUL, as GNU tar and Go's archive/tar
 * write them, and a PAX entry only for what ustar cannot hold. `tar-stream`: byte for byte as
 * the tar-stream package (3.x) writes them, numbers ended by a space: kit layers were written by
 * it, and a kit published again must keep its digest.
 */
export type TarHeaderStyle = 'posix' | 'tar-stream'

const TYPE_FLAG: Record<TarEntryType, string> = {file: '0', hardlink: '1', symlink: '2', directory: '5'}
const MAX_OCTAL_7 = 0o7777777
const MAX_OCTAL_11 = 0o77777777777

/** The header block(s) for one entry in `style`. */
export function encodeTarHeader(header: TarHeader, style: TarHeaderStyle = 'posix'): Buffer {
  return style === 'tar-stream' ? encodeTarStreamHeader(header) : encodePosixHeader(header)
}

/** A PAX header entry first when needed, then ustar. */
function encodePosixHeader(header: TarHeader): Buffer {
  const ustar = Buffer.alloc(TAR_BLOCK)
  if (writePlainPosixHeader(ustar, 0, header)) return ustar
  const name = nameOf(header)
  const pax: Array<[string, string]> = []
  const split = isAscii(name) ? splitUstarName(name) : undefined
  if (split === undefined) pax.push(['path', name])
  const linkname = header.linkname ?? ''
  const linkFits = isAscii(linkname) && linkname.length <= 100
  if (!linkFits) pax.push(['linkpath', linkname])
  if (header.size > MAX_OCTAL_11) pax.push(['size', String(header.size)])
  if (header.uid > MAX_OCTAL_7) pax.push(['uid', String(header.uid)])
  if (header.gid > MAX_OCTAL_7) pax.push(['gid', String(header.gid)])

  const [prefix, base] = split ?? ['', asciiFallback(name, 100)]
  writeUstar(ustar, 0, {
    name: base,
    prefix,
    mode: header.mode & 0o7777,
    uid: Math.min(header.uid, MAX_OCTAL_7),
    gid: Math.min(header.gid, MAX_OCTAL_7),
    size: Math.min(header.size, MAX_OCTAL_11),
    mtime: Math.min(header.mtime, MAX_OCTAL_11),
    typeflag: TYPE_FLAG[header.type],
    linkname: linkFits ? linkname : asciiFallback(linkname, 100),
  })
  return Buffer.concat([encodePaxEntry(pax, header.mtime), ustar])
}

/**
 * The posix header of an entry that needs no PAX entry (ASCII names that fit ustar, sizes and
 * ids in range: nearly every entry), written in place at `target[offset, offset + 512)`, the
 * same bytes `encodeTarHeader` gives. False, with nothing written, when the entry needs PAX.
 * This spares a layer of 40,000 files as many header buffers (and their garbage).
 */
export function writePlainPosixHeader(target: Buffer, offset: number, header: TarHeader): boolean {
  const linkname = header.linkname ?? ''
  if (header.size > MAX_OCTAL_11 || header.uid > MAX_OCTAL_7 || header.gid > MAX_OCTAL_7) return false
  if (linkname.length > 100 || !isAscii(linkname)) return false
  const name = nameOf(header)
  if (!isAscii(name)) return false
  const split = splitUstarName(name)
  if (split === undefined) return false
  writeUstar(target, offset, {
    name: split[1],
    prefix: split[0],
    mode: header.mode & 0o7777,
    uid: header.uid,
    gid: header.gid,
    size: header.size,
    mtime: Math.min(header.mtime, MAX_OCTAL_11),
    typeflag: TYPE_FLAG[header.type],
    linkname,
  })
  return true
}

function nameOf(header: TarHeader): string {
  return header.type === 'directory' ? `${header.path}/` : header.path
}

/** Bytes of zero padding that follow `size` bytes of content. */
export function tarPadding(size: number): number {
  const rest = size % TAR_BLOCK
  return rest === 0 ? 0 : TAR_BLOCK - rest
}

interface UstarFields {
  name: string
  prefix: string
  mode: number
  uid: number
  gid: number
  size: number
  mtime: number
  typeflag: string
  linkname: string
}

/**
 * What every ustar header shares: the magic and version, empty owner names, device numbers 0,
 * and the checksum field as spaces (the checksum is computed with it so). Copied, then the
 * entry's fields written over it.
 */
const USTAR_TEMPLATE = (() => {
  const block = Buffer.alloc(TAR_BLOCK)
  block.fill(0x20, 148, 156)
  block.write('ustar\u000000', 257, 8, 'latin1')
  // uname (265) and gname (297) stay empty: names would make layers depend on the build host.
  writeOctal(block, 329, 8, 0)
  writeOctal(block, 337, 8, 0)
  return block
})()
const USTAR_TEMPLATE_SUM = USTAR_TEMPLATE.reduce((sum, byte) => sum + byte, 0)

/** Fields are ASCII here (callers check), so a string's byte sum is its char code sum. */
function writeUstar(block: Buffer, offset: number, f: UstarFields): void {
  block.set(USTAR_TEMPLATE, offset)
  let sum = USTAR_TEMPLATE_SUM
  sum += writeAscii(block, offset, 100, f.name)
  sum += writeOctal(block, offset + 100, 8, f.mode)
  sum += writeOctal(block, offset + 108, 8, f.uid)
  sum += writeOctal(block, offset + 116, 8, f.gid)
  sum += writeOctal(block, offset + 124, 12, f.size)
  sum += writeOctal(block, offset + 136, 12, f.mtime)
  sum += writeAscii(block, offset + 156, 1, f.typeflag)
  sum += writeAscii(block, offset + 157, 100, f.linkname)
  sum += writeAscii(block, offset + 345, 155, f.prefix)
  writeOctal(block, offset + 148, 7, sum) // six digits and a NUL; the field's eighth byte stays a space
}

/** `text`'s first `width` chars (ASCII, or cut to its low byte as latin1 would) at `offset`; returns their byte sum. */
function writeAscii(block: Buffer, offset: number, width: number, text: string): number {
  const length = Math.min(width, text.length)
  let sum = 0
  for (let i = 0; i < length; i++) {
    const byte = text.charCodeAt(i) & 0xff
    block[offset + i] = byte
    sum += byte
  }
  return sum
}

/**
 * Zero-padded octal with a trailing NUL, filling the field; returns the byte sum. Digit by digit
 * rather than through toString(8): no string per field of every header. `value` fits (callers clamp).
 */
function writeOctal(block: Buffer, offset: number, width: number, value: number): number {
  let sum = 0
  let rest = value
  for (let i = width - 2; i >= 0; i--) {
    const digit = 0x30 + (rest % 8)
    block[offset + i] = digit
    sum += digit
    rest = Math.floor(rest / 8)
  }
  block[offset + width - 1] = 0
  return sum
}

/** ustar's (prefix, name) split of an ASCII path, or undefined when no split fits. */
function splitUstarName(name: string): [string, string] | undefined {
  if (name.length <= 100) return ['', name]
  // Search from the left so the name part is as long as allowed; the split is deterministic.
  for (let i = name.indexOf('/'); i !== -1 && i <= 155; i = name.indexOf('/', i + 1)) {
    const rest = name.length - i - 1
    if (rest <= 100 && rest > 0) return [name.slice(0, i), name.slice(i + 1)]
  }
  return undefined
}

function encodePaxEntry(records: Array<[string, string]>, mtime: number): Buffer {
  const body = Buffer.concat(records.map(([key, value]) => paxRecord(key, value)))
  const header = Buffer.alloc(TAR_BLOCK)
  writeUstar(header, 0, {
    // Readers ignore this name; a fixed one keeps the archive independent of the process.
    name: 'PaxHeader',
    prefix: '',
    mode: 0o644,
    uid: 0,
    gid: 0,
    size: body.length,
    mtime: Math.min(mtime, MAX_OCTAL_11),
    typeflag: 'x',
    linkname: '',
  })
  return Buffer.concat([header, body, Buffer.alloc(tarPadding(body.length))])
}

/** `"<len> key=value\n"` where len counts the whole record, itself included. */
function paxRecord(key: string, value: string): Buffer {
  const payload = ` ${key}=${value}\n`
  const payloadBytes = Buffer.byteLength(payload)
  let length = payloadBytes + 1
  while (String(length).length + payloadBytes !== length) length = String(length).length + payloadBytes
  return Buffer.from(`${length}${payload}`, 'utf8')
}

function isAscii(text: string): boolean {
  // eslint-disable-next-line no-control-regex
  return /^[\u0001-\u007f]*$/.test(text)
}

/** What old readers see in the ustar field when PAX carries the real value. */
function asciiFallback(text: string, max: number): string {
  return text.replace(/[^\u0001-\u007f]/g, '_').slice(0, max)
}

/** tar-stream's header fields: ustar's without the separate prefix (tar-stream splits the name itself). */
type TarStreamFields = Omit<UstarFields, 'prefix'>

/**
 * tar-stream 3's `pack.entry` header: ustar when the name is ASCII and splits into prefix and
 * name, else a PAX entry with `path` (and `linkpath` for a link) whose ustar header, like the
 * entry's own after it, is named `PaxHeader` and carries the entry's mode, owner and time.
 */
function encodeTarStreamHeader(header: TarHeader): Buffer {
  const fields: TarStreamFields = {
    name: header.type === 'directory' ? `${header.path}/` : header.path,
    mode: header.mode,
    uid: header.uid,
    gid: header.gid,
    size: header.size,
    mtime: header.mtime,
    typeflag: TYPE_FLAG[header.type],
    linkname: header.linkname ?? '',
  }
  const plain = tarStreamBlock(fields)
  if (plain !== undefined) return plain
  const body = Buffer.concat([
    paxRecord('path', fields.name),
    ...(fields.linkname === '' ? [] : [paxRecord('linkpath', fields.linkname)]),
  ])
  const standIn = {...fields, name: 'PaxHeader', linkname: fields.linkname === '' ? '' : 'PaxHeader'}
  // Both fit ustar: the name is short ASCII and the link name, if any, too.
  const paxHeader = tarStreamBlock({...standIn, size: body.length, typeflag: 'x'})!
  return Buffer.concat([paxHeader, body, Buffer.alloc(tarPadding(body.length)), tarStreamBlock(standIn)!])
}

/** One ustar block as tar-stream encodes it, or undefined when the name or link name does not fit. */
function tarStreamBlock(f: TarStreamFields): Buffer | undefined {
  if (Buffer.byteLength(f.name) !== f.name.length) return undefined
  let name = f.name
  let prefix = ''
  // tar-stream's split: leading components move to the prefix until the name fits.
  while (name.length > 100) {
    const slash = name.indexOf('/')
    if (slash === -1) return undefined
    prefix += prefix === '' ? name.slice(0, slash) : `/${name.slice(0, slash)}`
    name = name.slice(slash + 1)
  }
  if (prefix.length > 155 || Buffer.byteLength(f.linkname) > 100) return undefined
  const block = Buffer.alloc(TAR_BLOCK)
  block.write(name, 0, 'utf8')
  block.write(spaceOctal(f.mode & 0o7777, 6), 100, 'latin1')
  block.write(spaceOctal(f.uid, 6), 108, 'latin1')
  block.write(spaceOctal(f.gid, 6), 116, 'latin1')
  if (f.size.toString(8).length > 11) writeBase256(block, 124, f.size)
  else block.write(spaceOctal(f.size, 11), 124, 'latin1')
  block.write(spaceOctal(Math.trunc(f.mtime), 11), 136, 'latin1')
  block.write(f.typeflag, 156, 1, 'latin1')
  if (f.linkname !== '') block.write(f.linkname, 157, 'utf8')
  block.write('ustar\u000000', 257, 8, 'latin1')
  block.write(spaceOctal(0, 6), 329, 'latin1')
  block.write(spaceOctal(0, 6), 337, 'latin1')
  if (prefix !== '') block.write(prefix, 345, 'utf8')
  // The checksum field counts as eight spaces; it is still all zeros here.
  let sum = 8 * 0x20
  for (let i = 0; i < TAR_BLOCK; i++) sum += block[i]!
  block.write(spaceOctal(sum, 6), 148, 'latin1')
  return block
}

/** `width` octal digits and a space; all sevens when the value does not fit (tar-stream's encodeOct). */
function spaceOctal(value: number, width: number): string {
  const digits = value.toString(8)
  return `${digits.length > width ? '7'.repeat(width) : digits.padStart(width, '0')} `
}

/** A size beyond 11 octal digits: GNU's base-256 form, a 0x80 byte then the value big-endian. */
function writeBase256(block: Buffer, offset: number, value: number): void {
  block[offset] = 0x80
  for (let i = 11, rest = value; i > 0; i--, rest = Math.floor(rest / 0x100)) block[offset + i] = rest % 0x100
}
