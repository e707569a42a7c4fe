/**
 * `LocalStore`: the content-addressed image store on this machine, an OCI image layout that
 * skopeo and umoci read as `oci:ROOT:NAME:TAG`. See README.md in this folder for the on-disk
 * format and the guarantees around crashes and concurrent commands.
 */
import {open, readFile, utimes} from 'node:fs/promises'
import type {Readable} from 'node:stream'
import {AegisError, messageOf} from '../errors.js'
import {isReferrersTag} from '../oci/artifact.js'
import {sha256Digest, sha256Hex, shortDigest} from '../oci/digest.js'
import {
  declaredMediaType,
  MAX_CONFIG_BYTES,
  MAX_MANIFEST_BYTES,
  parseManifest,
  validateDescriptor,
} from '../oci/manifest.js'
import {IMAGE_CONFIG_MEDIA_TYPES} from '../oci/media-types.js'
import {
  formatRefName,
  parseLocalReference,
  parseTagReference,
  REF_NAME_ANNOTATION,
  splitRefName,
} from '../oci/reference.js'
import type {ContentStore, Descriptor, ImageConfig, ImageIndex} from '../oci/types.js'
import {writeBlob, writeBlobWith} from './blob-writer.js'
import {isRealPlatform, summarizeImage} from './summary.js'
import {errorCode, statIfExists} from '../fs-util.js'
import {walkGraph} from './graph.js'
import {ensureLayout, readIndexFile, updateIndex} from './layout.js'
import {withWriteLease} from './leases.js'
import {describeStore, StorePaths} from './paths.js'
import {addReferrers, listReferrers} from './referrers.js'
import type {
  DockerExportOptions,
  ImportedImage,
  ImportOptions,
  InspectResult,
  PruneResult,
  RemovedTag,
  StoreEntry,
} from './types.js'

const READ_CHUNK_BYTES = 1024 * 1024

export class LocalStore implements ContentStore {
  readonly paths: StorePaths

  constructor(root: string) {
    this.paths = new StorePaths(root)
  }

  get root(): string {
    return this.paths.root
  }

  /** index.json, the file that holds the tags: absent in a store nothing was ever put in. */
  get indexFile(): string {
    return this.paths.indexFile
  }

  // ---- ContentStore ----

  /**
   * True when the blob is stored with the descriptor's size. Also refreshes its mtime: a caller
   * that skips pushing a present blob under a write lease needs it protected from prune too.
   */
  async exists(desc: Descriptor): Promise<boolean> {
    const path = this.blobPath(desc)
    const info = await statIfExists(path)
    if (info?.isFile() !== true || info.size !== desc.size) return false
    const now = new Date()
    await utimes(path, now, now).catch(() => undefined)
    return true
  }

  async fetch(desc: Descriptor): Promise<Readable> {
    try {
      const handle = await open(this.blobPath(desc), 'r')
      // 1 MiB reads: the default 64 KiB makes a push of a large layer thousands of reads and socket writes.
      return handle.createReadStream({highWaterMark: READ_CHUNK_BYTES})
    } catch (error) {
      if (errorCode(error) === 'ENOENT') throw this.missingBlob(desc)
      throw new AegisError(
        `cannot read ${shortDigest(desc.digest)} from the ${describeStore(this.root)}: ${messageOf(error)}`,
        {cause: error},
      )
    }
  }

  async push(desc: Descriptor, content: Readable | Buffer): Promise<void> {
    await ensureLayout(this.paths)
    await writeBlob(this.paths, desc, content)
  }

  /** `push` for a copy: the store verifies size and digest itself, so the copy need not; `onBytes` gives progress. */
  async pushVerifying(desc: Descriptor, content: Readable, onBytes: (bytes: number) => void): Promise<void> {
    await ensureLayout(this.paths)
    await writeBlob(this.paths, desc, content, onBytes)
  }

  /** A blob whose temp file `fill` writes (a registry download, direct-download.ts); kept only if the size and digest it reports match. */
  async pushFilled(
    desc: Descriptor,
    fill: (tempPath: string) => Promise<{size: number; digest: string} | undefined>,
  ): Promise<'stored' | 'not-filled'> {
    await ensureLayout(this.paths)
    return (await writeBlobWith(this.paths, desc, fill)) === 'not-filled' ? 'not-filled' : 'stored'
  }

