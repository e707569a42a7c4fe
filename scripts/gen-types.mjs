// Generates src/kit/manifest.generated.ts from schemas/aegis-kit.schema.json, so the manifest's
// TypeScript types can never drift from its schema (the schema is the single source of truth).
// `--check` fails when the committed file is stale instead of writing it.
import {readFile, writeFile} from 'node:fs/promises'
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
if (process.argv.includes('--check')) {
  const current = await readFile(outPath, 'utf8').catch(() => '')
  if (current !== body) {
    console.error('src/kit/manifest.generated.ts is stale: run `npm run build`')
    process.exit(1)
  }
} else {
  await writeFile(outPath, body)
}
