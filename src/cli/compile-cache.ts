/**
 * V8's code cache for the bundled CLI (dist/bundle/*.cjs), the way Node 22's
 * `module.enableCompileCache()` keeps one (Node 20, which aegis-kit supports, has no such call):
 * a CommonJS file under `bundleDir` is compiled with the cache V8 made for it on an earlier run,
 * and a file compiled without one gets its cache written when the process exits, holding every
 * function compiled by then. Compiling oclif and a command's code is ~35 ms of every start
 * (docs/performance.md, "process start").
 *
 * The cache lives in `bundleDir/.v8-cache/<node version>/`, beside the code it was made from, like
 * Python's `__pycache__`: nothing lands in the user's home, and a package directory the user
 * cannot write to just runs without it. V8 refuses a cache made from other source or by another
 * V8 (`cachedDataRejected`); the file is then compiled as usual and its cache written again. V8's own
 * check compares only the source's length, so the cache file's name also carries the source's size
 * and modification time (as Python's `.pyc` header does): an edited file gets a cache of its own.
 *
 * Loaded by bin/run.js before anything else: Node's own modules only.
 */
import {mkdirSync, readFileSync, renameSync, statSync, writeFileSync} from 'node:fs'
import Module, {createRequire} from 'node:module'
import {dirname, join, relative, sep} from 'node:path'
import {Script} from 'node:vm'

/** The parts of Node's CommonJS Module that @types/node leaves out (stable since Node 0.x). */
interface CommonJsModule {
  exports: unknown
  _compile(content: string, filename: string): unknown
}
type ModuleClass = typeof Module & {prototype: CommonJsModule}

/**
 * What the bundle calls for `import()`: scripts/bundle.mjs rewrites every dynamic import in it
 * (oclif's loading of ESM plugins, such as the help and autocomplete commands) to this name,
 * which the module wrapper below passes in. A script compiled by node:vm cannot run `import()`
 * itself on Node 20 without an experimental flag. Specifiers are absolute URLs (oclif passes
 * `pathToFileURL(...)`), so resolving them from this module changes nothing.
 */
export const BUNDLE_IMPORT = '__aegisKitImport'
const importForBundle = (specifier: string): Promise<unknown> => import(specifier)

export function installCompileCache(bundleDir: string): void {
  const cacheDir = join(bundleDir, '.v8-cache', process.version)
  const toWrite: Array<{script: Script; file: string}> = []
  const prototype = (Module as ModuleClass).prototype
  const compile = prototype._compile
  prototype._compile = function (this: CommonJsModule, content: string, filename: string) {
    if (!filename.startsWith(bundleDir + sep) || !filename.endsWith('.cjs'))
      return compile.call(this, content, filename)
    const source = statSync(filename)
    const name = relative(bundleDir, filename).split(sep).join('__')
    const file = join(cacheDir, `${name}.${source.size}-${Math.trunc(source.mtimeMs)}`)
    let cachedData: Buffer | undefined
    try {
      cachedData = readFileSync(file)
    } catch {
      // No cache yet: compiled from source, and its cache written at exit.
    }
    // Node's CommonJS wrapper, plus the import function.
    const wrapped = `(function (exports, require, module, __filename, __dirname, ${BUNDLE_IMPORT}) { ${content}\n})`
    const script = new Script(wrapped, {filename, cachedData})
    if (cachedData === undefined || script.cachedDataRejected) toWrite.push({script, file})
    const wrapper = script.runInThisContext({displayErrors: true}) as (...args: unknown[]) => unknown
    const require = createRequire(filename)
    return wrapper.call(this.exports, this.exports, require, this, filename, dirname(filename), importForBundle)
  }
  process.once('exit', () => {
    if (toWrite.length === 0) return
    try {
      mkdirSync(cacheDir, {recursive: true})
      for (const {script, file} of toWrite) {
        // Another aegis-kit may be writing the same file: each writes its own and renames it over.
        const temp = `${file}.${process.pid}.tmp`
        writeFileSync(temp, script.createCachedData())
        renameSync(temp, file)
      }
    } catch {
      // A read-only package directory (or a full disk): the next start compiles from source again.
    }
  })
}
