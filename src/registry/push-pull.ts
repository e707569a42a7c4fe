/**
 * The two directions the CLI uses: a local image to a registry reference, and back.
 */
import {AegisError} from '../errors.js'
import type {ContentStore} from '../oci/types.js'
import {copyGraph, type CopyOptions, type CopyResult} from './copy.js'
import {formatReference, manifestReference} from '../oci/reference.js'
import {RemoteRepository, type RemoteRepositoryOptions} from './repository.js'

export interface TransferResult extends CopyResult {
  /** The remote reference with the root's digest, e.g. `ghcr.io/acme/kit:1.0@sha256:…`. */
  reference: string
}

export type PushOptions = Omit<CopyOptions, 'tag'> & RemoteRepositoryOptions

/**
 * Pushes the image `localReference` names in `local` to `remote` (`registry/repo[:tag]`; the tag
 * defaults to `latest`, a `@digest` must match the image), with its referrers (SBOMs, signatures).
 */
export async function pushImage(
  local: ContentStore,
  localReference: string,
  remote: string | RemoteRepository,
  options: PushOptions = {},
): Promise<TransferResult> {
  const repository = typeof remote === 'string' ? new RemoteRepository(remote, options) : remote
  const root = await local.resolve(localReference)
  const {tag, digest} = repository.reference
  if (digest && digest !== root.digest) {
    throw new AegisError(
      `Cannot push ${localReference} as ${formatReference(repository.reference)}: the image's digest is ${root.digest}.`,
      {
        hint: "Leave out the @digest, or give the image's own digest.",
      },
    )
  }
  const result = await copyGraph(local, repository, root, {
    referrers: true,
    ...options,
    tag: tag ?? (digest ? undefined : 'latest'),
  })
  return {
    ...result,
    reference: formatReference({
      ...repository.reference,
      tag: tag ?? (digest ? undefined : 'latest'),
      digest: result.root.digest,
    }),
  }
}

export type PullOptions = Omit<CopyOptions, 'tag'> &
  RemoteRepositoryOptions & {
    /** The reference to give the image in `local`; defaults to the remote reference as written canonically. */
    localReference?: string
  }

/** Pulls `remote` (`registry/repo[:tag][@digest]`) and its referrers into `local`, and tags it there. */
export async function pullImage(
  remote: string | RemoteRepository,
  local: ContentStore,
  options: PullOptions = {},
): Promise<TransferResult> {
  const repository = typeof remote === 'string' ? new RemoteRepository(remote, options) : remote
  // One GET resolves the reference and brings the root's bytes (no HEAD first: one round trip less).
  const {descriptor: root, bytes} = await repository.resolveManifest(manifestReference(repository.reference))
  const localReference = options.localReference ?? formatReference(repository.reference)
  const manifests = new Map([...(options.manifests ?? []), [root.digest, bytes]])
  const result = await copyGraph(repository, local, root, {referrers: true, ...options, tag: localReference, manifests})
  return {...result, reference: formatReference({...repository.reference, digest: result.root.digest})}
}
