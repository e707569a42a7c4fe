/**
 * aegis-kit's signatures against the real cosign (Debian sid's 3.x, scripts/install-cosign) on a
 * real docker-registry 2.8, which has no referrers API, so signatures are found through the
 * `sha256-<hex>` tag: cosign verifies what `aegis-kit sign` wrote, `aegis-kit verify` verifies
 * what `cosign sign` wrote, and both refuse a wrong key, a signature moved onto another manifest
 * and a manifest whose bytes were changed in the registry's storage.
 */
import {execFileSync} from 'node:child_process'
import {writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {sha256Digest} from '../../src/oci/digest.js'
import {MediaType} from '../../src/oci/media-types.js'
import type {Descriptor, ImageIndex, ImageManifest} from '../../src/oci/types.js'
import {RemoteRepository} from '../../src/registry/repository.js'
import {attachSignature} from '../../src/signing/signature.js'
import {createSandbox, makeUmociImage, skopeo, type CliSandbox} from '../cli-images/helpers.js'
import {runCli} from '../helpers/cli.js'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'

const BUNDLE = 'application/vnd.dev.sigstore.bundle.v0.3+json'
const PASSWORD = 'correct horse'

let registry: TestRegistry
let sandbox: CliSandbox
let keys: {cosignKey: string; cosignPub: string; otherPub: string; plainKey: string; plainPub: string}
let images = 0

beforeAll(async () => {
  registry = await startRegistry()
  sandbox = await createSandbox()
  const dir = sandbox.dir
  await execa('cosign', ['generate-key-pair', '--output-key-prefix', join(dir, 'cosign')], {
    env: {COSIGN_PASSWORD: PASSWORD},
  })
  await execa('cosign', ['generate-key-pair', '--output-key-prefix', join(dir, 'other')], {
    env: {COSIGN_PASSWORD: 'other'},
  })
  execFileSync('openssl', [
    'genpkey',
    '-algorithm',
    'EC',
    '-pkeyopt',
    'ec_paramgen_curve:P-256',
    '-out',
    join(dir, 'plain.key'),
  ])
  execFileSync('openssl', ['pkey', '-in', join(dir, 'plain.key'), '-pubout', '-out', join(dir, 'plain.pub')])
  keys = {
    cosignKey: join(dir, 'cosign.key'),
    cosignPub: join(dir, 'cosign.pub'),
    otherPub: join(dir, 'other.pub'),
    plainKey: join(dir, 'plain.key'),
    plainPub: join(dir, 'plain.pub'),
  }
}, 120_000)

afterAll(async () => {
  await registry?.stop()
  await sandbox?.cleanup()
})

/** A new image (its own content, so its own digest) in the registry; its reference and digest. */
async function pushImage(): Promise<{ref: string; digest: string}> {
  const name = `image${++images}`
  const layout = await makeUmociImage(sandbox.dir, name, {layers: 1, layerSize: 1024})
  const ref = `${registry.host}/signed/${name}:1`
  await skopeo('copy', '-q', '--dest-tls-verify=false', `oci:${layout}:1.0`, `docker://${ref}`)
  const digest = JSON.parse(await skopeo('inspect', '--tls-verify=false', `docker://${ref}`)).Digest as string
  return {ref, digest}
}

async function cosignVerify(ref: string, publicKey: string) {
  return execa(
    'cosign',
    ['verify', '--key', publicKey, '--insecure-ignore-tlog', '--insecure-ignore-sct', '--allow-insecure-registry', ref],
    {reject: false, all: true, timeout: 60_000},
  )
}

/** The index the registry keeps under `sha256-<hex>` of `digest`, read by skopeo. */
async function referrersTag(ref: string, digest: string): Promise<ImageIndex> {
  const repository = ref.slice(0, ref.lastIndexOf(':'))
  return JSON.parse(
    await skopeo('inspect', '--raw', '--tls-verify=false', `docker://${repository}:sha256-${digest.slice(7)}`),
  ) as ImageIndex
}

describe('cosign verifies what aegis-kit signs', () => {
  it('sign --key cosign.key (COSIGN_PASSWORD) stores a bundle referrer in the sha256-<hex> tag; cosign verify --key accepts it, another key is refused', async () => {
    const {ref, digest} = await pushImage()
    const signed = await sandbox.run(['sign', ref, '--key', keys.cosignKey, '--json'], {
      env: {COSIGN_PASSWORD: PASSWORD},
    })
    expect(signed.exitCode, signed.all).toBe(0)
    const report = JSON.parse(signed.stdout) as {digest: string; signature: string}
    expect(report.digest).toBe(digest)

    const listed = (await referrersTag(ref, digest)).manifests
    expect(listed).toEqual([expect.objectContaining({digest: report.signature, artifactType: BUNDLE})])

    const accepted = await cosignVerify(ref, keys.cosignPub)
    expect(accepted.exitCode, accepted.all).toBe(0)
    expect(accepted.stdout).toContain(`"docker-manifest-digest":"${digest}"`)
    const refused = await cosignVerify(ref, keys.otherPub)
    expect(refused.exitCode).not.toBe(0)
    expect(refused.all).toMatch(/no matching (signatures|attestations)/)

    // And aegis-kit agrees with itself.
    expect((await sandbox.run(['verify', ref, '--key', keys.cosignPub])).exitCode).toBe(0)
    expect((await sandbox.run(['verify', ref, '--key', keys.otherPub])).exitCode).toBe(1)
  })

  it('a plain PKCS#8 P-256 key from openssl signs too, without COSIGN_PASSWORD', async () => {
    const {ref} = await pushImage()
    const signed = await sandbox.run(['sign', ref, '--key', keys.plainKey])
    expect(signed.exitCode, signed.all).toBe(0)
    const accepted = await cosignVerify(ref, keys.plainPub)
    expect(accepted.exitCode, accepted.all).toBe(0)
    expect((await cosignVerify(ref, keys.cosignPub)).exitCode).not.toBe(0)
  })

  it('an encrypted cosign key without COSIGN_PASSWORD, or with the wrong one, signs nothing', async () => {
    const {ref, digest} = await pushImage()
    const missing = await sandbox.run(['sign', ref, '--key', keys.cosignKey], {env: {COSIGN_PASSWORD: ''}})
    // An empty password is a password (cosign allows one): it is the wrong one here.
    expect(missing.exitCode).toBe(1)
    expect(missing.stderr).toContain('Cannot decrypt')
    const unset = await runCli(['sign', ref, '--key', keys.cosignKey], {
      extendEnv: false,
      env: {...sandbox.env, PATH: process.env.PATH ?? ''},
    })
    expect(unset.exitCode).toBe(1)
    expect(unset.stderr).toContain('COSIGN_PASSWORD is not set')
    await expect(referrersTag(ref, digest)).rejects.toThrow()
  })
})

describe('aegis-kit verifies what cosign signs', () => {
  it("verify --key cosign.pub accepts cosign sign's bundle; another key is refused, saying why", async () => {
    const {ref, digest} = await pushImage()
    const signingConfig = join(sandbox.dir, 'signing-config.json')
    // cosign 3 wants a signing config without a transparency log to sign offline.
    await execa('cosign', [
      'signing-config',
      'create',
      '--no-default-fulcio',
      '--no-default-rekor',
      '--no-default-tsa',
      '--no-default-oidc',
      '--out',
      signingConfig,
    ])
    await execa(
      'cosign',
      [
        'sign',
        '--key',
        keys.cosignKey,
        '--signing-config',
        signingConfig,
        '--allow-insecure-registry',
        '-y',
        `${ref.slice(0, ref.lastIndexOf(':'))}@${digest}`,
      ],
      {env: {COSIGN_PASSWORD: PASSWORD}, timeout: 60_000},
    )
    const [cosigns] = (await referrersTag(ref, digest)).manifests

    const verified = await sandbox.run(['verify', ref, '--key', keys.cosignPub, '--json'])
    expect(verified.exitCode, verified.all).toBe(0)
    expect(JSON.parse(verified.stdout)).toMatchObject({digest, signature: cosigns!.digest})

    const refused = await sandbox.run(['verify', ref, '--key', keys.otherPub])
    expect(refused.exitCode).toBe(1)
    expect(refused.stderr).toContain(`No signature of ${digest} verifies with this key`)
    expect(refused.stderr).toContain('signature verification failed')
  })

  it('an unsigned image is refused: no signature', async () => {
    const {ref, digest} = await pushImage()
    const refused = await sandbox.run(['verify', ref, '--key', keys.cosignPub])
    expect(refused.exitCode).toBe(1)
    expect(refused.stderr).toContain(`${digest} has no signature`)
  })
})

describe('tampering is refused by both', () => {
  it('a signature copied onto a changed manifest (the tag moved to it) does not verify it', async () => {
    const {ref, digest} = await pushImage()
    expect(
      (await sandbox.run(['sign', ref, '--key', keys.cosignKey], {env: {COSIGN_PASSWORD: PASSWORD}})).exitCode,
    ).toBe(0)
    const repository = new RemoteRepository(ref)
    const [signature] = (await referrersTag(ref, digest)).manifests
    const signatureManifest = JSON.parse(
      (await repository.fetchManifest(signature!.digest)).bytes.toString(),
    ) as ImageManifest
    const bundle = await readBlob(repository, signatureManifest.layers[0]!)

    // The attacker's manifest: the same image with an annotation added, under the same tag.
    const original = JSON.parse((await repository.fetchManifest(digest)).bytes.toString()) as ImageManifest
    const changedBytes = Buffer.from(JSON.stringify({...original, annotations: {'org.example.changed': 'yes'}}))
    const changed: Descriptor = {
      mediaType: MediaType.ImageManifest,
      digest: sha256Digest(changedBytes),
      size: changedBytes.length,
    }
    repository.prepareForWrite()
    await repository.pushManifest(changed, changedBytes, '1')
    await attachSignature(repository, changed, bundle)

    const ours = await sandbox.run(['verify', ref, '--key', keys.cosignPub])
    expect(ours.exitCode).toBe(1)
    expect(ours.stderr).toContain(`the signature is for ${digest}, not ${changed.digest}`)
    const cosigns = await cosignVerify(ref, keys.cosignPub)
    expect(cosigns.exitCode).not.toBe(0)
    // The untouched manifest still verifies by digest with both.
    const byDigest = `${ref.slice(0, ref.lastIndexOf(':'))}@${digest}`
    expect((await sandbox.run(['verify', byDigest, '--key', keys.cosignPub])).exitCode).toBe(0)
    expect((await cosignVerify(byDigest, keys.cosignPub)).exitCode).toBe(0)
  })

  it("a manifest whose bytes were changed in the registry's storage is refused", async () => {
    const {ref, digest} = await pushImage()
    expect(
      (await sandbox.run(['sign', ref, '--key', keys.cosignKey], {env: {COSIGN_PASSWORD: PASSWORD}})).exitCode,
    ).toBe(0)
    const repository = new RemoteRepository(ref)
    const original = (await repository.fetchManifest(digest)).bytes.toString()
    const layer = (JSON.parse(original) as ImageManifest).layers[0]!.digest
    // Another layer digest of the same length: the registry still parses and serves it.
    const swapped = `${layer.slice(0, -1)}${layer.endsWith('0') ? '1' : '0'}`
    await writeFile(registry.blobPath(digest), original.replace(layer, swapped))

    const ours = await sandbox.run(['verify', ref, '--key', keys.cosignPub])
    expect(ours.exitCode).toBe(1)
    expect(ours.stderr).toContain(`Content ${digest} failed verification`)
    const cosigns = await cosignVerify(ref, keys.cosignPub)
    expect(cosigns.exitCode).not.toBe(0)
  })
})

async function readBlob(repository: RemoteRepository, desc: Descriptor): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of await repository.fetch(desc)) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}
