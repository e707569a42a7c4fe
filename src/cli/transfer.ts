/**
 * `images push` and `images pull` between the local store and a registry: choosing the remote
 * and local references, the platform, the upload mode, a write lease against a concurrent prune,
 * and errors that say what failed and that re-running resumes.
 */
import {AegisError} from '../errors.js'
import {hostOciPlatform} from '../oci/platform.js'
import {
  formatReference,
  parseLocalReference,
  parseReference as parseRemoteReference,
  type Reference,
} from '../oci/reference.js'
import type {Platform} from '../oci/types.js'
import {
  RemoteRepository,
  parsePlatform,
  pullImage,
  pushImage,
  type CopyProgress,
  type RemoteRepositoryOptions,
  type TransferResult,
} from '../registry/index.js'
import {transferFailed} from '../registry/registry-error.js'
import type {LocalStore} from '../store/index.js'

export interface RegistryFlags {
  plainHttp?: boolean
  insecure?: boolean
  /** Upload every blob in chunks (PATCH) instead of one PUT. */
  chunked?: boolean
}

export interface TransferReport {
  /** The reference in the local store. */
  local: string
  /** The remote reference with the digest, e.g. `127.0.0.1:5000/app:1.0@sha256:…`. */
  remote: string
  digest: string
  mediaType: string
  /** Digests sent (push) or received (pull). */
  transferred: string[]
  /** Digests the destination already had. */
  skipped: string[]
  /** Digests the registry mounted from another repository. */
  mounted: string[]
  bytesTransferred: number
  /** Digests of the referrers (SBOMs, signatures) that went along, whether sent now or already there. */
  referrers: string[]
}

/**
 * Pushes `localRef` to `destination` (`registry/repo[:tag]`). Without a tag in `destination` the
 * local tag is kept; without `destination` the local name must itself start with a registry.
 */
export async function pushToRegistry(
  store: LocalStore,
  localRef: string,
  destination: string | undefined,
  flags: RegistryFlags & Pick<RemoteRepositoryOptions, 'notify'>,
  progress?: (event: CopyProgress) => void,
): Promise<TransferReport> {
  const local = parseLocalReference(localRef)
  await store.resolve(localRef) // A missing local image is the user's typo, not a failed push.
  const target = destinationFor(localRef, local, destination, flags)
  const repository = new RemoteRepository(target, {...flags, uploadMode: flags.chunked ? 'chunked' : 'auto'})
  const where = formatReference(repository.reference)
  try {
    return report(localRef, await pushImage(store, localRef, repository, {progress}))
  } catch (error) {
    throw transferFailed(`Push of ${localRef} to ${where}`, error)
  }
}

/**
 * Pulls `remoteRef` into the store. An index is narrowed to `platform` (default: this machine's;
 * `all` keeps every platform). The local reference is `localTag`, else `registry/repo:tag`, else
 * (a digest without a tag) `registry/repo:digest-<12 hex>`.
 */
export async function pullFromRegistry(
  store: LocalStore,
  remoteRef: string,
  options: RegistryFlags & Pick<RemoteRepositoryOptions, 'notify'> & {platform?: string; localTag?: string},
  progress?: (event: CopyProgress) => void,
): Promise<TransferReport> {
  const repository = new RemoteRepository(remoteRef, options)
  const platform = pullPlatform(options.platform)
  const localReference = options.localTag ?? defaultLocalReference(repository.reference)
  parseLocalReference(localReference) // Fail before any download if the name cannot be stored.
  try {
    const result = await store.withWriteLease(() =>
      pullImage(repository, store, {localReference, progress, ...(platform ? {platform} : {})}),
    )
    return report(localReference, result)
  } catch (error) {
    throw transferFailed(`Pull of ${formatReference(repository.reference)}`, error)
  }
}

function pullPlatform(flag: string | undefined): Platform | undefined {
  if (flag === 'all') return undefined
  return flag ? parsePlatform(flag) : hostOciPlatform()
}

/** `registry/repo:tag`, or `registry/repo:digest-<12 hex>` for a digest without a tag: how a pull is stored. */
export function defaultLocalReference(reference: Reference): string {
  const name = `${reference.registry}/${reference.repository}`
  if (reference.tag || !reference.digest) return `${name}:${reference.tag ?? 'latest'}`
  return `${name}:digest-${(reference.digest ?? '').replace(/^sha256:/, '').slice(0, 12)}`
}

function destinationFor(
  localRef: string,
  local: ReturnType<typeof parseLocalReference>,
  destination: string | undefined,
  flags: RegistryFlags,
): Reference {
  if (destination === undefined) {
    const name = local.name
    const first = name?.split('/')[0] ?? ''
    if (!name || !name.includes('/') || !(/[.:]/.test(first) || first === 'localhost')) {
      throw new AegisError(`Where should ${localRef} go? Its name does not start with a registry.`, {
        hint: `give a destination, e.g. aegis-kit images push ${localRef} 127.0.0.1:5000/${name ?? 'app'}`,
      })
    }
    return parseRemoteReference(local.kind === 'tag' ? `${local.name}:${local.tag}` : name, flags)
  }
  const target = parseRemoteReference(destination, flags)
  if (target.tag === undefined && target.digest === undefined && local.kind === 'tag')
    return {...target, tag: local.tag}
  return target
}

/** `, 1 referrer` for a transfer's summary line; empty without referrers. */
export function referrerCount(result: {referrers: string[]}): string {
  const n = result.referrers.length
  return n === 0 ? '' : `, ${n} referrer${n === 1 ? '' : 's'}`
}

function report(local: string, result: TransferResult): TransferReport {
  return {
    local,
    remote: result.reference,
    digest: result.root.digest,
    mediaType: result.root.mediaType,
    transferred: result.copied,
    skipped: result.skipped,
    mounted: result.mounted,
    bytesTransferred: result.bytesTransferred,
    referrers: result.referrers.map((referrer) => referrer.digest),
  }
}
