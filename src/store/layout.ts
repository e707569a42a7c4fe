/**
 * The OCI image layout on disk: `oci-layout`, `index.json` and `blobs/sha256/`. index.json is
 * replaced atomically (temp file + rename) and only under the store lock, so concurrent
 * commands never lose each other's tags and readers never see a half-written file.
 */
import {mkdir, readFile} from 'node:fs/promises'
import {AegisError, messageOf} from '../errors.js'
import {isRecord, MAX_MANIFEST_BYTES, validateDescriptor} from '../oci/manifest.js'
import {MediaType} from '../oci/media-types.js'
import type {ImageIndex} from '../oci/types.js'
import {errorCode, syncDirectory, writeFileAtomically} from '../fs-util.js'
import {withFileLock} from '../file-lock.js'
import type {StorePaths} from './paths.js'

export const OCI_LAYOUT_VERSION = '1.0.0'

export function emptyIndex(): ImageIndex {
  return {schemaVersion: 2, mediaType: MediaType.ImageIndex, manifests: []}
}

/** index.json of the layout at `indexFile`; an absent file is an empty index. */
export async function readIndexFile(indexFile: string): Promise<ImageIndex> {
  let text: string
  try {
    text = await readFile(indexFile, 'utf8')
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return emptyIndex()
    throw new AegisError(`cannot read ${indexFile}: ${messageOf(error)}`, {
      hint: 'check the permissions of the store',
      cause: error,
    })
  }
  return parseIndexJson(text, indexFile)
}

export function parseIndexJson(text: string, source: string): ImageIndex {
  if (text.length > MAX_MANIFEST_BYTES) throw corruptIndex(source, 'it is larger than 4 MiB')
  let json: unknown
  try {
    json = JSON.parse(text)
  } catch (error) {
    throw corruptIndex(source, messageOf(error))
  }
  if (!isRecord(json) || !Array.isArray(json.manifests)) throw corruptIndex(source, 'no manifests array')
  const manifests = json.manifests.map((entry: unknown) => validateDescriptor(entry, source))
  return {...(json as unknown as ImageIndex), schemaVersion: 2, manifests}
}

/** Creates the layout's skeleton if missing. Safe to run concurrently. */
export async function ensureLayout(paths: StorePaths): Promise<void> {
  try {
    await mkdir(paths.blobsDir, {recursive: true})
    await mkdir(paths.tmpDir, {recursive: true})
    const layout = await readFile(paths.layoutFile, 'utf8').catch((error: unknown) => {
      if (errorCode(error) === 'ENOENT') return undefined
      throw error
    })
    if (layout === undefined) {
      await writeFileAtomically(
        paths.layoutFile,
        JSON.stringify({imageLayoutVersion: OCI_LAYOUT_VERSION}),
        paths.tmpDir,
      )
    }
  } catch (error) {
    if (error instanceof AegisError) throw error
    throw new AegisError(`cannot create the image store at ${paths.root}: ${messageOf(error)}`, {
      hint: 'set AEGIS_KIT_HOME to a writable directory',
      cause: error,
    })
  }
}

/** Read-modify-write of index.json under the store lock. `change` may throw to abort (nothing is written). */
export async function updateIndex<T>(
  paths: StorePaths,
  change: (index: ImageIndex) => Promise<{index: ImageIndex; result: T}> | {index: ImageIndex; result: T},
): Promise<T> {
  await ensureLayout(paths)
  return withFileLock(paths.lockFile, async () => {
    const current = await readIndexFile(paths.indexFile)
    const {index, result} = await change(current)
    if (index !== current) {
      // Blob writes sync their data but not the directory they were renamed into: one sync here
      // makes every rename durable before a tag that may need it is.
      await syncDirectory(paths.blobsDir)
      const text = `${JSON.stringify({...index, mediaType: MediaType.ImageIndex}, null, 2)}\n`
      await writeFileAtomically(paths.indexFile, text, paths.tmpDir)
    }
    return result
  })
}

function corruptIndex(source: string, reason: string): AegisError {
  return new AegisError(`${source} is not a valid OCI index: ${reason}`, {
    hint: 'restore it from a backup, or move the store aside and import the images again',
  })
}
