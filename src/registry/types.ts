/**
 * Capabilities beyond ContentStore that a store may offer and copyGraph uses when present: they
 * let a remote destination retry an upload from the source and tag in the same request.
 */
import type {Readable} from 'node:stream'
import type {ContentStore, Descriptor} from '../oci/types.js'

/** A store that can take a blob as a factory of streams, so a failed upload re-reads the source. */
export interface BlobSourcePusher {
  pushBlob(desc: Descriptor, open: () => Readable | Promise<Readable>, options?: {mountFrom?: string[]}): Promise<'uploaded' | 'mounted'>
}

/** A store that can store a manifest and point a tag at it in one step. */
export interface ManifestPusher {
  pushManifest(desc: Descriptor, bytes: Buffer, reference?: string): Promise<void>
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
