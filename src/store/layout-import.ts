/**
 * Importing OCI image layouts: a directory (`oci-layout:DIR[:TAG]`) or a tar of one
 * (`oci-archive:FILE[:TAG]`). Content is verified as it enters the store; tags are set last, all
 * at once, and only when every image is complete. A failed import sets no tag and leaves no
 * partial blob; blobs verified before the failure stay invisible to `list` until `prune`.
 */
import {createReadStream} from 'node:fs'
import {readFile, stat} from 'node:fs/promises'
import {basename, join} from 'node:path'
import {AegisError, messageOf} from '../errors.js'
import type {Descriptor, ImageIndex} from '../oci/types.js'
import {sha256Hex, shortDigest} from '../oci/digest.js'
import {MAX_MANIFEST_BYTES} from '../oci/manifest.js'
import {
  DEFAULT_TAG,
  parseLocalReference,
  parseTagReference,
  REF_NAME_ANNOTATION,
  splitRefName,
} from '../oci/reference.js'
import {errorCode} from '../fs-util.js'
import {walkGraph} from './graph.js'
import {parseIndexJson} from './layout.js'
import type {LocalStore} from './local-store.js'
import {readTarFiles} from './tar-io.js'
import type {ImportedImage, ImportOptions} from './types.js'

const BLOB_ENTRY = /^blobs\/sha256\/([a-f0-9]{64})$/
const MAX_LAYOUT_FILE_BYTES = 64 * 1024

export async function importOciLayout(
  store: LocalStore,
  dir: string,
  tag?: string,
  options: ImportOptions = {},
): Promise<ImportedImage[]> {
  const layoutText = await readSourceFile(join(dir, 'oci-layout'), dir)
  checkLayoutVersion(layoutText, dir)
  const index = parseIndexJson(await readSourceFile(join(dir, 'index.json'), dir), join(dir, 'index.json'))
  const selected = selectImages(index, tag, dir, defaultNameFrom(basename(dir)), options)
  const blobPath = (desc: Descriptor): string => join(dir, 'blobs', 'sha256', sha256Hex(desc.digest))
  return store.withWriteLease(async () => {
    for (const {desc} of selected) {
      const readManifest = async (d: Descriptor): Promise<Buffer> => {
        if (d.size > MAX_MANIFEST_BYTES)
          throw new AegisError(`manifest ${shortDigest(d.digest)} in ${dir} is larger than 4 MiB`)
        return readFile(blobPath(d)).catch((error: unknown) => {
          throw missingFromLayout(dir, d, error)
        })
      }
      await walkGraph(desc, readManifest, async (node) => {
        if (node.role === 'manifest') return store.push(node.desc, node.bytes)
        if (await store.exists(node.desc)) return
        const size = await stat(blobPath(node.desc)).then(
          (info) => info.size,
          (error: unknown) => {
            throw missingFromLayout(dir, node.desc, error)
          },
        )
        if (size !== node.desc.size) {
          throw new AegisError(
            `${shortDigest(node.desc.digest)} in ${dir} has ${size} bytes, its descriptor says ${node.desc.size}`,
            {
              hint: 'the layout is corrupt',
            },
          )
        }
        await store.push(node.desc, createReadStream(blobPath(node.desc)))
      })
    }
    return tagAll(store, selected)
  })
}

export async function importOciArchive(
  store: LocalStore,
  file: string,
  tag?: string,
  options: ImportOptions = {},
): Promise<ImportedImage[]> {
  let layoutText: string | undefined
  let indexText: string | undefined
  return store.withWriteLease(async () => {
    await readTarFiles(file, async ({name, size, content}) => {
      if (name === 'oci-layout' || name === 'index.json') {
        const limit = name === 'index.json' ? MAX_MANIFEST_BYTES : MAX_LAYOUT_FILE_BYTES
        if (size > limit)
          throw new AegisError(`${name} in ${file} is too large (${size} bytes)`, {
            hint: 'the archive is not an OCI archive',
          })
        const chunks: Buffer[] = []
        for await (const chunk of content) chunks.push(chunk as Buffer)
        const text = Buffer.concat(chunks).toString('utf8')
        if (name === 'index.json') indexText = text
        else layoutText = text
        return
      }
      const blob = BLOB_ENTRY.exec(name)
      if (blob) {
        const desc = {mediaType: 'application/octet-stream', digest: `sha256:${blob[1]}`, size}
        if (await store.exists(desc)) {
          content.resume() // already stored and verified; skip the archive's copy
          return
        }
        return store.push(desc, content)
      }
      if (name.startsWith('blobs/')) {
        throw new AegisError(`archive entry "${name}" is not a sha256 blob`, {
          hint: 'the store only holds sha256 content',
        })
      }
      content.resume() // other files (e.g. docker's manifest.json) are never written anywhere
    })
    if (layoutText === undefined || indexText === undefined) {
      throw new AegisError(
        `${file} is not an OCI archive: it has no ${layoutText === undefined ? 'oci-layout' : 'index.json'}`,
        {
          hint: 'make one with `skopeo copy ... oci-archive:FILE` or `aegis-kit export`',
        },
      )
    }
    checkLayoutVersion(layoutText, file)
    const index = parseIndexJson(indexText, `index.json in ${file}`)
    const selected = selectImages(
      index,
      tag,
      file,
      defaultNameFrom(basename(file).replace(/(\.oci)?(\.tar)?(\.gz|\.tgz)?$/, '')),
      options,
    )
    // Manifests and blobs arrived in archive order; setTags checks that each image is complete.
    return tagAll(store, selected)
  })
}

