/**
 * One repository on a registry as a ContentStore (oras-go's `remote.Repository`): blobs,
 * manifests, tags and referrers over the distribution-spec HTTP API.
 */
import type {Readable} from 'node:stream'
import {AegisError} from '../errors.js'
import {imageIndex, referrersTag} from '../oci/artifact.js'
import {isSha256Digest} from '../oci/digest.js'
import {
  declaredMediaType,
  isIndex,
  isManifest,
  MANIFEST_ACCEPT,
  MAX_MANIFEST_BYTES,
  parseManifest,
  referrerDescriptor,
  subjectOf,
} from '../oci/manifest.js'
import {MediaType} from '../oci/media-types.js'
import {baseUrl, formatReference, parseReference, type Reference, type ReferenceOptions} from '../oci/reference.js'
import type {ContentStore, Descriptor, ImageIndex} from '../oci/types.js'
import {RegistryClient, repositoryScope} from './auth.js'
import {tryMount, uploadBlob, type SendForPush, type UploadMode, type UploadOutcome} from './blob-upload.js'
import {DockerCredentials} from './credentials.js'
import {onceBody, type HttpResult, type RegistryRequest, type RequestBody} from './http.js'
import {RegistryError, errorFromResponse} from './registry-error.js'
import type {
  BlobSourcePusher,
  DirectDownloadSource,
  ManifestPusher,
  ReferrerSink,
  ReferrerSource,
  TagPeeker,
  VerifiesOnReceipt,
  WriteIntent,
} from './types.js'
import {readAll, sha256Digest, verifyBytes} from './verify.js'

export interface RemoteRepositoryOptions extends ReferenceOptions {
  /** Share one client between repositories to share its token cache. */
  client?: RegistryClient
  /** `auto` (default): one PUT per blob, chunks when the registry refuses a big body. */
  uploadMode?: UploadMode
  /** PATCH size for chunked uploads. */
  chunkSize?: number
  /** Where status lines go (a registry's `Retry-After` wait beginning); none: not shown. */
  notify?: (line: string) => void
}

const DEFAULT_CHUNK_SIZE = 8 * 1024 * 1024

let defaultClient: RegistryClient | undefined

/** The process-wide client using docker's credential store. */
export function defaultRegistryClient(): RegistryClient {
  defaultClient ??= new RegistryClient({credentials: new DockerCredentials().source})
  return defaultClient
}

