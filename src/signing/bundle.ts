/**
 * The signature itself: a Sigstore bundle (v0.3) holding a DSSE envelope of an in-toto
 * statement whose subject is the signed manifest's digest, the payload `cosign sign` writes
 * since cosign 3 (predicate type https://sigstore.dev/cosign/sign/v1). Keys are bare key pairs:
 * no certificate, no transparency log entry and no timestamp, so signing and verifying work
 * offline; cosign verifies these with `--key` and `--insecure-ignore-tlog`.
 */
import {sign as signBytes, type KeyObject} from 'node:crypto'
import {bundleFromJSON, bundleToJSON, isBundleWithDsseEnvelope, type Bundle} from '@sigstore/bundle'
import {DSSEBundleBuilder, type Signer} from '@sigstore/sign'
import {Verifier, toSignedEntity} from '@sigstore/verify'
import {AegisError, messageOf} from '../errors.js'
import {keyHint, type SigningKey} from './keys.js'

export const BundleMediaType = 'application/vnd.dev.sigstore.bundle.v0.3+json'
export const IN_TOTO_PAYLOAD_TYPE = 'application/vnd.in-toto+json'
const IN_TOTO_STATEMENT_V1 = 'https://in-toto.io/Statement/v1'
/** What cosign's `sign` states about an image: its signature, with no further claim. */
export const COSIGN_SIGN_PREDICATE = 'https://sigstore.dev/cosign/sign/v1'

interface Statement {
  _type: string
  subject: Array<{name?: string; digest: Record<string, string>}>
  predicateType: string
  predicate?: unknown
}

/** Signs the manifest `digest` (`sha256:<hex>`); the bundle as cosign stores it, JSON bytes. */
export async function signDigest(digest: string, key: SigningKey): Promise<Buffer> {
  const statement: Statement = {
    _type: IN_TOTO_STATEMENT_V1,
    subject: [{digest: {sha256: hexOf(digest)}}],
    predicateType: COSIGN_SIGN_PREDICATE,
    predicate: {},
  }
  // @sigstore/sign's signers are Fulcio's (keyless, online): a key pair signs through this small
  // Signer with Node's ECDSA (SHA-256, DER signature: what cosign produces and checks).
  const signer: Signer = {
    sign: async (data) => ({
      signature: signBytes('sha256', data, key.privateKey),
      key: {$case: 'publicKey', publicKey: '', hint: keyHint(key.publicKey)},
    }),
  }
  const bundle = await new DSSEBundleBuilder({signer, witnesses: []}).create({
    data: Buffer.from(JSON.stringify(statement)),
    type: IN_TOTO_PAYLOAD_TYPE,
  })
  // The builder also copies the hint into the DSSE signature's keyid; cosign leaves it empty, and
  // its DSSE verifier skips a signature whose keyid differs from its own idea of the key's id.
  for (const signature of bundle.content.dsseEnvelope.signatures) signature.keyid = ''
  return Buffer.from(JSON.stringify(bundleToJSON(bundle)))
}

/**
 * Checks that `bundleBytes` is a signature of the manifest `digest` by `publicKey`: the DSSE
 * signature over the statement (by @sigstore/verify, trusting only this key, with no log or
 * timestamp required), then the statement's subject. Throws an AegisError saying what failed.
 */
export function verifyBundle(bundleBytes: Buffer, digest: string, publicKey: KeyObject): void {
  let bundle: Bundle
  try {
    bundle = bundleFromJSON(JSON.parse(bundleBytes.toString('utf8')))
  } catch (error) {
    throw new AegisError(`not a Sigstore bundle: ${messageOf(error)}`)
  }
  if (!isBundleWithDsseEnvelope(bundle))
    throw new AegisError('the bundle holds a message signature, not the DSSE statement cosign signs images with')
  const verifier = new Verifier(
    {
      certificateAuthorities: [],
      timestampAuthorities: [],
      tlogs: [],
      ctlogs: [],
      publicKey: () => ({publicKey, validFor: () => true}),
    },
    {tlogThreshold: 0, ctlogThreshold: 0, tsaThreshold: 0},
  )
  try {
    verifier.verify(toSignedEntity(bundle))
  } catch (error) {
    throw new AegisError(`the signature does not verify with this key (${messageOf(error)})`)
  }
  const envelope = bundle.content.dsseEnvelope
  if (envelope.payloadType !== IN_TOTO_PAYLOAD_TYPE)
    throw new AegisError(`the signed payload is ${envelope.payloadType}, not an in-toto statement`)
  let statement: Statement
  try {
    statement = JSON.parse(envelope.payload.toString('utf8')) as Statement
  } catch {
    throw new AegisError('the signed payload is not JSON')
  }
  if (statement._type !== IN_TOTO_STATEMENT_V1)
    throw new AegisError(`the signed statement is of type ${String(statement._type)}`)
  // cosign 3 writes attestations (`cosign attest`) in the same bundles: only a signature counts.
  if (statement.predicateType !== COSIGN_SIGN_PREDICATE)
    throw new AegisError(`the statement is an attestation (${String(statement.predicateType)}), not a signature`)
  const names = (statement.subject ?? []).map((subject) => subject.digest?.sha256)
  if (!names.includes(hexOf(digest))) {
    throw new AegisError(
      `the signature is for ${names.map((hex) => `sha256:${hex}`).join(', ') || 'nothing'}, not ${digest}`,
    )
  }
}

function hexOf(digest: string): string {
  if (!/^sha256:[0-9a-f]{64}$/.test(digest)) throw new AegisError(`${digest} is not a sha256 digest.`)
  return digest.slice('sha256:'.length)
}
