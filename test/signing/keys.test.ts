/**
 * Keys aegis-kit signs with: cosign's encrypted cosign.key decrypts (with COSIGN_PASSWORD) to the
 * pair whose public half cosign wrote to cosign.pub; a wrong password, a missing one and keys on
 * other curves are refused with what to do.
 */
import {execFileSync} from 'node:child_process'
import {mkdtemp, rm} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {keyHint, loadSigningKey, loadVerificationKey} from '../../src/signing/keys.js'

const PASSWORD = 'pässwörd with spaces'
let dir: string

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'aegis-signing-keys-'))
  await execa('cosign', ['generate-key-pair', '--output-key-prefix', join(dir, 'cosign')], {
    env: {COSIGN_PASSWORD: PASSWORD},
  })
  execFileSync('openssl', [
    'genpkey',
    '-algorithm',
    'EC',
    '-pkeyopt',
    'ec_paramgen_curve:P-384',
    '-out',
    join(dir, 'p384.key'),
  ])
})

afterAll(async () => {
  await rm(dir, {recursive: true, force: true})
})

describe('cosign.key', () => {
  it('decrypts with COSIGN_PASSWORD to the key whose public half is cosign.pub', async () => {
    const pair = await loadSigningKey(join(dir, 'cosign.key'), {COSIGN_PASSWORD: PASSWORD})
    expect(keyHint(pair.publicKey)).toBe(keyHint(await loadVerificationKey(join(dir, 'cosign.pub'))))
  })

  it('is refused with a wrong password, and without COSIGN_PASSWORD, naming it', async () => {
    await expect(loadSigningKey(join(dir, 'cosign.key'), {COSIGN_PASSWORD: 'wrong'})).rejects.toThrow(
      /Cannot decrypt .* with the password in COSIGN_PASSWORD/,
    )
    await expect(loadSigningKey(join(dir, 'cosign.key'), {})).rejects.toThrow('COSIGN_PASSWORD is not set')
  })
})

it('a P-384 key is refused: cosign key pairs are P-256', async () => {
  await expect(loadSigningKey(join(dir, 'p384.key'), {})).rejects.toThrow(
    /EC key on secp384r1; aegis-kit signs and verifies with ECDSA P-256/,
  )
})
