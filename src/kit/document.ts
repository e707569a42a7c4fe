/**
 * Reads a manifest file into a YAML document that remembers where every node came from, so
 * schema and semantic problems can name `file:line:column`. Hostile input (binary, non-UTF-8,
 * alias bombs) is refused early with a located problem instead of being parsed; a file that is too
 * large, a FIFO or a device is refused before it is read (an AegisError from readRegularFile).
 */
import {Document, isMap, isPair, isScalar, isSeq, LineCounter, parseDocument, visit, type Node, type Pair} from 'yaml'
import {readRegularFile} from '../local-file.js'
import type {PathSegment, Problem} from './problems.js'

/** A kit manifest (aegis-kit.yaml) has no business being larger than this; bigger input is refused before parsing. */
const MAX_KIT_MANIFEST_BYTES = 1024 * 1024
/** Aliases a manifest may expand; YAML "billion laughs" documents need thousands. */
const MAX_ALIAS_COUNT = 50

export interface ManifestDocument {
  file: string
  text: string
  doc: Document.Parsed
  lineCounter: LineCounter
  /** The document as plain data (undefined when parsing failed). */
  data: unknown
}

export type ParseResult = {ok: true; document: ManifestDocument} | {ok: false; problems: Problem[]}
type Failure = Extract<ParseResult, {ok: false}>

/** Parses the manifest at `file`; a FIFO, a device or a file over MAX_KIT_MANIFEST_BYTES is an AegisError. */
export async function readManifestDocument(file: string): Promise<ParseResult> {
  return parseManifestText(file, await readRegularFile(file, {what: 'kit manifest', maxBytes: MAX_KIT_MANIFEST_BYTES}))
}

export function parseManifestText(file: string, bytes: Uint8Array): ParseResult {
  const decoded = decodeText(file, bytes)
  if (!decoded.ok) return decoded
  if (decoded.text.replace(/#[^\n]*/g, '').trim() === '') {
    return fail(
      file,
      1,
      1,
      'the manifest is empty',
      'a kit needs at least `name:` and `version:`; `aegis-kit init NAME` writes a starting point',
    )
  }
  return parseYaml(file, decoded.text)
}

/** The bytes as text; binary or non-UTF-8 input is a problem at the first offending byte. */
function decodeText(file: string, bytes: Uint8Array): {ok: true; text: string} | Failure {
  // Control bytes first: binary input is better called binary than "not UTF-8".
  const control = bytes.findIndex(
    (byte) => (byte < 0x20 && byte !== 0x09 && byte !== 0x0a && byte !== 0x0d) || byte === 0x7f,
  )
  if (control !== -1) {
    const {line, column} = positionOfByte(bytes, control)
    return fail(
      file,
      line,
      column,
      `binary data (control byte 0x${bytes[control].toString(16).padStart(2, '0')}): not a YAML manifest`,
      'aegis-kit.yaml must be a text file',
    )
  }
  try {
    return {ok: true, text: new TextDecoder('utf-8', {fatal: true, ignoreBOM: false}).decode(bytes)}
  } catch {
    const at = firstInvalidUtf8(bytes)
    const {line, column} = positionOfByte(bytes, at)
    return fail(
      file,
      line,
      column,
      `not UTF-8 text: invalid byte 0x${bytes[at].toString(16)} at offset ${at}`,
      'save the manifest as UTF-8 (is this a binary file?)',
    )
  }
}

/** The text as a located YAML document and as data; syntax errors and alias bombs are problems. */
function parseYaml(file: string, text: string): ParseResult {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, {
    lineCounter,
    prettyErrors: false,
    uniqueKeys: true,
    strict: true,
    keepSourceTokens: false,
  })
  if (doc.errors.length > 0) {
    return {
      ok: false,
      problems: doc.errors
        .slice(0, 5)
        .map((error) => yamlProblem(file, lineCounter, error.pos[0], error.code, error.message)),
    }
  }
  let data: unknown
  try {
    data = doc.toJS({maxAliasCount: MAX_ALIAS_COUNT})
  } catch (error) {
    const alias = firstAliasOffset(doc)
    const {line, col} = lineCounter.linePos(alias)
    const message =
      error instanceof Error && /alias/i.test(error.message)
        ? `too many YAML alias expansions (more than ${MAX_ALIAS_COUNT})`
        : `YAML could not be read: ${error instanceof Error ? error.message.split('\n')[0] : String(error)}`
    return fail(file, line, col, message, 'write the values out instead of using anchors and aliases')
  }
  return {ok: true, document: {file, text, doc, lineCounter, data}}
}

