/**
 * Pulled kits are other people's code: a pull never takes over a short name (NAME:VERSION) that
 * names another kit, and running a pulled kit's hooks needs a decision, remembered per kit.
 */
import {readFile, rm, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {binRun, hasStackTrace, repoRoot} from '../helpers/cli.js'
import {startRegistry, type TestRegistry} from '../helpers/registry.js'
import {createSandbox, makeUmociImage, type CliSandbox} from '../cli-images/helpers.js'
import {copyHello} from './helpers.js'

interface Rendered {
  kit: string
  env: Record<string, string>
}
interface TrustRecord {
  sources: Array<{via: string; reference: string; kitArtifact: string}>
  trusted?: {by: string}
}

const IMPOSTOR_HOOK = `export function render_env() {
  return {env: {HELLO_TITLE: 'impostor'}, files: []}
}
`

let registry: TestRegistry
let user: CliSandbox
let attacker: CliSandbox
let impostorDir: string

beforeAll(async () => {
  registry = await startRegistry()
  user = await createSandbox()
  attacker = await createSandbox()
  // Annotated hello/0.1.0 like the user's own kit, with other code.
  impostorDir = await copyHello({'hooks/render_env.mjs': IMPOSTOR_HOOK})
})
afterAll(async () => {
  await registry?.stop()
  await user?.cleanup()
  await attacker?.cleanup()
  if (impostorDir) await rm(join(impostorDir, '..'), {recursive: true, force: true})
})

async function refs(sandbox: CliSandbox): Promise<Record<string, string>> {
  return (
    JSON.parse(await readFile(join(sandbox.env.AEGIS_KIT_HOME, 'store', 'kits', 'refs.json'), 'utf8')) as {
      refs: Record<string, string>
    }
  ).refs
}

describe('short names never change owner', () => {
  it("after pushing your own hello:0.1.0, pulling another registry's hello 0.1.0 keeps hello:0.1.0 on yours", async () => {
    const own = await user.run(['push', 'hello', `${registry.host}/mine/hello:0.1.0`])
    expect(own.exitCode, own.all).toBe(0)
    const ownDir = (await refs(user))['hello:0.1.0']
    expect(ownDir).toMatch(/^hello\/0\.1\.0-[0-9a-f]{12}$/)
    const pushed = await attacker.run(['push', impostorDir, `${registry.host}/other/hello:0.1.0`])
    expect(pushed.exitCode, pushed.all).toBe(0)

    const pulled = await user.run(['pull', `${registry.host}/other/hello:0.1.0`, '--kit-only'])
    expect(pulled.exitCode, pulled.all).toBe(0)

    // The short name runs the user's own hook; the impostor's never runs.
    const rendered = await user.json<Rendered>(['hooks', 'render-env', 'hello:0.1.0'])
    expect(rendered.env.HELLO_TITLE).toBe('Hello from aegis-kit')
    const after = await refs(user)
    expect(after['hello:0.1.0']).toBe(ownDir)
    expect(after[`${registry.host}/other/hello:0.1.0`]).not.toBe(ownDir)
    // And the pull said so.
    expect(pulled.stderr).toContain(`hello:0.1.0 still names the kit pushed from`)
    expect(pulled.stderr).toContain(`use ${registry.host}/other/hello:0.1.0 for this one`)
  })
})

describe('building a pulled kit', () => {
  it("tags its image NAME:VERSION-<digest12>, never over the user's own NAME:VERSION image", async () => {
    const builder = await createSandbox()
    try {
      // The user's own image named hello:0.1.0 (any image will do: here a small umoci one).
      const layout = await makeUmociImage(builder.dir, 'own', {layers: 1})
      const imported = await builder.run(['images', 'import', `oci-layout:${layout}:1.0`, '--tag', 'hello:0.1.0'])
      expect(imported.exitCode, imported.all).toBe(0)
      const ownDigest = await imageDigest(builder, 'hello:0.1.0')

      const pulledRef = `${registry.host}/other/hello:0.1.0`
      expect((await builder.run(['pull', pulledRef, '--kit-only'])).exitCode).toBe(0)
      const built = await builder.json<{reference: string; digest: string}>(['build', pulledRef, '--trust'])
      expect(built.reference).toMatch(/^hello:0\.1\.0-[0-9a-f]{12}$/)
      expect(await imageDigest(builder, 'hello:0.1.0')).toBe(ownDigest)
      expect(await imageDigest(builder, built.reference)).toBe(built.digest)
      // Pushing the pulled kit again takes the image built for it, not the user's.
      const pushed = await builder.json<{image: string | null}>([
        'push',
        pulledRef,
        `${registry.host}/again/hello:0.1.0`,
      ])
      expect(pushed.image).toBe(built.reference)
    } finally {
      await builder.cleanup()
    }
  })
})

async function imageDigest(sandbox: CliSandbox, reference: string): Promise<string | undefined> {
  const listed = await sandbox.json<{images: Array<{name: string; tag: string; digest: string}>}>(['images'])
  return listed.images.find((image) => `${image.name}:${image.tag}` === reference)?.digest
}

async function trustRecords(sandbox: CliSandbox): Promise<Record<string, TrustRecord>> {
  return (
    JSON.parse(await readFile(join(sandbox.env.AEGIS_KIT_HOME, 'store', 'kits', 'trust.json'), 'utf8')) as {
      kits: Record<string, TrustRecord>
    }
  ).kits
}

/** The CLI on a pseudo-terminal (script(1)) with `input` typed into it. */
async function onTerminalTyping(
  sandbox: CliSandbox,
  args: string[],
  input: string,
): Promise<{exitCode: number; screen: string}> {
  const command = [process.execPath, binRun, ...args].map((word) => `'${word}'`).join(' ')
  const result = await execa('script', ['-qfec', command, '/dev/null'], {
    cwd: repoRoot,
    env: sandbox.env,
    input,
    reject: false,
    timeout: 60_000,
  })
  return {exitCode: result.exitCode ?? -1, screen: String(result.stdout).replaceAll('\r\n', '\n')}
}

describe('trust on pull', () => {
  let reference: string
  let config: string
  beforeAll(async () => {
    reference = `${registry.host}/other/hello:0.1.0`
    config = join(user.dir, 'config.json')
    await writeFile(config, '{}\n')
  })

  it('records where a pulled kit came from, unverified and untrusted', async () => {
    const pulled = await user.json<{trusted: boolean; verified: unknown; kitArtifact: string; dir: string}>([
      'pull',
      reference,
      '--kit-only',
    ])
    expect(pulled).toMatchObject({trusted: false, verified: null})
    const record = (await trustRecords(user))[pulled.dir.split('/store/kits/')[1]!]
    expect(record?.sources).toEqual([
      {
        via: 'pull',
        reference: expect.stringMatching(new RegExp(`^${reference}@sha256:[0-9a-f]{64}$`)),
        kitArtifact: pulled.kitArtifact,
      },
    ])
    expect(record?.trusted).toBeUndefined()
    const text = await user.run(['pull', reference, '--kit-only'])
    expect(text.stdout).toContain('Not verified: `hooks` and `run` ask before running its code (or take --trust)')
  })

  it('without a terminal, its hooks and its boot are refused with an error naming --trust', async () => {
    for (const args of [
      ['hooks', 'render-env', reference],
      ['hooks', 'validate-config', reference, config],
      ['run', reference, '--', 'true'],
    ]) {
      const refused = await user.run(args)
      expect(refused.exitCode, refused.all).toBe(1)
      expect(refused.stderr).toMatch(
        /^Error: kit hello 0\.1\.0 \(hello\/0\.1\.0-[0-9a-f]{12}\), pulled from \S+, is not trusted yet: its hooks and image are code from a registry\n  hint: pass --trust to run it/,
      )
      expect(refused.stdout).not.toContain('impostor')
      expect(hasStackTrace(refused.all)).toBe(false)
    }
  })

  it('without a terminal, its build (npm install scripts on the host) is refused naming --trust, and builds nothing', async () => {
    const before = await user.json<{images: unknown[]}>(['images'])
    const refused = await user.run(['build', reference])
    expect(refused.exitCode, refused.all).toBe(1)
    expect(refused.stderr).toMatch(
      /^Error: kit hello 0\.1\.0 \(hello\/0\.1\.0-[0-9a-f]{12}\), pulled from \S+, is not trusted yet: its hooks and image are code from a registry\n {2}hint: pass --trust to run it/,
    )
    expect(refused.stdout).not.toContain('built ')
    expect(hasStackTrace(refused.all)).toBe(false)
    expect((await user.json<{images: unknown[]}>(['images'])).images).toEqual(before.images)
  })

  it('a kit whose hooks may use the network says so in the decision it asks for', async () => {
    const networked = await copyHello({}, '  network: true\n')
    // Its own puller: the other cases count the trust records of `user`.
    const puller = await createSandbox()
    try {
      const networkedRef = `${registry.host}/other/hello-net:1`
      expect((await attacker.run(['push', networked, networkedRef])).exitCode).toBe(0)
      expect((await puller.run(['pull', networkedRef, '--kit-only'])).exitCode).toBe(0)
      const refused = await puller.run(['hooks', 'render-env', networkedRef])
      expect(refused.exitCode).toBe(1)
      expect(refused.stderr).toMatch(
        /is not trusted yet: its hooks and image are code from a registry, and its hooks use your network \(hooks\.network: true\)\n {2}hint: pass --trust/,
      )
      // A kit without hooks.network says nothing of the network.
      expect((await puller.run(['pull', `${registry.host}/other/hello:0.1.0`, '--kit-only'])).exitCode).toBe(0)
      const plain = await puller.run(['hooks', 'render-env', `${registry.host}/other/hello:0.1.0`])
      expect(plain.stderr).toContain('is not trusted yet')
      expect(plain.stderr).not.toContain('network')
    } finally {
      await rm(join(networked, '..'), {recursive: true, force: true})
      await puller.cleanup()
    }
  })

  it('on a terminal it asks: no refuses and remembers nothing', async () => {
    const answered = await onTerminalTyping(user, ['hooks', 'render-env', reference], 'n\n')
    expect(answered.screen).toMatch(/is not trusted yet: run its code \(hooks, image\) on this machine\? \[y\/N\] /)
    expect(answered.exitCode).toBe(1)
    expect(answered.screen).toContain('you did not trust it')
    expect(answered.screen).not.toContain('impostor')
    expect(Object.values(await trustRecords(user)).filter((record) => record.trusted?.by === 'prompt')).toEqual([])
  })

  it('--trust runs it and is remembered for the kit: later runs need no flag', async () => {
    const trusted = await user.run(['hooks', 'render-env', reference, '--trust'])
    expect(trusted.exitCode, trusted.all).toBe(0)
    expect(trusted.stderr).toContain('aegis-kit: trusting kit hello 0.1.0')
    expect(trusted.stdout).toContain('HELLO_TITLE=impostor')
    const again = await user.json<Rendered>(['hooks', 'render-env', reference])
    expect(again.env.HELLO_TITLE).toBe('impostor')
    expect(
      Object.values(await trustRecords(user))
        .map((record) => record.trusted?.by)
        .sort(),
    ).toEqual(['flag', 'own'])
  })

  it('on a terminal, yes runs it and is remembered', async () => {
    const other = await copyHello({'www/other.html': 'another kit\n'})
    try {
      expect((await attacker.run(['push', other, `${registry.host}/other/hello-two:1`])).exitCode).toBe(0)
      expect((await user.run(['pull', `${registry.host}/other/hello-two:1`, '--kit-only'])).exitCode).toBe(0)
      const answered = await onTerminalTyping(
        user,
        ['hooks', 'render-env', `${registry.host}/other/hello-two:1`],
        'y\n',
      )
      expect(answered.exitCode, answered.screen).toBe(0)
      expect(answered.screen).toContain('HELLO_TITLE=Hello from aegis-kit')
      expect(
        Object.values(await trustRecords(user))
          .map((record) => record.trusted?.by)
          .sort(),
      ).toEqual(['flag', 'own', 'prompt'])
    } finally {
      await rm(join(other, '..'), {recursive: true, force: true})
    }
  })

  it("the user's own kit directory needs no decision", async () => {
    const rendered = await user.json<Rendered>(['hooks', 'render-env', impostorDir])
    expect(rendered.env.HELLO_TITLE).toBe('impostor')
  })

  it('a pull whose signature verifies with the given key is trusted: its hooks run without asking', async () => {
    const signer = await createSandbox()
    const puller = await createSandbox()
    try {
      await execa('cosign', ['generate-key-pair', '--output-key-prefix', join(signer.dir, 'cosign')], {
        env: {COSIGN_PASSWORD: 'pw'},
      })
      const signedRef = `${registry.host}/signed/hello:0.1.0`
      const pushed = await signer.run(['push', impostorDir, signedRef, '--sign', join(signer.dir, 'cosign.key')], {
        env: {COSIGN_PASSWORD: 'pw'},
      })
      expect(pushed.exitCode, pushed.all).toBe(0)
      const pulled = await puller.json<{trusted: boolean; verified: {keyFingerprint: string} | null}>([
        'pull',
        signedRef,
        '--kit-only',
        '--verify',
        join(signer.dir, 'cosign.pub'),
      ])
      expect(pulled.trusted).toBe(true)
      expect(pulled.verified?.keyFingerprint).toEqual(expect.any(String))
      expect(Object.values(await trustRecords(puller)).map((record) => record.trusted?.by)).toEqual(['signature'])
      const rendered = await puller.run(['hooks', 'render-env', signedRef])
      expect(rendered.exitCode, rendered.all).toBe(0)
      expect(rendered.stdout).toContain('HELLO_TITLE=impostor')
    } finally {
      await signer.cleanup()
      await puller.cleanup()
    }
  })
})
