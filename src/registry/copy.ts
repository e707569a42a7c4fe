/**
 * Copying a content graph between stores (oras-go's `oras.CopyGraph`): index → manifests →
 * config, layers and subject. Children go first and manifests last, so a tag never points at an
 * incomplete image; what the destination has is skipped, so a re-run resumes; every blob is
 * checked against its digest and size while it streams, before the destination keeps it.
 */
import type {Readable} from 'node:stream'
import {setTimeout as sleep} from 'node:timers/promises'
import {AegisError, isAegisError, messageOf} from '../errors.js'
import type {ContentStore, Descriptor, ImageIndex, Platform} from '../oci/types.js'
import {MAX_MANIFEST_BYTES, formatPlatform, isIndex, isManifest, matchesPlatform, parseManifest, successors} from './manifest.js'
import {RESUME_HINT} from './registry-error.js'
import {isTransientError} from './retry.js'
import {announcesWrites, canPushBlobSource, canPushManifest} from './types.js'
import {readAll, verifying, verifyBytes} from './verify.js'

export interface CopyProgress {
  /** `start`/`bytes`/`done` for a transfer; `skipped` when the destination had it; `mounted` when the registry linked it. */
  kind: 'start' | 'bytes' | 'done' | 'skipped' | 'mounted'
  descriptor: Descriptor
  /** Bytes of this descriptor transferred so far. */
  bytes: number
  totals: CopyTotals
}

export interface CopyTotals {
  /** Bytes transferred so far, all blobs. */
  bytesDone: number
  /** Bytes of every node discovered so far (grows as manifests are read). */
  bytesKnown: number
  nodesDone: number
  nodesKnown: number
}

export interface CopyOptions {
  /** After copying, point this tag at the root in the destination. */
  tag?: string
  /** Copy only the manifest for this platform when the root is an index (the result's root is that manifest). */
  platform?: Platform
  /** Blobs transferred at once. */
  concurrency?: number
  /** Repositories on the destination registry to mount blobs from instead of uploading. */
  mountFrom?: string[]
  /** Tries per blob when the connection drops mid-stream (the source is read again). */
  blobAttempts?: number
  progress?: (event: CopyProgress) => void
}

export interface CopyResult {
  /** What was copied: the given root, or the platform's manifest when filtered. */
  root: Descriptor
  /** Digests transferred, in completion order. */
  copied: string[]
  /** Digests the destination already had. */
  skipped: string[]
  /** Digests the destination registry mounted from another repository. */
  mounted: string[]
  bytesTransferred: number
}

export async function copyGraph(src: ContentStore, dst: ContentStore, root: Descriptor, options: CopyOptions = {}): Promise<CopyResult> {
  if (options.platform && isIndex(root)) root = await selectPlatform(src, root, options.platform)
  if (announcesWrites(dst)) dst.prepareForWrite()
  const copier = new GraphCopier(src, dst, options)
  const rootBytes = isManifest(root) ? await fetchManifest(src, root) : undefined
  // With a tag and a destination that can tag while storing, the root manifest is one request.
  const tagWhileStoring = options.tag !== undefined && rootBytes !== undefined && canPushManifest(dst)
  await copier.run(root, rootBytes, tagWhileStoring)
  if (options.tag !== undefined) {
    if (tagWhileStoring && canPushManifest(dst)) await dst.pushManifest(root, rootBytes!, options.tag)
    else await dst.tag(root, options.tag)
  }
  return {root, ...copier.result()}
}

class GraphCopier {
  private readonly visits = new Map<string, Promise<void>>()
  private readonly transfers: ReturnType<typeof createLimiter>
  private readonly checks = createLimiter(8)
  private readonly copied: string[] = []
  private readonly skipped: string[] = []
  private readonly mounted: string[] = []
  private readonly totals: CopyTotals = {bytesDone: 0, bytesKnown: 0, nodesDone: 0, nodesKnown: 0}
  private failure: unknown

  constructor(
    private readonly src: ContentStore,
    private readonly dst: ContentStore,
    private readonly options: CopyOptions,
  ) {
    this.transfers = createLimiter(options.concurrency ?? 4)
  }

  /** Copies the graph under `root`; on failure, waits for transfers in flight before rethrowing. */
  async run(root: Descriptor, rootBytes: Buffer | undefined, skipRootPush: boolean): Promise<void> {
    try {
      await this.visit(root, rootBytes, skipRootPush)
    } catch (error) {
      this.failure ??= error
      await Promise.allSettled([...this.visits.values()])
      throw this.failure
    }
  }

  result(): Omit<CopyResult, 'root'> {
    return {copied: this.copied, skipped: this.skipped, mounted: this.mounted, bytesTransferred: this.totals.bytesDone}
  }