/** Line and column of the node at `path`; for a missing node, of its closest existing parent. `key` locates the key of a map entry instead of its value. */
export function locate(
  document: ManifestDocument,
  path: readonly PathSegment[],
  options: {key?: boolean} = {},
): {line: number; column: number} {
  let node: unknown = document.doc.contents
  let offset = rangeStart(node) ?? 0
  for (let i = 0; i < path.length; i++) {
    const segment = path[i]
    let next: unknown
    if (isMap(node)) {
      const pair = node.items.find((item: Pair) => keyText(item.key) === String(segment))
      if (!pair) break
      const isLast = i === path.length - 1
      next = isLast && options.key ? pair.key : (pair.value ?? pair.key)
      if (isLast && options.key) {
        offset = rangeStart(next) ?? offset
        node = undefined
        break
      }
    } else if (isSeq(node) && typeof segment === 'number') {
      next = node.items[segment]
    }
    if (next === undefined || next === null) break
    node = next
    offset = rangeStart(node) ?? offset
  }
  const {line, col} = document.lineCounter.linePos(offset)
  return {line, column: col}
}

/** The text of the node at `path` as written in the file (e.g. `1.0` where YAML read the number 1). */
export function sourceText(document: ManifestDocument, path: readonly PathSegment[]): string | undefined {
  const node = document.doc.getIn(path, true) as Node | undefined
  const range = node?.range
  return range ? document.text.slice(range[0], range[1]) : undefined
}

function keyText(key: unknown): string | undefined {
  if (isScalar(key)) return String(key.value)
  return undefined
}

function rangeStart(node: unknown): number | undefined {
  if (isPair(node)) return rangeStart(node.key)
  const range = (node as Node | undefined)?.range
  return range ? range[0] : undefined
}

function firstAliasOffset(doc: Document.Parsed): number {
  let offset = 0
  visit(doc, {
    Alias(_, node) {
      offset = node.range?.[0] ?? 0
      return visit.BREAK
    },
  })
  return offset
}

function yamlProblem(file: string, lineCounter: LineCounter, offset: number, code: string, message: string): Problem {
  const {line, col} = lineCounter.linePos(offset)
  const firstLine = message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '')
  const hints: Record<string, string> = {
    DUPLICATE_KEY: 'each key may appear once in a mapping; remove or merge the repeated one',
    TAB_AS_INDENT: 'YAML indentation must use spaces, not tabs',
    BAD_INDENT: 'check the indentation of this line against its parent',
    MULTIPLE_DOCS: 'a manifest is a single YAML document: remove the extra `---`',
    BAD_ALIAS: 'aliases must refer to an anchor defined earlier',
  }
  return {
    file,
    line,
    column: col,
    path: '',
    message: `YAML syntax error: ${firstLine}`,
    hint: hints[code] ?? 'fix the YAML syntax at this position',
  }
}

function fail(file: string, line: number, column: number, message: string, hint: string): Failure {
  return {ok: false, problems: [{file, line, column, path: '', message, hint}]}
}

function firstInvalidUtf8(bytes: Uint8Array): number {
  // Binary search for the longest valid prefix (a prefix may end inside a character: stream mode
  // accepts that), since the decoder only says yes or no.
  let good = 0
  let bad = bytes.length
  while (bad - good > 1) {
    const mid = (good + bad) >>> 1
    try {
      new TextDecoder('utf-8', {fatal: true}).decode(bytes.subarray(0, mid), {stream: true})
      good = mid
    } catch {
      bad = mid
    }
  }
  // The prefix check accepts a dangling lead byte, so the bad sequence may start a little
  // before `good`: at the nearest lead byte (0xC0 and up) within a character's length.
  if (bytes[good] < 0x80) {
    for (let k = good - 1; k >= Math.max(0, good - 3); k--) if (bytes[k] >= 0xc0) return k
  }
  return good
}

function positionOfByte(bytes: Uint8Array, offset: number): {line: number; column: number} {
  let line = 1
  let lineStart = 0
  for (let i = 0; i < offset; i++) {
    if (bytes[i] === 0x0a) {
      line++
      lineStart = i + 1
    }
  }
  return {line, column: offset - lineStart + 1}
}
