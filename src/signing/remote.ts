/**
 * `sign` and `verify` of a reference in a registry: the reference resolved once to a digest, so
 * what is signed or verified is exactly that manifest (a tag moved meanwhile cannot interfere).
 */
import type {KeyObject} from 'node:crypto'
import type {Descriptor} from '../oci/types.js'
import {formatReference, manifestReference} from '../oci/reference.js'
import {fetchManifest, transferFailed, type RemoteRepository} from '../registry/index.js'
import {signDigest} from './bundle.js'
import type {SigningKey} from './keys.js'
import {attachSignature, verifySignatures} from './signature.js'

export interface SignatureReport {
  /** `registry/repository@sha256:…` of the signed manifest. */
  reference: string
  subject: Descriptor
  /** The signature manifest, a referrer of `subject`. */
  signature: Descriptor
}

/** Signs `subject` (default: what the repository's reference resolves to) and stores the signature beside it. */
export async function signRemote(
  repository: RemoteRepository,
  key: SigningKey,
  subject?: Descriptor,
): Promise<SignatureReport> {
  const resolved = subject ?? (await repository.resolve(manifestReference(repository.reference)))
  const bundle = await signDigest(resolved.digest, key)
  repository.prepareForWrite()
  const signature = await attachSignature(repository, resolved, bundle).catch((error: unknown) => {
    throw transferFailed(`Signing ${formatReference(repository.reference)}`, error)
  })
  return {reference: pinned(repository, resolved), subject: resolved, signature}
}

/** Resolves the repository's reference and finds a signature of it that verifies with `publicKey`. */
export async function verifyRemote(repository: RemoteRepository, publicKey: KeyObject): Promise<SignatureReport> {
  const subject = await repository.resolve(manifestReference(repository.reference))
  // The signature covers the digest the registry names; reading the manifest checks that what it
  // serves under that digest really hashes to it (a registry can name one digest, serve other bytes).
  await fetchManifest(repository, subject)
  const {signature} = await verifySignatures(repository, subject, publicKey)
  return {reference: pinned(repository, subject), subject, signature}
}

function pinned(repository: RemoteRepository, subject: Descriptor): string {
  return formatReference({
    registry: repository.reference.registry,
    repository: repository.reference.repository,
    digest: subject.digest,
  })
}