  async resolve(reference: string): Promise<Descriptor> {
    const found = await this.lookup(reference)
    if (found) return found
    const parsed = parseLocalReference(reference)
    if (parsed.kind === 'digest') {
      throw new AegisError(`no image ${reference} in the ${describeStore(this.root)}`, {
        hint: 'run `aegis-kit images` to list the images in the store',
      })
    }
    const refName = formatRefName(parsed.name, parsed.tag)
    const otherTags = (await this.readIndex()).manifests
      .map((desc) => splitRefName(desc.annotations?.[REF_NAME_ANNOTATION] ?? ''))
      .filter((split) => split.name === parsed.name && !isReferrersTag(split.tag))
      .map((split) => split.tag)
      .sort()
    throw new AegisError(`no image ${refName} in the ${describeStore(this.root)}`, {
      hint:
        otherTags.length > 0
          ? `${parsed.name} has the tags ${otherTags.join(', ')}, e.g. ${parsed.name}:${otherTags[0]}`
          : 'run `aegis-kit images` to list the images in the store',
    })
  }

  /**
   * `resolve` for a caller that asks whether the store has an image: the descriptor `reference`
   * (`name:tag`, `name`, a digest) names, or undefined when there is none.
   */
  async lookup(reference: string): Promise<Descriptor | undefined> {
    const parsed = parseLocalReference(reference)
    const index = await this.readIndex()
    if (parsed.kind === 'digest') {
      const entry = index.manifests.find((desc) => desc.digest === parsed.digest)
      return entry ? untagged(entry) : this.untaggedManifest(parsed.digest)
    }
    const refName = formatRefName(parsed.name, parsed.tag)
    const entry = index.manifests.find((desc) => desc.annotations?.[REF_NAME_ANNOTATION] === refName)
    return entry ? untagged(entry) : undefined
  }

  async tag(desc: Descriptor, reference: string): Promise<void> {
    await this.setTags([{desc, reference}])
  }

  // ---- Referrers (what copyGraph uses to carry SBOMs and signatures; see referrers.ts) ----

  /** Manifests listed as referrers of `subject` by any `NAME:sha256-<hex>` tag. */
  async referrers(subject: Descriptor): Promise<Descriptor[]> {
    return listReferrers(this, subject)
  }

  /** Lists stored `referrers` of `subject` under `NAME:sha256-<hex>`, NAME from `reference` (`name:tag`). */
  async addReferrers(subject: Descriptor, referrers: Descriptor[], reference?: string): Promise<void> {
    await addReferrers(this, subject, referrers, reference)
  }

  // ---- Store operations for the CLI ----

  /**
   * Points several tags at once, in one index.json update: all or none. Every target must be
   * stored with all its children (manifests, configs, layers).
   */
  async setTags(tags: Array<{desc: Descriptor; reference: string}>): Promise<void> {
    const entries = tags.map(({desc, reference}) => {
      const {name, tag} = parseTagReference(reference)
      return {desc: validateDescriptor(desc, `the descriptor for ${reference}`), refName: formatRefName(name, tag)}
    })
    // Every tag already points there (a warm build re-tags what it tagged before): nothing to
    // lock, check or rewrite. Their content was checked when they were set.
    const current = await this.readIndex()
    const tagged = (refName: string, desc: Descriptor) =>
      current.manifests.some(
        (stored) =>
          stored.annotations?.[REF_NAME_ANNOTATION] === refName &&
          stored.digest === desc.digest &&
          stored.size === desc.size,
      )
    if (entries.every(({desc, refName}) => tagged(refName, desc))) return
    await updateIndex(this.paths, async (index) => {
      const added: Descriptor[] = []
      for (const {desc, refName} of entries) {
        const stored = await this.assertComplete(desc, refName)
        added.push({...stored, annotations: {[REF_NAME_ANNOTATION]: refName}})
      }
      const replaced = new Set(entries.map((entry) => entry.refName))
      const kept = index.manifests.filter((desc) => !replaced.has(desc.annotations?.[REF_NAME_ANNOTATION] ?? ''))
      return {index: {...index, manifests: [...kept, ...added]}, result: undefined}
    })
  }

