/**
 * Issue 11, observations 6 and 7: what the user points aegis-kit at may not be a regular file (a
 * FIFO, a device node, a symlink to one), and names and messages from archives, registries and
 * hooks may carry terminal escape sequences. Reading must neither hang nor read without end,
 * `images export -o` must never replace what is not a regular file, and nothing printed may
 * carry an ESC byte from outside.
 *
 * Device nodes are made with mknod in a temp directory (the real /dev is never touched). The
 * readers are tested with a copy of /dev/null (1,3): before the fix a copy of /dev/zero would have
 * been read until memory ran out, which a machine shared with other tests should not be put
 * through; refusing a device does not depend on what it would give.
 */
import {createServer, type Server} from 'node:http'
import type {AddressInfo} from 'node:net'
import {lstat, mkdir, readdir, symlink, writeFile} from 'node:fs/promises'
import {createWriteStream} from 'node:fs'
import {join} from 'node:path'
import {pipeline} from 'node:stream/promises'
import {execa} from 'execa'
import tar from 'tar-stream'
import {afterAll, beforeAll, describe, expect, it, vi} from 'vitest'
import {hasStackTrace, runCli} from '../helpers/cli.js'
import {createSandbox, makeUmociImage, type CliSandbox} from '../cli-images/helpers.js'

/** A hang shows as the CLI killed at this limit (exit code -1), well below the test's own timeout. */
const NO_HANG_MS = 30_000
const ESC = '\x1b'
// Tests that run the CLI twice must outlast two killed hangs.
vi.setConfig({testTimeout: 2 * NO_HANG_MS + 30_000})
const HOSTILE = '\x1b]0;pwned\x07\x1b[2J\x9b31m'

let sandbox: CliSandbox
let dir: string

beforeAll(async () => {
  sandbox = await createSandbox()
  dir = sandbox.dir
  const layout = await makeUmociImage(dir, 'umoci-image', {tag: '1.0', layers: 1, layerSize: 1024})
  const imported = await run(['images', 'import', `oci-layout:${layout}:1.0`, '--tag', 'demo:1.0'])
  if (imported.exitCode !== 0) throw new Error(imported.all)
}, 120_000)
afterAll(() => sandbox?.cleanup())

/** The CLI with the sandbox's data directory, killed if it takes longer than NO_HANG_MS. */
const run = (args: string[]) => runCli(args, {env: sandbox.env, timeout: NO_HANG_MS})

async function mknod(path: string, kind: 'c' | 'p', major?: number, minor?: number): Promise<string> {
  await execa('mknod', kind === 'p' ? [path, 'p'] : [path, 'c', String(major), String(minor)])
  return path
}

/** A one-line AegisError (plus its hint), exit 1, no stack trace, no hang. */
function expectRefused(result: {exitCode: number; stderr: string; all: string}, message: RegExp): void {
  expect(result.exitCode, result.all).toBe(1)
  expect(result.stderr).toMatch(message)
  expect(
    result.stderr
      .trim()
      .split('\n')
      .filter((line) => !line.startsWith('  hint:')),
  ).toHaveLength(1)
  expect(hasStackTrace(result.all)).toBe(false)
}

describe('images export -o refuses a target that is not a regular file', () => {
  const targets: Array<{
    name: string
    make: (path: string) => Promise<string>
    check: (path: string) => Promise<boolean>
  }> = [
    {
      name: 'a device node (a copy of /dev/full, 1,7)',
      make: (path) => mknod(path, 'c', 1, 7),
      check: async (path) => (await lstat(path)).isCharacterDevice(),
    },
    {name: 'a FIFO', make: (path) => mknod(path, 'p'), check: async (path) => (await lstat(path)).isFIFO()},
    {
      name: 'a symlink to a device node',
      make: async (path) => {
        await symlink(await mknod(`${path}.dev`, 'c', 1, 7), path)
        return path
      },
      check: async (path) => (await lstat(path)).isSymbolicLink() && (await lstat(`${path}.dev`)).isCharacterDevice(),
    },
    {
      name: 'a directory',
      make: async (path) => {
        await mkdir(path)
        return path
      },
      check: async (path) => (await lstat(path)).isDirectory(),
    },
  ]
  for (const [i, target] of targets.entries()) {
    it(`${target.name}: one-line error, the target untouched, nothing written`, async () => {
      const where = join(dir, `export-${i}`)
      await mkdir(where)
      const path = await target.make(join(where, 'out.tar'))
      const before = (await readdir(where)).sort()
      const result = await run(['images', 'export', 'demo:1.0', '-o', path])
      expectRefused(result, /out\.tar is not a regular file/)
      expect(await target.check(path)).toBe(true)
      expect((await readdir(where)).sort()).toEqual(before)
    })
  }

  it('a regular file is still replaced', async () => {
    const file = join(dir, 'regular.tar')
    await writeFile(file, 'old')
    const result = await run(['images', 'export', 'demo:1.0', '-o', file])
    expect(result.exitCode, result.all).toBe(0)
    expect((await lstat(file)).size).toBeGreaterThan(1024)
  })
})

