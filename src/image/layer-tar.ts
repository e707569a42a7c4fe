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
  const name = header.type === 'directory' ? `${header.path}/` : header.path
  const pax: Array<[string, string]> = []

  const split = isAscii(name) ? splitUstarName(name) : undefined
  if (split === undefined) pax.push(['path', name])
  const linkname = header.linkname ?? ''
  const linkFits = isAscii(linkname) && linkname.length <= 100
  if (!linkFits) pax.push(['linkpath', linkname])
  if (header.size > MAX_OCTAL_11) pax.push(['size', String(header.size)])
  if (header.uid > MAX_OCTAL_7) pax.push(['uid', String(header.uid)])
  if (header.gid > MAX_OCTAL_7) pax.push(['gid', String(header.gid)])

  const ustar = Buffer.alloc(TAR_BLOCK)
  const [prefix, base] = split ?? ['', asciiFallback(name, 100)]
  writeUstar(ustar, {
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
  if (pax.length === 0) return ustar
  return Buffer.concat([encodePaxEntry(pax, header.mtime), ustar])
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

function writeUstar(block: Buffer, f: UstarFields): void {
  block.write(f.name, 0, 100, 'latin1')
  writeOctal(block, 100, 8, f.mode)
  writeOctal(block, 108, 8, f.uid)
  writeOctal(block, 116, 8, f.gid)
  writeOctal(block, 124, 12, f.size)
  writeOctal(block, 136, 12, f.mtime)
  block.fill(0x20, 148, 156) // checksum is computed with its own field as spaces
  block.write(f.typeflag, 156, 1, 'latin1')
  block.write(f.linkname, 157, 100, 'latin1')
  block.write('ustar\u000000', 257, 8, 'latin1')
  // uname (265) and gname (297) stay empty: names would make layers depend on the build host.
  writeOctal(block, 329, 8, 0)
  writeOctal(block, 337, 8, 0)
  block.write(f.prefix, 345, 155, 'latin1')
  let sum = 0
  for (let i = 0; i < TAR_BLOCK; i++) sum += block[i]!
  block.write(`${sum.toString(8).padStart(6, '0')}\u0000 `, 148, 8, 'latin1')
}

/** Zero-padded octal with a trailing NUL, filling the field. */
function writeOctal(block: Buffer, offset: number, width: number, value: number): void {
  block.write(`${value.toString(8).padStart(width - 1, '0')}\u0000`, offset, width, 'latin1')
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
  writeUstar(header, {
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
