/**
 * Shared fixtures for the store tests: temp directories, test images built with umoci, and a
 * JavaScript build of src/store for child processes (Node 20 cannot run .ts itself).
 */
import {mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {dirname, join, relative} from 'node:path'
import {fileURLToPath} from 'node:url'
import {execa} from 'execa'
import ts from 'typescript'

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..', '..')

const created: string[] = []

export async function tempDir(prefix = 'store-test-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `aegis-${prefix}`))
  created.push(dir)
  return dir
}

export async function removeTempDirs(): Promise<void> {
  await Promise.all(created.splice(0).map((dir) => rm(dir, {recursive: true, force: true})))
}

/** Runs a tool and returns stdout; a failure throws with the tool's stderr. */
export async function run(command: string, args: string[], options: {cwd?: string} = {}): Promise<string> {
  const result = await execa(command, args, {...options, reject: false})
  if (result.exitCode !== 0)
    throw new Error(`${command} ${args.join(' ')} failed (${result.exitCode}): ${result.stderr}`)
  return result.stdout
}

/**
 * An OCI layout at `layout` with image `tag`: one layer holding `files` under /app, built by umoci
 * (a real tool, independent of the code under test).
 */
export async function makeUmociImage(
  layout: string,
  tag: string,
  files: Record<string, string>,
  cmd = ['/app/run'],
): Promise<void> {
  const source = await tempDir('umoci-src-')
  for (const [name, content] of Object.entries(files)) {
    await mkdir(dirname(join(source, name)), {recursive: true})
    await writeFile(join(source, name), content)
  }
  if (!(await readdir(layout).catch(() => undefined))) await run('umoci', ['init', '--layout', layout])
  await run('umoci', ['new', '--image', `${layout}:${tag}`])
  await run('umoci', ['insert', '--image', `${layout}:${tag}`, source, '/app'])
  await run('umoci', ['config', '--image', `${layout}:${tag}`, '--config.cmd', cmd.join(' '), '--author', 'store-test'])
}

/** Reads /app/<file> of an image in an OCI layout by unpacking it with umoci. */
export async function readFileFromImage(layout: string, tag: string, file: string): Promise<string> {
  const bundle = join(await tempDir('bundle-'), 'b')
  await run('umoci', ['unpack', '--rootless', '--image', `${layout}:${tag}`, bundle])
  return readFile(join(bundle, 'rootfs', 'app', file), 'utf8')
}

let compiled: Promise<string> | undefined

/**
 * Transpiles src/ to JavaScript in a temp dir (with node_modules linked) once per test file and
 * returns the path of the store's entry module, for child processes to import.
 */
export function compiledStoreModule(): Promise<string> {
  compiled ??= (async () => {
    const out = await tempDir('compiled-')
    await writeFile(join(out, 'package.json'), '{"type":"module"}')
    await symlink(join(repoRoot, 'node_modules'), join(out, 'node_modules'))
    for (const file of [
      'src/errors.ts',
      'src/file-lock.ts',
      'src/fs-util.ts',
      'src/paths.ts',
      'src/process-identity.ts',
      ...(await listTs('src/oci')),
      ...(await listTs('src/store')),
    ]) {
      const source = await readFile(join(repoRoot, file), 'utf8')
      const {outputText} = ts.transpileModule(source, {
        compilerOptions: {module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, esModuleInterop: true},
      })
      const target = join(out, file.replace(/\.ts$/, '.js'))
      await mkdir(dirname(target), {recursive: true})
      await writeFile(target, outputText)
    }
    return join(out, 'src', 'store', 'index.js')
  })()
  return compiled
}

async function listTs(dir: string): Promise<string[]> {
  const names = await readdir(join(repoRoot, dir))
  return names.filter((name) => name.endsWith('.ts')).map((name) => relative(repoRoot, join(repoRoot, dir, name)))
}

/** Visible blobs of a store (what `blobs/sha256/` holds). */
export async function blobNames(root: string): Promise<string[]> {
  return (await readdir(join(root, 'blobs', 'sha256')).catch(() => [] as string[])).sort()
}

export async function tempFiles(root: string): Promise<string[]> {
  return (await readdir(join(root, '.tmp')).catch(() => [] as string[])).sort()
}