describe('local files are read only when regular, without blocking', () => {
  async function kitDir(name: string, manifest: (path: string) => Promise<unknown>): Promise<string> {
    const kit = join(dir, name)
    await mkdir(kit)
    await manifest(join(kit, 'aegis-kit.yaml'))
    return kit
  }

  it('a FIFO as aegis-kit.yaml is refused at once', async () => {
    const kit = await kitDir('fifo-kit', (path) => mknod(path, 'p'))
    expectRefused(await run(['validate', kit]), /aegis-kit\.yaml is not a regular file \(a FIFO\)/)
  })

  it('a symlink to a device node as aegis-kit.yaml is refused', async () => {
    const device = await mknod(join(dir, 'null-device'), 'c', 1, 3)
    const kit = await kitDir('device-kit', (path) => symlink(device, path))
    expectRefused(await run(['validate', kit]), /aegis-kit\.yaml is not a regular file \(a character device\)/)
  })

  it('a FIFO or a device node as the config of hooks validate-config is refused', async () => {
    const kit = await validateConfigKit('fine-kit', '[]')
    const fifo = await mknod(join(dir, 'config-fifo.json'), 'p')
    expectRefused(
      await run(['hooks', 'validate-config', kit, fifo]),
      /config-fifo\.json is not a regular file \(a FIFO\)/,
    )
    const device = await mknod(join(dir, 'config-device.json'), 'c', 1, 3)
    expectRefused(await run(['hooks', 'validate-config', kit, device]), /config-device\.json is not a regular file/)
  })

  it('a config over the size cap is refused before it is read', async () => {
    const kit = await validateConfigKit('big-config-kit', '[]')
    const big = join(dir, 'big-config.json')
    await writeFile(big, `{"a": "${'x'.repeat(17 * 1024 * 1024)}"}`)
    expectRefused(
      await run(['hooks', 'validate-config', kit, big]),
      /big-config\.json is \d+ bytes; a config is at most 16 MiB/,
    )
  })

  it('a FIFO or a device node as images import oci-archive: is refused', async () => {
    const fifo = await mknod(join(dir, 'archive-fifo.tar'), 'p')
    expectRefused(
      await run(['images', 'import', `oci-archive:${fifo}`]),
      /archive-fifo\.tar is not a regular file \(a FIFO\)/,
    )
    const device = await mknod(join(dir, 'archive-device.tar'), 'c', 1, 3)
    expectRefused(await run(['images', 'import', `oci-archive:${device}`]), /archive-device\.tar is not a regular file/)
  })
})

/** A kit whose validate_config hook reports `problems` (a JS expression). */
async function validateConfigKit(name: string, problems: string): Promise<string> {
  const kit = join(dir, name)
  await mkdir(join(kit, 'hooks'), {recursive: true})
  await writeFile(
    join(kit, 'aegis-kit.yaml'),
    `name: ${name}\nversion: 0.0.1\nhooks:\n  validate_config: hooks/validate_config.mjs\n  timeout: 60s\n`,
  )
  await writeFile(
    join(kit, 'hooks', 'validate_config.mjs'),
    `export function validate_config() {\n  const problems = ${problems}\n  return {ok: problems.length === 0, problems}\n}\n`,
  )
  return kit
}

