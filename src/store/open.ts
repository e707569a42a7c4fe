/**
 * The CLI's way into the store: open it where the user keeps it, and read the transport-prefixed
 * sources `images import` takes (`oci-layout:DIR[:TAG]`, `oci-archive:FILE[:TAG]`).
 */
import {AegisError} from '../errors.js'
import {LocalStore} from './local-store.js'
import {defaultStoreRoot} from '../paths.js'
import type {ImportedImage} from './types.js'

/** The store at `defaultStoreRoot()` (AEGIS_KIT_HOME, else the user's data directory). */
export function openStore(root: string = defaultStoreRoot()): LocalStore {
  return new LocalStore(root)
}

export interface ImportSource {
  transport: 'oci-layout' | 'oci-archive'
  path: string
  /** The tag (ref.name) to pick inside the layout; every tagged image when absent. */
  tag?: string
}

const TRANSPORTS = ['oci-layout', 'oci-archive'] as const
const SOURCE_HINT = 'write oci-layout:DIR[:TAG] or oci-archive:FILE[:TAG], e.g. oci-layout:./build/layout:1.0'

/**
 * Splits `TRANSPORT:PATH[:TAG]`. As in skopeo, a `:` after the last `/` of the path starts the
 * tag, so `oci-layout:./img:1.0` is directory `./img`, tag `1.0`.
 */
export function parseImportSource(source: string): ImportSource {
  const colon = source.indexOf(':')
  const transport = colon === -1 ? '' : source.slice(0, colon)
  if (!(TRANSPORTS as readonly string[]).includes(transport)) {
    throw new AegisError(`"${source}" does not name a source aegis-kit can import`, {hint: SOURCE_HINT})
  }
  let path = source.slice(colon + 1)
  let tag: string | undefined
  const tagColon = path.lastIndexOf(':')
  if (tagColon > path.lastIndexOf('/')) {
    tag = path.slice(tagColon + 1)
    path = path.slice(0, tagColon)
    if (tag === '') throw new AegisError(`"${source}" ends with ":" but names no tag`, {hint: SOURCE_HINT})
  }
  if (path === '')
    throw new AegisError(`"${source}" names no ${transport === 'oci-layout' ? 'directory' : 'file'}`, {
      hint: SOURCE_HINT,
    })
  return {transport: transport as ImportSource['transport'], path, ...(tag ? {tag} : {})}
}

/** Imports `source` into `store`, optionally under the name `as` (`name[:tag]`). */
export function importSource(store: LocalStore, source: string, options: {as?: string} = {}): Promise<ImportedImage[]> {
  const parsed = parseImportSource(source)
  const importOptions = options.as ? {as: options.as} : {}
  return parsed.transport === 'oci-layout'
    ? store.importOciLayout(parsed.path, parsed.tag, importOptions)
    : store.importOciArchive(parsed.path, parsed.tag, importOptions)
}
