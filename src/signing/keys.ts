/**
 * Signing and verification keys: ECDSA P-256, as `cosign generate-key-pair` makes them. A private
 * key is cosign's own encrypted PEM (`ENCRYPTED SIGSTORE PRIVATE KEY`) or a plain PKCS#8 / SEC1
 * PEM (`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`); a password comes from
 * COSIGN_PASSWORD, never from the command line. A public key is a PEM SubjectPublicKeyInfo
 * (cosign.pub).
 */
import {createHash, createPrivateKey, createPublicKey, scrypt, type KeyObject} from 'node:crypto'
import {readFile} from 'node:fs/promises'
import nacl from 'tweetnacl'
import {AegisError, messageOf} from '../errors.js'

/** The environment variable cosign reads its key password from; aegis-kit reads the same one. */
export const PASSWORD_ENV = 'COSIGN_PASSWORD'

const COSIGN_KEY_LABEL = 'ENCRYPTED SIGSTORE PRIVATE KEY'
/** Key files are a few hundred bytes; anything much larger is not a key. */
const MAX_KEY_FILE_BYTES = 64 * 1024

export interface SigningKey {
  privateKey: KeyObject
  publicKey: KeyObject
}

/** Reads a private key file; `env` supplies COSIGN_PASSWORD for an encrypted one. */
export async function loadSigningKey(path: string, env: NodeJS.ProcessEnv = process.env): Promise<SigningKey> {
  const pem = await readKeyFile(path, 'private')
  const password = env[PASSWORD_ENV]
  let privateKey: KeyObject
  if (pem.includes(`-----BEGIN ${COSIGN_KEY_LABEL}-----`)) {
    if (password === undefined) {
      throw new AegisError(`${path} is an encrypted cosign key and ${PASSWORD_ENV} is not set.`, {
        hint: `Export ${PASSWORD_ENV} with the key's password (an empty one is allowed).`,
      })
    }
    privateKey = await decryptCosignKey(path, pem, password)
  } else {
    try {
      privateKey = createPrivateKey(
        password === undefined ? {key: pem, format: 'pem'} : {key: pem, format: 'pem', passphrase: password},
      )
    } catch (error) {
      throw new AegisError(`${path} is not a private key aegis-kit can read: ${messageOf(error)}.`, {
        hint: `Use a key from \`cosign generate-key-pair\`, or a PEM from \`openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256\` (its password, if any, in ${PASSWORD_ENV}).`,
      })
    }
  }
  requireP256(privateKey, path)
  return {privateKey, publicKey: createPublicKey(privateKey)}
}

/** Reads a PEM public key (cosign.pub); given a private key PEM, its public half. */
export async function loadVerificationKey(path: string): Promise<KeyObject> {
  const pem = await readKeyFile(path, 'public')
  let key: KeyObject
  try {
    key = createPublicKey({key: pem, format: 'pem'})
  } catch (error) {
    throw new AegisError(`${path} is not a public key aegis-kit can read: ${messageOf(error)}.`, {
      hint: 'Give the PEM public key, e.g. the cosign.pub `cosign generate-key-pair` wrote.',
    })
  }
  requireP256(key, path)
  return key
}

/** The key hint cosign writes into a bundle: base64 of the SHA-256 of the DER public key. */
export function keyHint(publicKey: KeyObject): string {
  return createHash('sha256')
    .update(publicKey.export({format: 'der', type: 'spki'}))
    .digest('base64')
}

async function readKeyFile(path: string, kind: 'private' | 'public'): Promise<string> {
  let bytes: Buffer
  try {
    bytes = await readFile(path)
  } catch (error) {
    throw new AegisError(`Cannot read the ${kind} key ${path}: ${messageOf(error)}.`)
  }
  if (bytes.length > MAX_KEY_FILE_BYTES)
    throw new AegisError(`${path} is ${bytes.length} bytes: too large for a ${kind} key.`)
  return bytes.toString('utf8')
}

function requireP256(key: KeyObject, path: string): void {
  if (key.asymmetricKeyType === 'ec' && key.asymmetricKeyDetails?.namedCurve === 'prime256v1') return
  const what =
    key.asymmetricKeyType === 'ec'
      ? `an EC key on ${key.asymmetricKeyDetails?.namedCurve ?? 'an unknown curve'}`
      : `a ${key.asymmetricKeyType ?? 'secret'} key`
  throw new AegisError(
    `${path} is ${what}; aegis-kit signs and verifies with ECDSA P-256 keys, as cosign makes them.`,
    {hint: 'Make a pair with `cosign generate-key-pair`.'},
  )
}

/**
 * The JSON inside cosign's PEM (secure-systems-lab's "encrypted" format): the password through
 * scrypt gives a NaCl secretbox key, the box holds the PKCS#8 DER private key.
 */
interface CosignEncryptedKey {
  kdf: {name: string; params: {N: number; r: number; p: number}; salt: string}
  cipher: {name: string; nonce: string}
  ciphertext: string
}

async function decryptCosignKey(path: string, pem: string, password: string): Promise<KeyObject> {
  const body = pem.split(`-----BEGIN ${COSIGN_KEY_LABEL}-----`)[1]?.split(`-----END ${COSIGN_KEY_LABEL}-----`)[0] ?? ''
  let sealed: CosignEncryptedKey
  try {
    sealed = JSON.parse(Buffer.from(body.replace(/\s+/g, ''), 'base64').toString('utf8')) as CosignEncryptedKey
  } catch {
    throw new AegisError(`${path} claims to be a cosign key but its body is not the JSON cosign writes.`)
  }
  if (sealed.kdf?.name !== 'scrypt' || sealed.cipher?.name !== 'nacl/secretbox') {
    throw new AegisError(
      `${path} uses ${sealed.kdf?.name}/${sealed.cipher?.name}; aegis-kit reads cosign keys sealed with scrypt and nacl/secretbox.`,
    )
  }
  const {N, r, p} = sealed.kdf.params
  // Node's default scrypt memory cap (32 MiB) is below what cosign's N=65536, r=8 needs (64 MiB).
  const secretKey = await new Promise<Buffer>((resolve, reject) => {
    scrypt(
      password,
      Buffer.from(sealed.kdf.salt, 'base64'),
      nacl.secretbox.keyLength,
      {N, r, p, maxmem: 256 * N * r + 1024 * 1024},
      (error, key) => (error ? reject(error) : resolve(key)),
    )
  })
  const der = nacl.secretbox.open(
    Buffer.from(sealed.ciphertext, 'base64'),
    Buffer.from(sealed.cipher.nonce, 'base64'),
    secretKey,
  )
  if (!der)
    throw new AegisError(`Cannot decrypt ${path} with the password in ${PASSWORD_ENV}.`, {
      hint: `Set ${PASSWORD_ENV} to the password the key was made with.`,
    })
  return createPrivateKey({key: Buffer.from(der), format: 'der', type: 'pkcs8'})
}