async function tagAll(store: LocalStore, selected: SelectedImage[]): Promise<ImportedImage[]> {
  await store.setTags(selected.map(({desc, name, tag}) => ({desc, reference: `${name}:${tag}`})))
  return selected.map(({desc, name, tag}) => ({name, tag, digest: desc.digest}))
}

interface SelectedImage {
  desc: Descriptor
  name: string
  tag: string
}

/**
 * Which entries of the source index to import and under which name:tag. A source ref.name in
 * `name:tag` form keeps its name; a bare one (umoci's and skopeo's `oci:DIR:TAG`) is a tag, and
 * the name comes from the directory or file name unless `options.as` gives one.
 */
function selectImages(
  index: ImageIndex,
  tag: string | undefined,
  source: string,
  defaultName: string,
  options: ImportOptions,
): SelectedImage[] {
  const refNameOf = (desc: Descriptor): string | undefined => desc.annotations?.[REF_NAME_ANNOTATION]
  const available = index.manifests.map(refNameOf).filter((name): name is string => name !== undefined)
  let chosen: Descriptor[]
  if (tag !== undefined) {
    chosen = index.manifests.filter((desc) => refNameOf(desc) === tag)
    if (chosen.length === 0) {
      throw new AegisError(`${source} has no image tagged "${tag}"`, {
        hint:
          available.length > 0 ? `it has: ${available.join(', ')}` : 'it has no tagged images; import it without a tag',
      })
    }
  } else {
    chosen = index.manifests.filter((desc) => refNameOf(desc) !== undefined)
    if (chosen.length === 0 && index.manifests.length === 1) chosen = index.manifests
    if (chosen.length === 0) {
      throw new AegisError(`${source} has ${index.manifests.length === 0 ? 'no images' : 'several untagged images'}`, {
        hint: 'name the image to import by its tag, e.g. oci-layout:DIR:TAG',
      })
    }
  }
  if (options.as !== undefined && chosen.length > 1) {
    throw new AegisError(`${source} has ${chosen.length} tagged images; a single name cannot be given to all of them`, {
      hint: `pick one by its tag (${available.join(', ')})`,
    })
  }
  return chosen.map((desc) => ({
    desc: {mediaType: desc.mediaType, digest: desc.digest, size: desc.size},
    ...destination(refNameOf(desc), defaultName, source, options),
  }))
}

function destination(
  refName: string | undefined,
  defaultName: string,
  source: string,
  options: ImportOptions,
): {name: string; tag: string} {
  const sourceTag = refName === undefined ? undefined : splitRefName(refName).tag
  if (options.as !== undefined) {
    const target = parseTagReference(options.as)
    return {name: target.name, tag: target.explicitTag ? target.tag : (sourceTag ?? DEFAULT_TAG)}
  }
  if (refName !== undefined && splitRefName(refName).name !== '') {
    const target = parseTagReference(refName)
    return {name: target.name, tag: target.tag}
  }
  const reference = `${defaultName}:${sourceTag ?? DEFAULT_TAG}`
  try {
    const target = parseLocalReference(reference)
    if (target.kind === 'tag' && defaultName !== '') return {name: target.name, tag: target.tag}
  } catch {
    // fall through to the clearer error below
  }
  throw new AegisError(`cannot name the image "${refName ?? '(untagged)'}" from ${source}`, {
    hint: 'import it under an explicit name, e.g. openclaw:1.0.0',
  })
}

/** A repository name from a directory or file name: lower case, invalid characters as dashes. */
function defaultNameFrom(base: string): string {
  return base
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '')
}

async function readSourceFile(path: string, source: string): Promise<string> {
  try {
    const info = await stat(path)
    if (info.size > MAX_MANIFEST_BYTES)
      throw new AegisError(`${path} is too large (${info.size} bytes)`, {hint: 'it is not an OCI layout file'})
    return await readFile(path, 'utf8')
  } catch (error) {
    if (error instanceof AegisError) throw error
    if (errorCode(error) === 'ENOENT' || errorCode(error) === 'ENOTDIR') {
      throw new AegisError(`${source} is not an OCI image layout: ${basename(path)} is missing`, {
        hint: 'an OCI layout has oci-layout, index.json and blobs/ (e.g. from `skopeo copy ... oci:DIR:TAG` or `umoci init`)',
      })
    }
    throw new AegisError(`cannot read ${path}: ${messageOf(error)}`, {cause: error})
  }
}

function checkLayoutVersion(text: string, source: string): void {
  let version: unknown
  try {
    version = (JSON.parse(text) as {imageLayoutVersion?: unknown}).imageLayoutVersion
  } catch {
    version = undefined
  }
  if (typeof version !== 'string' || !version.startsWith('1.')) {
    throw new AegisError(
      `${source} has an unsupported oci-layout file (imageLayoutVersion ${JSON.stringify(version)})`,
      {
        hint: 'only OCI image layout 1.x is supported',
      },
    )
  }
}

function missingFromLayout(dir: string, desc: Descriptor, cause: unknown): AegisError {
  if (errorCode(cause) === 'ENOENT') {
    return new AegisError(`${dir} is incomplete: blob ${shortDigest(desc.digest)} (${desc.mediaType}) is missing`, {
      hint: 'copy the whole layout, e.g. with `skopeo copy`',
    })
  }
  return new AegisError(`cannot read ${shortDigest(desc.digest)} from ${dir}: ${messageOf(cause)}`, {cause})
}
