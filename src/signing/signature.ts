/**
 * Signatures in a registry, stored as cosign 3 stores them: an OCI 1.1 artifact manifest whose
 * `subject` is the signed manifest and whose one layer is the Sigstore bundle
 * (artifactType application/vnd.dev.sigstore.bundle.v0.3+json). A registry with the referrers API
 * lists it under the subject; on one without (distribution 2.8) RemoteRepository adds it to the
 * `sha256-<hex>` tag's index, where cosign looks too.
 */
import type {KeyObject} from 'node:crypto'
import {AegisError, messageOf} from '../errors.js'
import {artifactManifest, blobOf, emptyConfig} from '../oci/artifact.js'
import {isManifest, parseManifest} from '../oci/manifest.js'
import type {ContentStore, Descriptor} from '../oci/types.js'
import {fetchManifest} from '../registry/copy.js'
import type {ReferrerSource} from '../registry/types.js'
import {readAll, verifyBytes} from '../registry/verify.js'
import {BundleMediaType, COSIGN_SIGN_PREDICATE, verifyBundle} from './bundle.js'

/** A key-pair bundle is under a kilobyte; this leaves room for certificates and log entries. */
const MAX_BUNDLE_BYTES = 1024 * 1024
/** Referrers examined per subject, so a registry listing thousands cannot keep a verify busy. */
const MAX_CANDIDATES = 64

/** The artifact manifest holding `bundle` as a signature of `subject`, and its descriptor. */
export function signatureManifest(
  subject: Descriptor,
  bundle: Buffer,
  created: Date,
): {descriptor: Descriptor; bytes: Buffer; config: Descriptor; layer: Descriptor} {
  const config = emptyConfig()
  const layer = blobOf(BundleMediaType, bundle)
  const manifest = artifactManifest(BundleMediaType, [layer.descriptor], {
    subject: {mediaType: subject.mediaType, digest: subject.digest, size: subject.size},
    // The annotations cosign sets on its own signature manifests.
    annotations: {
      'dev.sigstore.bundle.content': 'dsse-envelope',
      'dev.sigstore.bundle.predicateType': COSIGN_SIGN_PREDICATE,
      'org.opencontainers.image.created': created.toISOString().replace(/\.\d+Z$/, 'Z'),
    },
  })
  return {
    descriptor: {...manifest.descriptor, artifactType: BundleMediaType},
    bytes: manifest.bytes,
    config: config.descriptor,
    layer: layer.descriptor,
  }
}

/** Stores `bundle` in `store` as a signature referring to `subject`: blobs first, the manifest last. */
export async function attachSignature(store: ContentStore, subject: Descriptor, bundle: Buffer): Promise<Descriptor> {
  const {descriptor, bytes, config, layer} = signatureManifest(subject, bundle, new Date())
  if (!(await store.exists(config))) await store.push(config, emptyConfig().bytes)
  await store.push(layer, bundle)
  await store.push(descriptor, bytes)
  return descriptor
}

export interface VerifiedSignature {
  /** The signature manifest (the referrer) whose bundle verified. */
  signature: Descriptor
}

/**
 * Finds a signature of `subject` in `store` that verifies with `publicKey`. Throws an AegisError
 * listing what was found and why each was refused when none does.
 */
export async function verifySignatures(
  store: ContentStore & ReferrerSource,
  subject: Descriptor,
  publicKey: KeyObject,
): Promise<VerifiedSignature> {
  const candidates = (await store.referrers(subject)).filter(isManifest).slice(0, MAX_CANDIDATES)
  const refusals: string[] = []
  for (const candidate of candidates) {
    try {
      const bundle = await bundleOf(store, subject, candidate)
      if (!bundle) continue
      verifyBundle(bundle, subject.digest, publicKey)
      return {signature: candidate}
    } catch (error) {
      refusals.push(`${candidate.digest}: ${messageOf(error)}`)
    }
  }
  if (refusals.length === 0) {
    throw new AegisError(`${subject.digest} has no signature (no Sigstore bundle refers to it).`, {
      hint: 'Sign it with `aegis-kit sign REF --key KEY` or `cosign sign --key KEY`.',
    })
  }
  throw new AegisError(
    `No signature of ${subject.digest} verifies with this key:\n${refusals.map((line) => `  ${line}`).join('\n')}`,
    {
      hint: 'Check that the public key is the one the publisher signed with; a manifest changed after signing has another digest and no signature.',
    },
  )
}

/** The bundle a referrer holds, undefined for a referrer that is not a signature (an SBOM). */
async function bundleOf(store: ContentStore, subject: Descriptor, candidate: Descriptor): Promise<Buffer | undefined> {
  const parsed = parseManifest(candidate, await fetchManifest(store, candidate))
  if (parsed.kind !== 'manifest') return undefined
  const manifest = parsed.manifest
  const layer = manifest.layers?.[0]
  // cosign's own test for a bundle referrer: exactly one layer of a Sigstore bundle type.
  if (manifest.layers?.length !== 1 || !layer?.mediaType?.startsWith('application/vnd.dev.sigstore.bundle'))
    return undefined
  if (manifest.subject?.digest !== subject.digest)
    throw new AegisError(`it names ${manifest.subject?.digest ?? 'no subject'} as its subject`)
  if (layer.size > MAX_BUNDLE_BYTES)
    throw new AegisError(`its bundle is ${layer.size} bytes, more than a bundle may have (${MAX_BUNDLE_BYTES})`)
  const bytes = await readAll(await store.fetch(layer), MAX_BUNDLE_BYTES, `Bundle ${layer.digest}`)
  verifyBytes(bytes, layer)
  return bytes
}
