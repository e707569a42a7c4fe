/**
 * `--insecure` means what it means to docker and skopeo (`--tls-verify=false`): HTTPS without
 * certificate checks, and plain HTTP for a registry without TLS. Real docker-registries, one
 * with a self-signed certificate for 127.0.0.1.
 */
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {RegistryClient} from '../../src/registry/auth.js'
import {pushImage} from '../../src/registry/push-pull.js'
import {RegistryError} from '../../src/registry/registry-error.js'
import {RemoteRepository} from '../../src/registry/repository.js'
import {LocalStore} from '../../src/store/local-store.js'
import {hasStackTrace} from '../helpers/cli.js'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'
import {createSandbox, makeUmociImage, skopeoInspect, type CliSandbox} from './helpers.js'

interface Report {
  digest: string
  remote: string
}

let sandbox: CliSandbox
let puller: CliSandbox
let tls: TestRegistry
let plain: TestRegistry
let digest: string

beforeAll(async () => {
  sandbox = await createSandbox()
  puller = await createSandbox()
  ;[tls, plain] = await Promise.all([startRegistry({tls: true}), startRegistry()])
  const layout = await makeUmociImage(sandbox.dir, 'app', {tag: '1.0', layers: 2})
  digest = (
    await sandbox.json<{imported: Array<{digest: string}>}>([
      'images',
      'import',
      `oci-layout:${layout}:1.0`,
      '--tag',
      'app:1.0',
    ])
  ).imported[0]!.digest
})

afterAll(async () => {
  await Promise.all([tls?.stop(), plain?.stop()])
  await sandbox?.cleanup()
  await puller?.cleanup()
})

describe('--insecure', () => {
  it('pushes to and pulls from an HTTPS registry whose certificate is self-signed', async () => {
    const pushed = await sandbox.json<Report>(['images', 'push', 'app:1.0', `${tls.host}/secure/app`, '--insecure'])
    expect(pushed.digest).toBe(digest)
    expect((await skopeoInspect(`${tls.host}/secure/app:1.0`)).Digest).toBe(digest)
    const pulled = await puller.json<Report>(['images', 'pull', `${tls.host}/secure/app:1.0`, '--insecure'])
    expect(pulled.digest).toBe(digest)
  })

  it('falls back to plain HTTP for a registry that does not speak TLS', async () => {
    const pushed = await sandbox.json<Report>(['images', 'push', 'app:1.0', `${plain.host}/fallback/app`, '--insecure'])
    expect(pushed.remote).toBe(`${plain.host}/fallback/app:1.0@${digest}`)
    expect((await skopeoInspect(`${plain.host}/fallback/app:1.0`)).Digest).toBe(digest)
  })

  it('without it, the certificate is checked: the error says so in one line and points at --insecure', async () => {
    // Loopback names default to plain HTTP, so ask for HTTPS with verification explicitly.
    const store = new LocalStore(`${sandbox.env.AEGIS_KIT_HOME}/store`)
    const repository = new RemoteRepository(
      {registry: tls.host, apiHost: tls.host, repository: 'checked/app', tag: '1.0', plainHttp: false, insecure: false},
      {
        client: new RegistryClient({retry: {maxAttempts: 1}}),
      },
    )
    const error = await pushImage(store, 'app:1.0', repository).then(
      () => undefined,
      (e: unknown) => e,
    )
    expect(error).toBeInstanceOf(RegistryError)
    expect((error as Error).message).toMatch(/self-signed certificate/)
    expect((error as RegistryError).hint).toMatch(/--insecure/)

    // Plain HTTP to the HTTPS registry (the loopback default) is refused by it, cleanly.
    const result = await sandbox.run(['images', 'push', 'app:1.0', `${tls.host}/secure/app`])
    expect(result.exitCode).toBe(1)
    expect(result.stderr).toMatch(
      /^Error: Push of app:1.0 to .* failed with 400 Bad Request\n  hint: If 127\.0\.0\.1:\d+ speaks HTTPS, pass --insecure/,
    )
    expect(hasStackTrace(result.all)).toBe(false)
  })
})
