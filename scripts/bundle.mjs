// Bundles what `aegis-kit` loads on every start into dist/bundle/ (run by `npm run build`, after
// tsc): oclif and our code as one entry per command plus shared chunks, instead of ~300 modules
// resolved, read and compiled one by one. A command's start drops from ~0.26 s to ~0.19 s
// (docs/performance.md, "process start"). oclif still finds one file per command
// (dist/bundle/commands/**), so a command loads only its own code; the chunks dynamic imports
// split off (the direct download, the builder) still load only when used.
//
// tsc's dist/ stays as it is: worker threads, the hook child process and files found beside a
// module (schemas, kits, images/guest) are addressed from each module's own location, so every
// `import.meta.url` in our code is rewritten to the URL of the module's original file in dist/.
import {readFileSync, readdirSync, rmSync} from 'node:fs'
import {dirname, join, relative, sep} from 'node:path'
import {fileURLToPath} from 'node:url'
import {rolldown} from 'rolldown'
import {parseAst} from 'rolldown/parseAst'
import {BUNDLE_IMPORT} from '../dist/cli/compile-cache.js'

const root = fileURLToPath(new URL('..', import.meta.url))
const dist = join(root, 'dist')
const out = join(dist, 'bundle')

const input = {
  // bin/run.js: oclif's entry point, sharing one copy of oclif with the commands.
  main: join(dist, 'cli/main.js'),
  'hooks/command-not-found': join(dist, 'cli/command-not-found.js'),
}
for (const file of readdirSync(join(dist, 'commands'), {recursive: true, encoding: 'utf8'})) {
  if (file.endsWith('.js')) input[`commands/${file.slice(0, -3).split(sep).join('/')}`] = join(dist, 'commands', file)
}

const PLACEHOLDER = '__aegisKitModuleUrl'
const placeholderCall = new RegExp(`${PLACEHOLDER}\\("([^"]+)"\\)`, 'g')

/** `import.meta.url` in a module of ours means its file in dist/, wherever the bundle puts its code. */
const originalModuleUrls = {
  name: 'original-module-urls',
  transform(code, id) {
    if (!id.startsWith(dist + sep) || !code.includes('import.meta.url')) return null
    const fromDist = relative(dist, id).split(sep).join('/')
    return {code: code.replaceAll('import.meta.url', `${PLACEHOLDER}(${JSON.stringify(fromDist)})`), map: null}
  },
  renderChunk(code, chunk) {
    if (!code.includes(PLACEHOLDER)) return null
    const chunkDir = dirname(join(out, chunk.fileName))
    return code.replace(placeholderCall, (_, fromDist) => {
      const path = relative(chunkDir, join(dist, fromDist)).split(sep).join('/')
      return `require("node:url").pathToFileURL(require("node:path").join(__dirname, ${JSON.stringify(path)})).href`
    })
  },
}

/** Every `import(…)` left in the output (oclif's, lilconfig's) calls the loader's import function instead. */
const dynamicImportsThroughLoader = {
  name: 'dynamic-imports-through-loader',
  renderChunk(code, chunk) {
    if (!code.includes('import(')) return null
    const starts = []
    const visit = (node) => {
      if (Array.isArray(node)) for (const item of node) visit(item)
      else if (node !== null && typeof node === 'object') {
        if (node.type === 'ImportExpression') starts.push(node.start)
        for (const value of Object.values(node)) if (typeof value === 'object') visit(value)
      }
    }
    visit(parseAst(code))
    if (starts.length === 0) return null
    let result = code
    for (const start of starts.sort((a, b) => b - a)) {
      if (result.slice(start, start + 6) !== 'import')
        throw new Error(`bundle: ${chunk.fileName}: no import() at ${start}`)
      result = result.slice(0, start) + BUNDLE_IMPORT + result.slice(start + 6)
    }
    return result
  },
}

/**
 * oclif sorts each plugin's commands with localeCompare on every start, and the first call builds
 * ICU's collator: ~8 ms of every command's start here. Command ids are lowercase [a-z0-9:-], whose
 * code-point order is the collator's order, so the sort compares code points instead.
 */
const OCLIF_COMMAND_SORT = '.sort((a, b) => a.id.localeCompare(b.id))'
const commandSortWithoutCollator = {
  name: 'command-sort-without-collator',
  transform(code, id) {
    if (!id.endsWith(join('node_modules', '@oclif', 'core', 'lib', 'config', 'plugin.js'))) return null
    if (!code.includes(OCLIF_COMMAND_SORT))
      throw new Error(`bundle: ${id} no longer sorts commands with localeCompare: drop commandSortWithoutCollator`)
    return {
      code: code.replace(OCLIF_COMMAND_SORT, '.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0))'),
      map: null,
    }
  },
}

rmSync(out, {recursive: true, force: true})
const bundle = await rolldown({
  input,
  platform: 'node',
  plugins: [originalModuleUrls, dynamicImportsThroughLoader, commandSortWithoutCollator],
  // Optional peers oclif looks for at run time (TypeScript loaders for linked plugins): never ours to bundle.
  external: ['typescript', 'ts-node', 'tsx', 'pnpapi'],
  logLevel: 'warn',
})
await bundle.write({
  dir: out,
  // CommonJS, so that bin/run.js can give V8 a code cache for each file (src/cli/compile-cache.ts).
  format: 'cjs',
  exports: 'named',
  entryFileNames: '[name].cjs',
  chunkFileNames: 'chunks/[name]-[hash].cjs',
})
await bundle.close()

// A placeholder left in the output would be a ReferenceError at run time, in whichever command reached it.
const leftover = readdirSync(out, {recursive: true, encoding: 'utf8'}).filter(
  (file) => file.endsWith('.cjs') && readFileSync(join(out, file), 'utf8').includes(PLACEHOLDER),
)
if (leftover.length > 0) throw new Error(`bundle: ${PLACEHOLDER} left in ${leftover.join(', ')}`)