  private visit(desc: Descriptor, knownBytes?: Buffer, skipPush = false): Promise<void> {
    let visit = this.visits.get(desc.digest)
    if (!visit) {
      this.totals.nodesKnown++
      this.totals.bytesKnown += desc.size
      visit = this.copyNode(desc, knownBytes, skipPush).catch((error: unknown) => {
        this.failure ??= error
        throw error
      })
      this.visits.set(desc.digest, visit)
    }
    return visit
  }

  private async copyNode(desc: Descriptor, knownBytes: Buffer | undefined, skipPush: boolean): Promise<void> {
    if (await this.checks(() => this.dst.exists(desc))) {
      this.skipped.push(desc.digest)
      this.finish(desc, 'skipped', 0)
      return
    }
    if (isManifest(desc)) {
      const bytes = knownBytes ?? (await fetchManifest(this.src, desc))
      await Promise.all(successors(desc, bytes).map((child) => this.visit(child)))
      if (!skipPush) await this.dst.push(desc, bytes)
      this.copied.push(desc.digest)
      this.totals.bytesDone += desc.size
      this.finish(desc, 'done', desc.size)
      return
    }
    await this.transfers(() => this.transferBlob(desc))
  }

  private async transferBlob(desc: Descriptor): Promise<void> {
    if (this.failure !== undefined) throw this.failure // Another node failed: start nothing new.
    const attempts = this.options.blobAttempts ?? 3
    for (let attempt = 1; ; attempt++) {
      let sent = 0
      const open = async (): Promise<Readable> => {
        this.totals.bytesDone -= sent // A re-read starts this blob's count again.
        sent = 0
        const source = await this.src.fetch(desc)
        return verifying(source, desc, (bytes) => {
          sent += bytes
          this.totals.bytesDone += bytes
          this.emit('bytes', desc, sent)
        })
      }
      try {
        this.emit('start', desc, 0)
        const outcome = canPushBlobSource(this.dst)
          ? await this.dst.pushBlob(desc, open, {mountFrom: this.options.mountFrom})
          : await this.dst.push(desc, await open()).then(() => 'uploaded' as const)
        if (outcome === 'mounted') this.mounted.push(desc.digest)
        else this.copied.push(desc.digest)
        this.finish(desc, outcome === 'mounted' ? 'mounted' : 'done', sent)
        return
      } catch (error) {
        if (attempt < attempts && isTransientError(error)) {
          await sleep(250 * 2 ** (attempt - 1))
          continue
        }
        if (isAegisError(error)) throw error
        throw new AegisError(`Copying ${desc.digest} (${desc.size} bytes) failed: ${messageOf(error)}`, {hint: RESUME_HINT, cause: error})
      }
    }
  }

  private finish(desc: Descriptor, kind: CopyProgress['kind'], bytes: number): void {
    this.totals.nodesDone++
    this.emit(kind, desc, bytes)
  }

  private emit(kind: CopyProgress['kind'], descriptor: Descriptor, bytes: number): void {
    this.options.progress?.({kind, descriptor, bytes, totals: {...this.totals}})
  }
}

/** A manifest's bytes from `store`, checked against its descriptor. */
export async function fetchManifest(store: ContentStore, desc: Descriptor): Promise<Buffer> {
  const bytes = await readAll(await store.fetch(desc), MAX_MANIFEST_BYTES, `Manifest ${desc.digest}`)
  verifyBytes(bytes, desc)
  return bytes
}

/** The manifest in `index` (recursively) for `platform`. */
export async function selectPlatform(store: ContentStore, index: Descriptor, platform: Platform): Promise<Descriptor> {
  const bytes = await fetchManifest(store, index)
  const manifests = parseManifest<ImageIndex>(bytes, index).manifests ?? []
  const match = manifests.find((m) => matchesPlatform(m.platform, platform))
  if (!match) {
    const available = manifests.map((m) => (m.platform ? formatPlatform(m.platform) : 'unspecified')).join(', ')
    throw new AegisError(`Index ${index.digest} has no manifest for ${formatPlatform(platform)} (it has: ${available || 'none'}).`)
  }
  return isIndex(match) ? selectPlatform(store, match, platform) : match
}

/** Runs at most `limit` tasks at once, in call order. */
export function createLimiter(limit: number): <T>(task: () => Promise<T>) => Promise<T> {
  let running = 0
  const queue: Array<() => void> = []
  const next = () => {
    if (running < limit) queue.shift()?.()
  }
  return <T>(task: () => Promise<T>) =>
    new Promise<T>((resolve, reject) => {
      queue.push(() => {
        running++
        task()
          .then(resolve, reject)
          .finally(() => {
            running--
            next()
          })
      })
      next()
    })
}
