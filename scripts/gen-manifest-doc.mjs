// Writes docs/manifest.md, the manifest reference, from schemas/aegis-kit.schema.json so the docs
// cannot drift from the schema. `--check` fails when the committed file is stale. Fields
// aegis-kit accepts but does not act on yet are marked from src/kit/unhonoured.ts (built into
// dist/ before this runs in `npm run build`), the list `validate` warns from.
import {readFile, writeFile} from 'node:fs/promises'
import {UNHONOURED_FIELDS} from '../dist/kit/unhonoured.js'

const root = new URL('..', import.meta.url)
const schema = JSON.parse(await readFile(new URL('schemas/aegis-kit.schema.json', root), 'utf8'))
const outPath = new URL('docs/manifest.md', root)

// A description beside a $ref says what this field is, so it wins over the definition's (what the type is).
const resolve = (node) =>
  node?.$ref
    ? {
        ...schema.$defs[node.$ref.split('/').pop()],
        ...(node.description === undefined ? {} : {description: node.description}),
      }
    : node

function typeOf(node) {
  node = resolve(node)
  if (!node) return ''
  if (node.enum) return node.enum.map((v) => `\`${v}\``).join(' \\| ')
  if (node.const !== undefined) return `\`${JSON.stringify(node.const)}\``
  if (node.anyOf) return node.anyOf.map(typeOf).join(' or ')
  if (node.type === 'array') return `list of ${typeOf(node.items)}`
  if (
    node.type === 'object' &&
    node.additionalProperties &&
    typeof node.additionalProperties === 'object' &&
    !node.properties
  )
    return `map of ${typeOf(node.additionalProperties)}`
  if (node.type === 'object') return 'mapping'
  return node.type ?? ''
}

const rows = []
function walk(node, path, required) {
  node = resolve(node)
  if (!node) return
  if (path) {
    const description = (node.description ?? '').replace(/\|/g, '\\|').replace(/\n/g, ' ')
    const example = node.examples ? ` e.g. \`${JSON.stringify(node.examples[0])}\`` : ''
    const unhonoured =
      UNHONOURED_FIELDS[path] === undefined
        ? ''
        : ` **Accepted, not acted on yet** (what would act on it: ${UNHONOURED_FIELDS[path].replace(/\|/g, '\\|')}).`
    rows.push(`| \`${path}\` | ${typeOf(node)} | ${required ? 'yes' : ''} | ${description}${example}${unhonoured} |`)
  }
  if (node.properties) {
    for (const [key, child] of Object.entries(node.properties))
      walk(child, path ? `${path}.${key}` : key, (node.required ?? []).includes(key))
  }
  if (node.type === 'array' && resolve(node.items)?.properties) walk(node.items, `${path}[]`, false)
  if (
    node.additionalProperties &&
    typeof node.additionalProperties === 'object' &&
    resolve(node.additionalProperties)?.properties
  )
    walk(node.additionalProperties, `${path}.<name>`, false)
  for (const branch of node.anyOf ?? []) if (resolve(branch)?.properties) walk(branch, path, false)
}
walk(schema, '', false)

const doc = `# aegis-kit.yaml reference

Generated from \`schemas/aegis-kit.schema.json\` (\`$id\` ${schema.$id}) by
\`scripts/gen-manifest-doc.mjs\`; \`npm run build\` rewrites it and a test fails when it is stale.
Unknown keys are errors. \`aegis-kit validate\` also checks what a schema cannot: exposed ports
unique, secret names unique and not \`AEGIS_*\`, sizes that parse and are positive, hook and
image files that exist inside the kit, profiles using only declared secrets and exposed ports.
Fields marked **accepted, not acted on yet** validate, but aegis-kit does nothing with them yet
(they describe what the Aegis platform does: idle pausing, warm pools, sessions, routing):
\`validate\`, \`build\` and \`run\` print a warning for each one a manifest sets.

| field | type | required | description |
| --- | --- | --- | --- |
${rows.join('\n')}
`
if (process.argv.includes('--check')) {
  const current = await readFile(outPath, 'utf8').catch(() => '')
  if (current !== doc) {
    console.error('docs/manifest.md is stale: run `npm run build`')
    process.exit(1)
  }
} else {
  await writeFile(outPath, doc)
}
