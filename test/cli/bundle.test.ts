/**
 * The CLI as it starts (docs/architecture.md, "How the CLI starts: the bundle"): bin/run.js loads
 * oclif and the commands from dist/bundle/ (scripts/bundle.mjs, CommonJS) and compiles them with
 * V8's code cache kept in dist/bundle/.v8-cache/ (src/cli/compile-cache.ts).
 *
 * The code cache is tested on a directory of its own, in child processes as bin/run.js uses it:
 * a cache that V8 accepts for changed source runs the old code (V8 compares only the source's
 * length), so an edit of the same length must get a cache of its own.
 */
import {mkdir, mkdtemp, readdir, rm, stat, utimes, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {pathToFileURL} from 'node:url'
import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {repoRoot, runCli} from '../helpers/cli.js'

const compileCacheUrl = pathToFileURL(join(repoRoot, 'dist/cli/compile-cache.js')).href

let dir: string
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'aegis-kit-compile-cache-'))
})
afterAll(async () => {
  await rm(dir, {recursive: true, force: true})
})

/** Runs `entry` (a .cjs file under `bundleDir`) in a new node with the code cache installed; its stdout. */
async function runWithCache(bundleDir: string, entry: string): Promise<string> {
  const script = [
    `import {installCompileCache} from ${JSON.stringify(compileCacheUrl)}`,
    `import {createRequire} from 'node:module'`,
    `installCompileCache(${JSON.stringify(bundleDir)})`,
    `const value = await createRequire(${JSON.stringify(entry)})(${JSON.stringify(entry)}).value()`,
    'console.log(value)',
  ].join('\n')
  const result = await execa('node', ['--input-type=module', '-e', script], {reject: false})
  if (result.exitCode !== 0) throw new Error(result.stderr)
  return result.stdout
}

/** The cache files and their modification times. */
async function cacheFiles(bundleDir: string): Promise<Map<string, number>> {
  const cacheDir = join(bundleDir, '.v8-cache', process.version)
  const names = await readdir(cacheDir).catch(() => [])
  const files = new Map<string, number>()
  for (const name of names) files.set(name, (await stat(join(cacheDir, name))).mtimeMs)
  return files
}

describe('the code cache (src/cli/compile-cache.ts)', () => {
  // `__aegisKitImport` is what scripts/bundle.mjs turns every `import()` in the bundle into.
  const moduleSource = (letter: string) =>
    `exports.value = async () => '${letter.repeat(4)}:' + (await __aegisKitImport('node:path')).sep + ':' + require('./helper.cjs')\n`

  it('writes a cache on the first run, reuses it after, and compiles again when it is damaged or the source changes', async () => {
    const bundleDir = join(dir, 'bundle')
    await mkdir(bundleDir)
    const entry = join(bundleDir, 'main.cjs')
    await writeFile(entry, moduleSource('A'))
    await writeFile(join(bundleDir, 'helper.cjs'), "module.exports = 'helper'\n")

    expect(await runWithCache(bundleDir, entry)).toBe('AAAA:/:helper')
    const first = await cacheFiles(bundleDir)
    expect([...first.keys()].map((name) => name.replace(/\.\d+-\d+$/, '')).sort()).toEqual(['helper.cjs', 'main.cjs'])

    // Accepted: nothing is written again.
    await new Promise((resolve) => setTimeout(resolve, 20))
    expect(await runWithCache(bundleDir, entry)).toBe('AAAA:/:helper')
    expect(await cacheFiles(bundleDir)).toEqual(first)

    // A damaged cache: V8 rejects it, the file is compiled from source and its cache written again.
    const mainCache = [...first.keys()].find((name) => name.startsWith('main.cjs.'))!
    const mainCachePath = join(bundleDir, '.v8-cache', process.version, mainCache)
    await writeFile(mainCachePath, Buffer.from('not a code cache'))
    expect(await runWithCache(bundleDir, entry)).toBe('AAAA:/:helper')
    expect((await stat(mainCachePath)).size).toBeGreaterThan(100)

    // The same length, another content and time: the old cache would run 'AAAA'.
    await writeFile(entry, moduleSource('B'))
    const later = new Date(Date.now() + 60_000)
    await utimes(entry, later, later)
    expect(await runWithCache(bundleDir, entry)).toBe('BBBB:/:helper')
    expect(await runWithCache(bundleDir, entry)).toBe('BBBB:/:helper')
  })

  it('leaves files outside its directory, and files that are not .cjs, to Node', async () => {
    const bundleDir = join(dir, 'only-this')
    await mkdir(bundleDir)
    const outside = join(dir, 'outside.cjs')
    await writeFile(outside, "exports.value = async () => 'outside'\n")
    expect(await runWithCache(bundleDir, outside)).toBe('outside')
    expect((await cacheFiles(bundleDir)).size).toBe(0)
  })
})

describe('the bundled CLI (bin/run.js)', () => {
  it('starts from dist/bundle with a code cache, and runs the ESM plugins (help) through the rewritten import()', async () => {
    const version = await runCli(['--version'])
    expect(version.exitCode).toBe(0)
    expect(version.stdout).toMatch(/^aegis-kit\/\d+\.\d+\.\d+ /)
    const cached = await cacheFiles(join(repoRoot, 'dist/bundle'))
    expect([...cached.keys()].some((name) => name.startsWith('main.cjs.'))).toBe(true)

    const help = await runCli(['help', 'build'])
    expect(help.exitCode).toBe(0)
    expect(help.stdout).toContain('USAGE')
    expect(help.stdout).toContain('$ aegis-kit build')
  })

  it('loads every command file in dist/bundle/commands', async () => {
    const commandsDir = join(repoRoot, 'dist/bundle/commands')
    const files = (await readdir(commandsDir, {recursive: true})).filter((file) => file.endsWith('.cjs'))
    expect(files.length).toBeGreaterThan(20)
    const script = `for (const file of ${JSON.stringify(files)}) { const m = require(${JSON.stringify(commandsDir)} + '/' + file); if (typeof m.default !== 'function') throw new Error(file + ': no command class') }`
    const result = await execa('node', ['-e', script], {reject: false})
    expect(result.stderr).toBe('')
    expect(result.exitCode).toBe(0)
  })
})
