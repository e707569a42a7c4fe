/**
 * Which manifest fields aegis-kit's code acts on, found with the TypeScript compiler rather than
 * by grepping names (`scope`, `mode` or `description` mean other things elsewhere): every
 * property read in src/ (`a.b`, `a?.b`, `a['b']`, `a[k]` with `k` a union of literal names,
 * destructuring `{b} = a`) is resolved to its declaration, and a schema field counts as
 * consumed when a read resolves to that field's property in src/kit/manifest.generated.ts. Reads in src/kit/ do not count (that is the
 * manifest's parsing and checking, which reads every field), except src/kit/secrets.ts, where
 * generated and optional secrets are acted on. Nor do reads in src/kit-artifact/aegis-export.ts,
 * which writes fields in Aegis's format (a field it translates is still not acted on by run).
 */
import {readFileSync} from 'node:fs'
import path from 'node:path'
import ts from 'typescript'

export interface SchemaField {
  /** `policies.warm_pool`, `secrets.required[].scope`, `profiles.<name>.always_on`. */
  path: string
  /** Its property in the generated types (for `list[]` and `map.<name>`, the list's or map's). */
  symbol: ts.Symbol | undefined
  /** Has properties of its own (an object the schema describes field by field). */
  container: boolean
}

const GENERATED = 'src/kit/manifest.generated.ts'
const COUNTED_IN_KIT = new Set(['src/kit/secrets.ts'])
/** Files that read fields to write them in another format (Aegis's), not to act on them. */
const TRANSLATORS = new Set(['src/kit-artifact/aegis-export.ts'])

type JsonSchema = {
  $ref?: string
  properties?: Record<string, JsonSchema>
  items?: JsonSchema
  additionalProperties?: boolean | JsonSchema
  anyOf?: JsonSchema[]
  type?: string
}

export function analyseManifestConsumers(repoRoot: string): {
  fields: SchemaField[]
  consumed: (field: SchemaField) => string[]
} {
  const configPath = path.join(repoRoot, 'tsconfig.json')
  const config = ts.parseJsonConfigFileContent(ts.readConfigFile(configPath, ts.sys.readFile).config, ts.sys, repoRoot)
  const program = ts.createProgram({rootNames: config.fileNames, options: {...config.options, noEmit: true}})
  const checker = program.getTypeChecker()
  const generated = program.getSourceFile(path.join(repoRoot, GENERATED))
  if (!generated) throw new Error(`${GENERATED} is not part of the program`)
  const rootSymbol = checker.getSymbolAtLocation(generated)?.exports?.get('AegisKitManifest' as ts.__String)
  if (!rootSymbol) throw new Error(`${GENERATED} exports no AegisKitManifest`)
  const rootType = checker.getDeclaredTypeOfSymbol(rootSymbol)

  // Every property read outside the manifest's own parsing and checking, by declaring symbol.
  const readers = new Map<ts.Symbol, string[]>()
  const record = (symbol: ts.Symbol | undefined, node: ts.Node) => {
    for (const root of symbol ? checker.getRootSymbols(symbol) : []) {
      const {line} = node.getSourceFile().getLineAndCharacterOfPosition(node.getStart())
      const where = `${path.relative(repoRoot, node.getSourceFile().fileName)}:${line + 1}`
      readers.set(root, [...(readers.get(root) ?? []), where])
    }
  }
  for (const file of program.getSourceFiles()) {
    const relative = path.relative(repoRoot, file.fileName)
    if (!relative.startsWith('src/') || (relative.startsWith('src/kit/') && !COUNTED_IN_KIT.has(relative))) continue
    if (TRANSLATORS.has(relative)) continue
    const visit = (node: ts.Node): void => {
      if (ts.isPropertyAccessExpression(node)) record(checker.getSymbolAtLocation(node.name), node.name)
      else if (ts.isElementAccessExpression(node)) {
        // `hooks?.[hook]` with `hook: 'render_env' | ...` reads each of those properties.
        const keyType = checker.getTypeAtLocation(node.argumentExpression)
        const objectType = checker.getNonNullableType(checker.getTypeAtLocation(node.expression))
        for (const key of keyType.isUnion() ? keyType.types : [keyType]) {
          if (key.isStringLiteral()) record(objectType.getProperty(key.value), node)
        }
      } else if (ts.isBindingElement(node) && ts.isObjectBindingPattern(node.parent)) {
        const name = node.propertyName ?? node.name
        if (ts.isIdentifier(name)) record(checker.getTypeAtLocation(node.parent).getProperty(name.text), node)
      }
      ts.forEachChild(node, visit)
    }
    visit(file)
  }

  // The schema's fields, each matched with its property in the generated types.
  const schema = JSON.parse(
    readFileSync(path.join(repoRoot, 'schemas/aegis-kit.schema.json'), 'utf8'),
  ) as JsonSchema & {$defs: Record<string, JsonSchema>}
  const resolve = (node: JsonSchema | undefined) =>
    node?.$ref ? schema.$defs[node.$ref.split('/').pop() as string] : node
  const propertyOf = (type: ts.Type | undefined, key: string): ts.Symbol | undefined => {
    if (!type) return undefined
    const members = type.isUnion() ? type.types : [type]
    return members.map((member) => member.getProperty(key)).find((symbol) => symbol !== undefined)
  }
  const typeOfSymbol = (symbol: ts.Symbol | undefined) =>
    symbol ? checker.getNonNullableType(checker.getTypeOfSymbol(symbol)) : undefined
  const elementOf = (type: ts.Type | undefined) =>
    type ? checker.getIndexTypeOfType(type, ts.IndexKind.Number) : undefined
  const valueTypeOf = (type: ts.Type | undefined) =>
    type ? checker.getIndexTypeOfType(type, ts.IndexKind.String) : undefined

  const fields = new Map<string, SchemaField>()
  const walk = (
    node: JsonSchema | undefined,
    fieldPath: string,
    symbol: ts.Symbol | undefined,
    type: ts.Type | undefined,
  ) => {
    node = resolve(node)
    if (!node) return
    const objectBranches = [node, ...(node.anyOf ?? []).map(resolve)].filter(
      (branch) => branch?.properties,
    ) as JsonSchema[]
    if (fieldPath && !fields.has(fieldPath))
      fields.set(fieldPath, {path: fieldPath, symbol, container: objectBranches.length > 0 && !node.anyOf})
    for (const branch of objectBranches) {
      for (const [key, child] of Object.entries(branch.properties ?? {})) {
        const childSymbol = propertyOf(type, key)
        walk(child, fieldPath ? `${fieldPath}.${key}` : key, childSymbol, typeOfSymbol(childSymbol))
      }
    }
    if (node.type === 'array' && resolve(node.items)?.properties)
      walk(node.items, `${fieldPath}[]`, symbol, elementOf(type))
    if (typeof node.additionalProperties === 'object' && resolve(node.additionalProperties)?.properties)
      walk(node.additionalProperties, `${fieldPath}.<name>`, symbol, valueTypeOf(type))
  }
  walk(schema, '', undefined, rootType)

  return {fields: [...fields.values()], consumed: (field) => (field.symbol ? (readers.get(field.symbol) ?? []) : [])}
}
