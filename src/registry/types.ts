/**
 * Capabilities beyond ContentStore that a store may offer and copyGraph uses when present: they
 * let a remote destination retry an upload from the source and tag in the same request.
 */
import type {Readable} from 'node:stream'
import type {ContentStore, Descriptor} from '../oci/types.js'
import type {FileBody, RegistryRequest} from './http.js'

/** A store that can take a blob as a factory of streams, so a failed upload re-reads the source. */
export interface BlobSourcePusher {
  pushBlob(
    desc: Descriptor,
    open: () => Readable | FileBody | Promise<Readable | FileBody>,
    options?: {mountFrom?: string[]},
  ): Promise<'uploaded' | 'mounted'>
}

/**
 * A store that checks size and digest itself before it keeps anything (the local store): a copy
 * hands it the source stream as is, without a verifying pass-through (a Transform costs ~100 ms
 * of CPU on a 210 MB pull), and it reports the bytes it reads.
 */
export interface VerifyingSink {
  pushVerifying(desc: Descriptor, content: Readable, onBytes: (bytes: number) => void): Promise<void>
}

export function canPushVerifying(store: ContentStore): store is ContentStore & VerifyingSink {
  return typeof (store as Partial<VerifyingSink>).pushVerifying === 'function'
}

/** What a filler of a store's temp file reports: the bytes it wrote and their digest. */
export interface FilledBlob {
  size: number
  digest: string
}

/**
 * A store that lets a copy write a blob's temp file itself (direct-download.ts) and
 * keeps the blob only once the size and digest the filler measured match the descriptor; the
 * temp file is removed otherwise. `fill` resolves undefined when it wrote nothing (the store
 * keeps nothing either).
 */
export interface TempFileSink {
  pushFilled(
    desc: Descriptor,
    fill: (tempPath: string) => Promise<FilledBlob | undefined>,
  ): Promise<'stored' | 'not-filled'>
}

export function canPushFilled(store: ContentStore): store is ContentStore & TempFileSink {
  return typeof (store as Partial<TempFileSink>).pushFilled === 'function'
}

/** A source whose blobs are one authorized GET away: the request can be sent from another thread. */
export interface DirectDownloadSource {
  downloadRequest(desc: Descriptor): Promise<RegistryRequest>
}

export function canDownloadDirect(store: ContentStore): store is ContentStore & DirectDownloadSource {
  return typeof (store as Partial<DirectDownloadSource>).downloadRequest === 'function'
}

/** A store that can store a manifest and point a tag at it in one step. */
export interface ManifestPusher {
  pushManifest(desc: Descriptor, bytes: Buffer, reference?: string): Promise<void>
}

/**
 * A destination that itself refuses a blob whose bytes do not hash to its digest: a registry, which
 * computes the digest of every upload and answers a `PUT ...?digest=` that does not match with
 * DIGEST_INVALID (distribution spec), so nothing enters it under a wrong digest. A copy to it
 * checks the size as it streams but does not hash the source a second time (sha256 of a 1 GB push
 * was ~0.5 s of CPU on the client, on top of the registry's own).
 */
export interface VerifiesOnReceipt {
  readonly verifiesOnReceipt: true
}

export function verifiesOnReceipt(store: ContentStore): store is ContentStore & VerifiesOnReceipt {
  return (store as Partial<VerifiesOnReceipt>).verifiesOnReceipt === true
}

export function canPushBlobSource(store: ContentStore): store is ContentStore & BlobSourcePusher {
  return typeof (store as Partial<BlobSourcePusher>).pushBlob === 'function'
}

export function canPushManifest(store: ContentStore): store is ContentStore & ManifestPusher {
  return typeof (store as Partial<ManifestPusher>).pushManifest === 'function'
}

/** A store that works better when told up front it is a copy's destination (a registry asks for push access once). */
export interface WriteIntent {
  prepareForWrite(): void
}

export function announcesWrites(store: ContentStore): store is ContentStore & WriteIntent {
  return typeof (store as Partial<WriteIntent>).prepareForWrite === 'function'
}

/** A store that lists the referrers of a manifest (OCI 1.1 `subject`: SBOMs, signatures), each with its artifactType. */
export interface ReferrerSource {
  referrers(subject: Descriptor): Promise<Descriptor[]>
}

/**
 * A store that keeps referrers findable from their subject once they are stored. `reference` is
 * the tag the copy gives its root, for a store that files referrers under a name (the local store's
 * `NAME:sha256-<hex>`).
 */
export interface ReferrerSink {
  addReferrers(subject: Descriptor, referrers: Descriptor[], reference?: string): Promise<void>
}

export function canListReferrers(store: ContentStore): store is ContentStore & ReferrerSource {
  return typeof (store as Partial<ReferrerSource>).referrers === 'function'
}

export function canAddReferrers(store: ContentStore): store is ContentStore & ReferrerSink {
  return typeof (store as Partial<ReferrerSink>).addReferrers === 'function'
}

/** A store that can say in one cheap request what a tag points at (undefined: no such tag). */
export interface TagPeeker {
  peekTag(tag: string): Promise<Descriptor | undefined>
}

export function canPeekTag(store: ContentStore): store is ContentStore & TagPeeker {
  return typeof (store as Partial<TagPeeker>).peekTag === 'function'
}