  async list(): Promise<StoreEntry[]> {
    const index = await this.readIndex()
    const entries: StoreEntry[] = []
    for (const desc of index.manifests) {
      const refName = desc.annotations?.[REF_NAME_ANNOTATION]
      if (refName === undefined) continue
      const {name, tag} = splitRefName(refName)
      const summary = await summarizeImage(this, desc)
      const platforms = [...new Set(summary.images.map((image) => image.platform).filter(isRealPlatform))]
      const created = summary.images
        .map((image) => image.config?.created)
        .filter((c): c is string => !!c)
        .sort()
        .at(-1)
      entries.push({
        name,
        tag,
        digest: desc.digest,
        mediaType: desc.mediaType,
        size: summary.size,
        platforms,
        ...(created ? {created} : {}),
      })
    }
    return entries.sort((a, b) => a.name.localeCompare(b.name) || a.tag.localeCompare(b.tag))
  }

  async inspect(reference: string): Promise<InspectResult> {
    const descriptor = await this.resolve(reference)
    const index = await this.readIndex()
    const tags = index.manifests
      .filter((desc) => desc.digest === descriptor.digest)
      .map((desc) => desc.annotations?.[REF_NAME_ANNOTATION])
      .filter((name): name is string => name !== undefined)
    const summary = await summarizeImage(this, descriptor)
    const subjects = [...new Set([descriptor.digest, ...summary.images.map((image) => image.digest)])]
    const referrers = (
      await Promise.all(
        subjects.map(async (subject) =>
          (await listReferrers(this, {digest: subject}, index)).map((referrer) => ({...referrer, subject})),
        ),
      )
    ).flat()
    return {descriptor, tags, ...summary, referrers}
  }

  /**
   * Removes a tag (`name[:tag]`), or every tag of a digest. Blobs stay until `prune`, so removing
   * is instant and an image shared by another tag is untouched.
   */
  async remove(reference: string): Promise<RemovedTag[]> {
    const parsed = parseLocalReference(reference)
    const removed = await updateIndex(this.paths, (index) => {
      const matches = (desc: Descriptor): boolean =>
        parsed.kind === 'digest'
          ? desc.digest === parsed.digest
          : desc.annotations?.[REF_NAME_ANNOTATION] === formatRefName(parsed.name, parsed.tag)
      const gone = index.manifests.filter(matches)
      return {
        index: gone.length > 0 ? {...index, manifests: index.manifests.filter((desc) => !matches(desc))} : index,
        result: gone,
      }
    })
    if (removed.length === 0) {
      throw new AegisError(`no image ${reference} in the ${describeStore(this.root)}`, {
        hint: 'run `aegis-kit images` to list the images in the store',
      })
    }
    return removed.map((desc) => ({
      ...splitRefName(desc.annotations?.[REF_NAME_ANNOTATION] ?? ''),
      digest: desc.digest,
    }))
  }

  /**
   * Deletes blobs no tag reaches and temp files left by killed processes. Holds the index lock, so
   * no tag can appear meanwhile; blobs of imports/pulls in progress are protected by their lease.
   */
  async prune(): Promise<PruneResult> {
    const {pruneStore} = await import('./prune.js')
    return pruneStore(this)
  }

  /** Runs `action` (pushes followed by a tag) so that a concurrent prune keeps its blobs. */
  async withWriteLease<T>(action: () => Promise<T>): Promise<T> {
    await ensureLayout(this.paths)
    return withWriteLease(this.paths, action)
  }

  // Imports, exports and prune load their modules (tar-stream, zlib) on first use: push, pull
  // and list do not pay for them at start.

  /** `oci-layout:DIR[:TAG]`: copies the tagged image(s) of a layout directory into the store. */
  async importOciLayout(dir: string, tag?: string, options?: ImportOptions): Promise<ImportedImage[]> {
    const {importOciLayout} = await import('./layout-import.js')
    return importOciLayout(this, dir, tag, options)
  }

  /** `oci-archive:FILE[:TAG]`: a tar (optionally gzip'd) of an OCI layout. */
  async importOciArchive(file: string, tag?: string, options?: ImportOptions): Promise<ImportedImage[]> {
    const {importOciArchive} = await import('./layout-import.js')
    return importOciArchive(this, file, tag, options)
  }

  async exportOciArchive(reference: string, file: string): Promise<Descriptor> {
    const {exportOciArchive} = await import('./archive-export.js')
    return exportOciArchive(this, reference, file)
  }

  async exportDockerArchive(reference: string, file: string, options?: DockerExportOptions): Promise<Descriptor> {
    const {exportDockerArchive} = await import('./archive-export.js')
    return exportDockerArchive(this, reference, file, options)
  }

