// Generates from schemas/aegis-kit.schema.json, so neither can drift from the schema (the single
// source of truth):
//  - src/kit/manifest.generated.ts, the manifest's TypeScript types;
//  - src/kit/manifest-validator.generated.ts, the schema check compiled ahead of time by Ajv
//    (compiling it at start-up cost every command that reads a kit about 110 ms).
// `--check` fails when a committed file is stale instead of writing it.
import {readFile, writeFile} from 'node:fs/promises'
import {Ajv2020} from 'ajv/dist/2020.js'
import standaloneCode from 'ajv/dist/standalone/index.js'
import {compile} from 'json-schema-to-typescript'

const root = new URL('..', import.meta.url)
const schemaPath = new URL('schemas/aegis-kit.schema.json', root)
const outPath = new URL('src/kit/manifest.generated.ts', root)

const schema = JSON.parse(await readFile(schemaPath, 'utf8'))
const body = await compile(schema, 'AegisKitManifest', {
  bannerComment: '/* Generated from schemas/aegis-kit.schema.json by scripts/gen-types.mjs: do not edit. */',
  additionalProperties: false,
  unreachableDefinitions: false,
  style: {singleQuote: true, semi: false, bracketSpacing: false, printWidth: 110},
})

// The options src/kit/schema.ts's messages rely on: every error at once, with its schema and data.
const ajv = new Ajv2020({
  allErrors: true,
  verbose: true,
  strict: true,
  allowUnionTypes: true,
  code: {source: true, esm: true},
})
// Ajv's ESM output still require()s its runtime helpers (CommonJS, `exports.default = fn`):
// import them instead. Node's ESM gives the exports object as the default import, while vitest's
// interop gives exports.default itself; the generated code reads `.default`, so accept both.
const imports = []
let runtimes = 0
const validatorCode = standaloneCode(ajv, ajv.compile(schema)).replace(/require\("([^"]+)"\)/g, (_, module) => {
  const n = runtimes++
  imports.push(
    `import runtime${n}Module from '${module}.js'`,
    `const runtime${n} = typeof runtime${n}Module === 'function' ? {default: runtime${n}Module} : runtime${n}Module`,
  )
  return `runtime${n}`
})
const validator = [
  '/* Generated from schemas/aegis-kit.schema.json by scripts/gen-types.mjs: do not edit. */',
  "// @ts-nocheck -- Ajv's standalone output is untyped JavaScript; src/kit/schema.ts gives it its type.",
  ...imports,
  validatorCode,
  '',
].join('\n')

const outputs = [
  [outPath, body],
  [new URL('src/kit/manifest-validator.generated.ts', root), validator],
]
if (process.argv.includes('--check')) {
  for (const [path, content] of outputs) {
    const current = await readFile(path, 'utf8').catch(() => '')
    if (current !== content) {
      console.error(`${path.pathname.slice(root.pathname.length)} is stale: run \`npm run build\``)
      process.exit(1)
    }
  }
} else {
  for (const [path, content] of outputs) await writeFile(path, content)
}
