/**
 * Signing and verifying what aegis-kit publishes, interoperable with cosign: key pairs
 * (`keys.ts`), the Sigstore bundle (`bundle.ts`) and its place in a registry as a referrer of the
 * signed manifest (`signature.ts`). See docs/signing.md.
 */
export {loadSigningKey, loadVerificationKey, keyHint, PASSWORD_ENV, type SigningKey} from './keys.js'
export {signDigest, verifyBundle, BundleMediaType} from './bundle.js'
export {attachSignature, verifySignatures, signatureManifest, type VerifiedSignature} from './signature.js'
export {signRemote, verifyRemote, type SignatureReport} from './remote.js'