export class RemoteRepository
  implements
    ContentStore,
    BlobSourcePusher,
    DirectDownloadSource,
    ManifestPusher,
    WriteIntent,
    TagPeeker,
    ReferrerSource,
    ReferrerSink,
    VerifiesOnReceipt
{
  readonly reference: Reference
  /** A registry checks every uploaded blob against the digest it is pushed as (see VerifiesOnReceipt). */
  readonly verifiesOnReceipt = true
  private readonly client: RegistryClient
  private readonly uploadMode: UploadMode
  private readonly chunkSize: number
  private readonly notify?: (line: string) => void
  /** Ask for pull and push on every request, so a push needs one token rather than two. */
  private writing = false
  /** Whether the registry has the referrers API (OCI 1.1), once a response has said. */
  private referrersApi: boolean | undefined

  constructor(reference: string | Reference, options: RemoteRepositoryOptions = {}) {
    this.reference = typeof reference === 'string' ? parseReference(reference, options) : reference
    this.client = options.client ?? defaultRegistryClient()
    this.uploadMode = options.uploadMode ?? 'auto'
    this.chunkSize = options.chunkSize ?? DEFAULT_CHUNK_SIZE
    this.notify = options.notify
  }

  /** Called by copyGraph when this repository is the destination. */
  prepareForWrite(): void {
    this.writing = true
  }

  get name(): string {
    return formatReference({registry: this.reference.registry, repository: this.reference.repository})
  }

  async exists(desc: Descriptor): Promise<boolean> {
    const result = await this.request('HEAD', this.contentUrl(desc), 'pull', {accept: acceptFor(desc)})
    result.response.discard()
    if (result.response.status === 200) return true
    if (result.response.status === 404) return false
    throw await errorFromResponse('HEAD', result.url, result.response, {
      what: `Checking ${desc.digest} in ${this.name}`,
      attempts: result.attempts,
    })
  }

  /** The blob's descriptor (size from the registry) or undefined when it is not there. */
  async headBlob(digest: string): Promise<Descriptor | undefined> {
    const result = await this.request('HEAD', this.url(`blobs/${digest}`), 'pull')
    result.response.discard()
    if (result.response.status === 404) return undefined
    if (result.response.status !== 200) {
      throw await errorFromResponse('HEAD', result.url, result.response, {
        what: `Checking blob ${digest} in ${this.name}`,
        attempts: result.attempts,
      })
    }
    return {mediaType: 'application/octet-stream', digest, size: Number(result.response.header('content-length') ?? 0)}
  }

  async fetch(desc: Descriptor): Promise<Readable> {
    const result = await this.request('GET', this.contentUrl(desc), 'pull', {accept: acceptFor(desc), size: desc.size})
    if (result.response.status !== 200) {
      throw await errorFromResponse('GET', result.url, result.response, {
        what: `Fetching ${desc.digest} from ${this.name}`,
        attempts: result.attempts,
      })
    }
    return result.response.body
  }

  /** The authorized GET of a blob, for a download outside this client (see `RegistryClient.authorize`). */
  downloadRequest(desc: Descriptor): Promise<RegistryRequest> {
    const actions = this.writing ? (['pull', 'push'] as const) : (['pull'] as const)
    return this.client.authorize(
      {method: 'GET', url: this.contentUrl(desc), headers: {}, insecure: this.reference.insecure},
      this.reference.registry,
      [repositoryScope(this.reference.repository, ...actions)],
    )
  }

  async push(desc: Descriptor, content: Readable | Buffer): Promise<void> {
    if (isManifest(desc)) {
      const bytes = Buffer.isBuffer(content)
        ? content
        : await readAll(content, MAX_MANIFEST_BYTES, `Manifest ${desc.digest}`)
      await this.pushManifest(desc, bytes, desc.digest)
      return
    }
    // A stream handed over once cannot be re-sent: pushBlob with a factory can.
    await this.pushBlob(desc, Buffer.isBuffer(content) ? content : onceBody(content))
  }

  /** Uploads a blob; the registry checks the digest before it becomes visible. */
  async pushBlob(desc: Descriptor, body: RequestBody, options: {mountFrom?: string[]} = {}): Promise<UploadOutcome> {
    return uploadBlob(this.sendForPush, this.url('blobs/uploads/'), desc, body, {
      mode: this.uploadMode,
      chunkSize: this.chunkSize,
      mountFrom: options.mountFrom?.filter((from) => from !== this.reference.repository),
    })
  }

  /** Mounts a blob from another repository on the same registry; false when the registry would not. */
  async mountBlob(desc: Descriptor, fromRepository: string): Promise<boolean> {
    return (await tryMount(this.sendForPush, this.url('blobs/uploads/'), desc, fromRepository)) === 'mounted'
  }

  private readonly sendForPush: SendForPush = (method, url, init = {}) =>
    this.client.send(
      {method, url, headers: init.headers, body: init.body, insecure: this.reference.insecure, notify: this.notify},
      this.reference.registry,
      [repositoryScope(this.reference.repository, 'pull', 'push'), ...(init.extraScopes ?? [])],
    )

  async resolve(reference: string): Promise<Descriptor> {
    const found = await this.headManifest(reference)
    if (found === 'absent') throw this.notFound(reference, 'HEAD')
    // Registries that omit headers on HEAD: read the manifest itself.
    return found ?? (await this.fetchManifest(reference)).descriptor
  }

  /**
   * What `reference` names and the manifest's bytes, from one GET: for a pull, which needs both,
   * a HEAD first is one more round trip. The digest is computed from the bytes (and must be
   * `reference` when that is a digest).
   */
  async resolveManifest(reference: string): Promise<{descriptor: Descriptor; bytes: Buffer}> {
    const found = await this.fetchManifest(reference, {absent: 'undefined'})
    if (!found) throw this.notFound(reference, 'GET')
    return found
  }

  private notFound(reference: string, method: string): RegistryError {
    return new RegistryError(`Resolving ${this.name}${isSha256Digest(reference) ? '@' : ':'}${reference}: not found.`, {
      method,
      url: String(this.url(`manifests/${reference}`)),
      status: 404,
      code: 'MANIFEST_UNKNOWN',
    })
  }

  /** What `tag` points at, from one HEAD; undefined when there is no such tag (or the registry does not say). */
  async peekTag(tag: string): Promise<Descriptor | undefined> {
    const found = await this.headManifest(tag)
    return found === 'absent' ? undefined : found
  }

  /** The manifest's descriptor from a HEAD, 'absent' on 404, undefined when the answer lacks headers. */
  private async headManifest(reference: string): Promise<Descriptor | 'absent' | undefined> {
    const what = `Resolving ${this.name}${isSha256Digest(reference) ? '@' : ':'}${reference}`
    const head = await this.request('HEAD', this.url(`manifests/${reference}`), 'pull', {accept: MANIFEST_ACCEPT})
    head.response.discard()
    if (head.response.status === 404) return 'absent'
    if (head.response.status !== 200)
      throw await errorFromResponse('HEAD', head.url, head.response, {what, attempts: head.attempts})
    const digest = head.response.header('docker-content-digest') ?? (isSha256Digest(reference) ? reference : undefined)
    const mediaType = head.response.header('content-type')?.split(';')[0]?.trim()
    const size = Number(head.response.header('content-length'))
    if (digest && mediaType && isManifest({mediaType}) && Number.isInteger(size) && size > 0)
      return {mediaType, digest, size}
    return undefined
  }

  /** The manifest bytes exactly as stored, with their descriptor (digest computed from the bytes). */
  async fetchManifest(reference: string): Promise<{descriptor: Descriptor; bytes: Buffer}>
  /** With `absent: 'undefined'`: undefined on a 404 instead of an error. */
  async fetchManifest(
    reference: string,
    options: {absent: 'undefined'},
  ): Promise<{descriptor: Descriptor; bytes: Buffer} | undefined>
  async fetchManifest(
    reference: string,
    options: {absent?: 'undefined'} = {},
  ): Promise<{descriptor: Descriptor; bytes: Buffer} | undefined> {
    const what = `Fetching manifest ${reference} from ${this.name}`
    const result = await this.request('GET', this.url(`manifests/${reference}`), 'pull', {accept: MANIFEST_ACCEPT})
    if (result.response.status === 404 && options.absent === 'undefined') {
      result.response.discard()
      return undefined
    }
    if (result.response.status !== 200)
      throw await errorFromResponse('GET', result.url, result.response, {what, attempts: result.attempts})
    const bytes = await result.response.bytes(MAX_MANIFEST_BYTES)
    if (bytes.length > MAX_MANIFEST_BYTES)
      throw new AegisError(`${what}: it is larger than ${MAX_MANIFEST_BYTES} bytes.`)
    const digest = sha256Digest(bytes)
    if (isSha256Digest(reference) && digest !== reference)
      throw new AegisError(`${what}: the registry returned content hashing to ${digest}.`)
    const mediaType =
      result.response.header('content-type')?.split(';')[0]?.trim() || declaredMediaType(bytes) || 'unknown'
    return {descriptor: {mediaType, digest, size: bytes.length}, bytes}
  }

  /** Stores manifest bytes exactly as given under `reference` (a tag, or the digest). */
  async pushManifest(desc: Descriptor, bytes: Buffer, reference: string = desc.digest): Promise<void> {
    verifyBytes(bytes, desc)
    const what = `Pushing manifest ${desc.digest} to ${this.name}${reference === desc.digest ? '' : `:${reference}`}`
    const result = await this.request('PUT', this.url(`manifests/${reference}`), 'push', {
      headers: {'content-type': desc.mediaType},
      body: bytes,
    })
    if (result.response.status !== 201 && result.response.status !== 200) {
      throw await errorFromResponse('PUT', result.url, result.response, {what, attempts: result.attempts})
    }
    result.response.discard()
    const stored = result.response.header('docker-content-digest')
    if (stored && stored !== desc.digest)
      throw new AegisError(`${what}: the registry stored it as ${stored}, so it changed the bytes.`)
    const parsed = parseManifest(desc, bytes)
    const subject = subjectOf(parsed)
    if (!subject) return
    // A registry with the referrers API says so with OCI-Subject; without it, the referrer is
    // findable only through the `sha256-<hex>` tag, which we keep up to date.
    this.referrersApi = result.response.header('oci-subject') !== null
    if (!this.referrersApi) await this.updateReferrersTag(subject, [referrerDescriptor(desc, parsed)])
  }

  async tag(desc: Descriptor, reference: string): Promise<void> {
    const {bytes} = await this.fetchManifest(desc.digest)
    await this.pushManifest(desc, bytes, reference)
  }

  /** Tags, all pages; an unknown repository has none. */
  async tags(options: {pageSize?: number} = {}): Promise<string[]> {
    const tags: string[] = []
    let url: URL | undefined = this.url('tags/list')
    if (options.pageSize) url.search = `?n=${options.pageSize}`
    while (url) {
      const result = await this.request('GET', url, 'pull', {accept: 'application/json'})
      if (result.response.status === 404) {
        result.response.discard()
        return tags
      }
      if (result.response.status !== 200)
        throw await errorFromResponse('GET', result.url, result.response, {what: `Listing tags of ${this.name}`})
      const body = await result.response.json<{tags?: string[] | null}>()
      tags.push(...(body.tags ?? []))
      const next = /<([^>]+)>\s*;\s*rel="?next"?/.exec(result.response.header('link') ?? '')?.[1]
      url = next ? new URL(next, result.url) : undefined
    }
    return tags
  }

  /** Deletes a manifest or blob by digest (the registry must allow deletes). */
  async delete(desc: Descriptor): Promise<void> {
    const result = await this.request('DELETE', this.contentUrl(desc), 'delete')
    if (result.response.status === 202 || result.response.status === 200) {
      result.response.discard()
      return
    }
    const error = await errorFromResponse('DELETE', result.url, result.response, {
      what: `Deleting ${desc.digest} from ${this.name}`,
    })
    if (result.response.status === 405) error.message += '. This registry does not allow deletes'
    throw error
  }

  /** Manifests whose `subject` is `subject`: the referrers API, else the `sha256-<hex>` tag. */
  async referrers(subject: Descriptor, artifactType?: string): Promise<Descriptor[]> {
    const url = this.url(`referrers/${subject.digest}`)
    if (artifactType) url.search = `?artifactType=${encodeURIComponent(artifactType)}`
    const result = await this.request('GET', url, 'pull', {accept: MediaType.ImageIndex})
    let manifests: Descriptor[]
    if (result.response.status === 200 && result.response.header('content-type')?.startsWith(MediaType.ImageIndex)) {
      this.referrersApi = true
      manifests = (await result.response.json<ImageIndex>()).manifests ?? []
    } else if (NO_REFERRERS_API.has(result.response.status) || result.response.status === 200) {
      result.response.discard()
      this.referrersApi = false
      manifests = (await this.referrersTagIndex(subject))?.manifests ?? []
    } else {
      throw await errorFromResponse('GET', result.url, result.response, {
        what: `Listing referrers of ${subject.digest}`,
      })
    }
    return artifactType ? manifests.filter((m) => m.artifactType === artifactType) : manifests
  }

  /**
   * Makes stored `referrers` of `subject` findable: nothing to do on a registry with the referrers
   * API, else they are merged into the `sha256-<hex>` tag (a re-push whose referrers were already
   * there still repairs a tag that lacks them).
   */
  async addReferrers(subject: Descriptor, referrers: Descriptor[]): Promise<void> {
    if (referrers.length === 0) return
    if (this.referrersApi === undefined) {
      const probe = await this.request('GET', this.url(`referrers/${subject.digest}`), 'pull', {
        accept: MediaType.ImageIndex,
      })
      probe.response.discard()
      this.referrersApi =
        probe.response.status === 200 &&
        probe.response.header('content-type')?.startsWith(MediaType.ImageIndex) === true
    }
    if (!this.referrersApi) await this.updateReferrersTag(subject, referrers)
  }

  private async referrersTagIndex(subject: Descriptor): Promise<ImageIndex | undefined> {
    const tag = referrersTag(subject.digest)
    const result = await this.request('GET', this.url(`manifests/${tag}`), 'pull', {accept: MediaType.ImageIndex})
    if (result.response.status === 404) {
      result.response.discard()
      return undefined
    }
    if (result.response.status !== 200)
      throw await errorFromResponse('GET', result.url, result.response, {what: `Reading referrers tag ${tag}`})
    return result.response.json<ImageIndex>()
  }

  /** Adds `entries` to the `sha256-<hex>` index listing referrers of `subject`, keeping what it lists already. */
  private async updateReferrersTag(subject: Descriptor, entries: Descriptor[]): Promise<void> {
    const current = await this.referrersTagIndex(subject)
    const listed = new Set((current?.manifests ?? []).map((m) => m.digest))
    const added = entries.filter((entry) => !listed.has(entry.digest))
    if (added.length === 0) return
    const index = imageIndex([...(current?.manifests ?? []), ...added])
    await this.pushManifest(index.descriptor, index.bytes, referrersTag(subject.digest))
  }

  private url(path: string): URL {
    return new URL(`${baseUrl(this.reference)}/v2/${this.reference.repository}/${path}`)
  }

  private contentUrl(desc: Descriptor): URL {
    return this.url(`${isManifest(desc) ? 'manifests' : 'blobs'}/${desc.digest}`)
  }

  private request(
    method: string,
    url: URL,
    access: 'pull' | 'push' | 'delete',
    init: {accept?: string; headers?: Record<string, string>; body?: RequestBody; size?: number} = {},
  ): Promise<HttpResult> {
    const headers = {...init.headers, ...(init.accept ? {accept: init.accept} : {})}
    const actions =
      access === 'delete'
        ? (['delete'] as const)
        : access === 'push' || this.writing
          ? (['pull', 'push'] as const)
          : (['pull'] as const)
    return this.client.send(
      {method, url, headers, body: init.body, insecure: this.reference.insecure, size: init.size, notify: this.notify},
      this.reference.registry,
      [repositoryScope(this.reference.repository, ...actions)],
    )
  }
}

/** Answers to GET /referrers/ from a registry without the referrers API (unknown route, method or feature); a 200 that is not an index counts too. */
const NO_REFERRERS_API = new Set([400, 404, 405, 501])

function acceptFor(desc: Descriptor): string | undefined {
  if (!isManifest(desc)) return undefined
  return isIndex(desc) || desc.mediaType !== MediaType.ImageManifest
    ? `${desc.mediaType}, ${MANIFEST_ACCEPT}`
    : MANIFEST_ACCEPT
}