  // ---- Reading helpers (also used by import/export) ----

  /**
   * Where a stored blob is on disk, for readers that open the file themselves (QEMU boots the
   * guest's kernel and initramfs in place). The file is never written again once there.
   */
  blobPath(desc: Pick<Descriptor, 'digest'>): string {
    return this.paths.blob(sha256Hex(desc.digest))
  }

  /** Verified bytes of a stored manifest or index; undefined when absent. */
  async readManifest(desc: Descriptor): Promise<Buffer | undefined> {
    if (desc.size > MAX_MANIFEST_BYTES)
      throw new AegisError(`manifest ${shortDigest(desc.digest)} is larger than 4 MiB`)
    const bytes = await readFile(this.blobPath(desc)).catch((error: unknown) => {
      if (errorCode(error) === 'ENOENT') return undefined
      throw new AegisError(
        `cannot read ${shortDigest(desc.digest)} from the ${describeStore(this.root)}: ${messageOf(error)}`,
        {cause: error},
      )
    })
    if (bytes !== undefined && (bytes.length !== desc.size || sha256Digest(bytes) !== desc.digest)) {
      throw new AegisError(`stored content ${shortDigest(desc.digest)} is corrupt`, {
        hint: `remove the images that use it, run prune, and import them again (${describeStore(this.root)})`,
      })
    }
    return bytes
  }

  /** The parsed image config, or undefined when it is not an image config or not stored. */
  async readImageConfig(desc: Descriptor): Promise<ImageConfig | undefined> {
    if (!IMAGE_CONFIG_MEDIA_TYPES.has(desc.mediaType) || desc.size > MAX_CONFIG_BYTES) return undefined
    const bytes = await readFile(this.blobPath(desc)).catch(() => undefined)
    if (bytes === undefined || sha256Digest(bytes) !== desc.digest) return undefined
    try {
      return JSON.parse(bytes.toString('utf8')) as ImageConfig
    } catch {
      return undefined
    }
  }

  async readIndex(): Promise<ImageIndex> {
    return readIndexFile(this.paths.indexFile)
  }

  missingBlob(desc: Descriptor): AegisError {
    return new AegisError(`${shortDigest(desc.digest)} is not in the ${describeStore(this.root)}`, {
      hint: 'the image is incomplete: import or pull it again',
    })
  }

  /** Walks `desc`'s graph in the store; returns the descriptor to record, or throws listing what is missing. */
  private async assertComplete(desc: Descriptor, refName: string): Promise<Descriptor> {
    const missing: Descriptor[] = []
    let rootBytes: Buffer | undefined
    await walkGraph(
      desc,
      (d) => this.readManifest(d),
      async (node) => {
        if (node.role === 'manifest') {
          rootBytes ??= node.bytes
          return
        }
        if (!(await this.exists(node.desc))) missing.push(node.desc)
      },
      (absent) => void missing.push(absent),
    )
    if (missing.length > 0) {
      const first = missing[0] as Descriptor
      throw new AegisError(
        `cannot tag ${refName}: ${missing.length} of its blobs are not in the ${describeStore(this.root)} (${shortDigest(first.digest)} ${first.mediaType})`,
        {hint: 'store the manifest, config and every layer before tagging'},
      )
    }
    // Record the media type the manifest declares: that is what skopeo and umoci go by.
    const mediaType = (rootBytes && declaredMediaType(rootBytes)) ?? desc.mediaType
    return {...untagged(desc), mediaType}
  }

  /** Descriptor of a stored but untagged manifest (e.g. one platform of an index). */
  private async untaggedManifest(digest: string): Promise<Descriptor | undefined> {
    const info = await statIfExists(this.blobPath({digest}))
    if (!info?.isFile() || info.size > MAX_MANIFEST_BYTES) return undefined
    const bytes = await readFile(this.blobPath({digest}))
    const mediaType = declaredMediaType(bytes)
    if (mediaType === undefined) return undefined
    const desc = {mediaType, digest, size: bytes.length}
    try {
      parseManifest(desc, bytes)
    } catch {
      return undefined
    }
    return desc
  }
}

/** A descriptor without the store's tag annotation (what callers push or compare). */
function untagged(desc: Descriptor): Descriptor {
  const {annotations: _annotations, ...rest} = desc
  return rest
}
