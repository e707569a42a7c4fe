/**
 * `push --sign` and `pull --verify` of a kit against a real docker-registry, checked with the real
 * cosign: what push signs, cosign verifies; a pull with the wrong key, or of an unsigned kit,
 * leaves nothing in the store; a wrong key password stops the push before anything is sent.
 */
import {readdir} from 'node:fs/promises'
import {join} from 'node:path'
import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {createSandbox, skopeo, type CliSandbox} from '../cli-images/helpers.js'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'

interface PushReport {
  digest: string
  signature: string | null
}
interface PullReport {
  digest: string
  dir: string
}

const PASSWORD = 'kit signing'

let registry: TestRegistry
let publisher: CliSandbox
const pullers: CliSandbox[] = []
let keys: {cosignKey: string; cosignPub: string; otherPub: string}
let signed: PushReport
let signedRef: string

beforeAll(async () => {
  registry = await startRegistry()
  publisher = await createSandbox()
  await execa('cosign', ['generate-key-pair', '--output-key-prefix', join(publisher.dir, 'cosign')], {
    env: {COSIGN_PASSWORD: PASSWORD},
  })
  await execa('cosign', ['generate-key-pair', '--output-key-prefix', join(publisher.dir, 'other')], {
    env: {COSIGN_PASSWORD: 'other'},
  })
  keys = {
    cosignKey: join(publisher.dir, 'cosign.key'),
    cosignPub: join(publisher.dir, 'cosign.pub'),
    otherPub: join(publisher.dir, 'other.pub'),
  }
  signedRef = `${registry.host}/kits/hello-signed:0.1.0`
  const pushed = await publisher.run(['push', 'hello', signedRef, '--sign', keys.cosignKey, '--json'], {
    env: {COSIGN_PASSWORD: PASSWORD},
  })
  if (pushed.exitCode !== 0) throw new Error(`push --sign failed:\n${pushed.all}`)
  signed = JSON.parse(pushed.stdout) as PushReport
}, 300_000)

afterAll(async () => {
  await registry?.stop()
  await publisher?.cleanup()
  for (const sandbox of pullers) await sandbox.cleanup()
})

async function emptySandbox(): Promise<CliSandbox> {
  const sandbox = await createSandbox()
  pullers.push(sandbox)
  return sandbox
}

/** Every file under the sandbox's store (blobs, kits, index), relative to it. */
async function storeFiles(sandbox: CliSandbox): Promise<string[]> {
  const root = join(sandbox.env.AEGIS_KIT_HOME, 'store')
  const entries = await readdir(root, {recursive: true, withFileTypes: true}).catch(() => [])
  return entries
    .filter((entry) => entry.isFile())
    .map((entry) => join(entry.parentPath, entry.name).slice(root.length + 1))
}

describe('push --sign', () => {
  it('signs the published kit; cosign verify --key accepts it and refuses another key', async () => {
    expect(signed.signature).toMatch(/^sha256:[0-9a-f]{64}$/)
    const referrers = JSON.parse(
      await skopeo(
        'inspect',
        '--raw',
        '--tls-verify=false',
        `docker://${registry.host}/kits/hello-signed:sha256-${signed.digest.slice(7)}`,
      ),
    ) as {manifests: Array<{digest: string}>}
    expect(referrers.manifests.map((m) => m.digest)).toContain(signed.signature)
    const cosign = (key: string) =>
      execa(
        'cosign',
        [
          'verify',
          '--key',
          key,
          '--insecure-ignore-tlog',
          '--insecure-ignore-sct',
          '--allow-insecure-registry',
          signedRef,
        ],
        {reject: false, all: true, timeout: 60_000},
      )
    const accepted = await cosign(keys.cosignPub)
    expect(accepted.exitCode, accepted.all).toBe(0)
    expect(accepted.stdout).toContain(`"docker-manifest-digest":"${signed.digest}"`)
    expect((await cosign(keys.otherPub)).exitCode).not.toBe(0)
  })

  it('with the wrong COSIGN_PASSWORD fails before pushing anything', async () => {
    const ref = `${registry.host}/kits/hello-wrong-password:0.1.0`
    const result = await publisher.run(['push', 'hello', ref, '--sign', keys.cosignKey], {
      env: {COSIGN_PASSWORD: 'not it'},
    })
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toContain('Cannot decrypt')
    await expect(skopeo('inspect', '--raw', '--tls-verify=false', `docker://${ref}`)).rejects.toThrow(
      /manifest unknown|not found/i,
    )
  })
})

describe('pull --verify', () => {
  it("with the signer's key pulls the kit", async () => {
    const sandbox = await emptySandbox()
    const pulled = await sandbox.json<PullReport>(['pull', signedRef, '--verify', keys.cosignPub])
    expect(pulled.digest).toBe(signed.digest)
    expect(await readdir(pulled.dir)).toContain('aegis-kit.yaml')
  })

  it('with another key is refused and leaves nothing in the store', async () => {
    const sandbox = await emptySandbox()
    const result = await sandbox.run(['pull', signedRef, '--verify', keys.otherPub])
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toContain(`No signature of ${signed.digest} verifies with this key`)
    expect((await storeFiles(sandbox)).filter((file) => !file.endsWith('.lock'))).toEqual([])
  })

  it('of an unsigned kit is refused and leaves nothing in the store', async () => {
    const unsignedRef = `${registry.host}/kits/hello-unsigned:0.1.0`
    expect((await publisher.run(['push', 'hello', unsignedRef])).exitCode).toBe(0)
    const sandbox = await emptySandbox()
    const result = await sandbox.run(['pull', unsignedRef, '--verify', keys.cosignPub])
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toContain('has no signature')
    expect((await storeFiles(sandbox)).filter((file) => !file.endsWith('.lock'))).toEqual([])
  })
})