describe('control characters from outside are not printed', () => {
  it('an archive entry name with escape sequences', async () => {
    const archive = join(dir, 'escapes.tar')
    const pack = tar.pack()
    pack.entry({name: 'oci-layout'}, '{"imageLayoutVersion":"1.0.0"}')
    pack.entry({name: `blobs/${HOSTILE}`, type: 'symlink', linkname: '/etc/shadow'})
    pack.finalize()
    await pipeline(pack, createWriteStream(archive))
    const result = await run(['images', 'import', `oci-archive:${archive}`])
    expectRefused(result, /archive entry "blobs\/\\x1b\]0;pwned\\x07\\x1b\[2J\\x9b31m" is a symlink/)
    expect(result.all).not.toContain(ESC)
    expect(result.all).not.toContain('\x9b')
  })

  it("a hook's validate_config problems", async () => {
    const kit = await validateConfigKit(
      'escape-kit',
      `[{path: ${JSON.stringify(`gateway${HOSTILE}`)}, message: ${JSON.stringify(`bad${HOSTILE}\nnext line`)}}]`,
    )
    const config = join(dir, 'config.json')
    await writeFile(config, '{}')
    const result = await run(['hooks', 'validate-config', kit, config])
    expect(result.exitCode, result.all).toBe(1)
    expect(result.stderr).toContain('gateway\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m: bad\\x1b]0;pwned')
    expect(result.all).not.toContain(ESC)
    expect(result.all).not.toContain('\x9b')
  })

  it("a hook's render_env env values and file paths", async () => {
    const kit = join(dir, 'render-escape-kit')
    await mkdir(join(kit, 'hooks'), {recursive: true})
    await writeFile(
      join(kit, 'aegis-kit.yaml'),
      'name: render-escape-kit\nversion: 0.0.1\nhooks:\n  render_env: hooks/render_env.mjs\n  timeout: 60s\n',
    )
    await writeFile(
      join(kit, 'hooks', 'render_env.mjs'),
      `export function render_env() {\n  return ${JSON.stringify({
        env: {TITLE: `red${HOSTILE}`},
        files: [{path: `/workspace/x${HOSTILE}.txt`, content: 'hi\n', mode: 0o644}],
      })}\n}\n`,
    )
    const result = await run(['hooks', 'render-env', kit])
    expect(result.exitCode, result.all).toBe(0)
    expect(result.stdout).toContain('TITLE=red\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m')
    expect(result.stdout).toContain('/workspace/x\\x1b]0;pwned\\x07\\x1b[2J\\x9b31m.txt')
    expect(result.all).not.toContain(ESC)
    expect(result.all).not.toContain('\x9b')
  })

  describe('a registry error message', () => {
    // A stand-in for a hostile registry: it speaks just enough of the distribution API to say a
    // manifest exists (HEAD) and then answer its GET with a 403 whose message carries escapes.
    let server: Server
    let address: string
    beforeAll(async () => {
      server = createServer((request, response) => {
        if (request.url === '/v2/') {
          response.writeHead(200, {'content-type': 'application/json'}).end('{}')
          return
        }
        if (request.method === 'HEAD') {
          response
            .writeHead(200, {
              'content-type': 'application/vnd.oci.image.manifest.v1+json',
              'docker-content-digest': `sha256:${'ab'.repeat(32)}`,
              'content-length': '100',
            })
            .end()
          return
        }
        response.writeHead(403, {'content-type': 'application/json'})
        response.end(JSON.stringify({errors: [{code: 'DENIED', message: `access denied${HOSTILE}`}]}))
      })
      await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
      address = `127.0.0.1:${(server.address() as AddressInfo).port}`
    })
    afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())))

    it('is printed without its control characters', async () => {
      const result = await run(['images', 'pull', `${address}/hostile/app:1.0`])
      expect(result.exitCode, result.all).not.toBe(0)
      expect(result.stderr).toContain('DENIED: access denied\\x1b]0;pwned')
      expect(result.all).not.toContain(ESC)
      expect(result.all).not.toContain('\x9b')
    })
  })
})
