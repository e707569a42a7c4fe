/**
 * Checks a parsed manifest against schemas/aegis-kit.schema.json and turns Ajv's errors into
 * located problems with a field path, what was expected, and a hint.
 */
import type {ErrorObject, ValidateFunction} from 'ajv/dist/2020.js'
import {locate, sourceText, type ManifestDocument} from './document.js'
import compiledValidator from './manifest-validator.generated.js'
import {formatPath, type PathSegment, type Problem} from './problems.js'
import {closest} from './suggest.js'

interface SchemaNode {
  type?: string | string[]
  description?: string
  examples?: unknown[]
  properties?: Record<string, SchemaNode>
  enum?: unknown[]
  const?: unknown
  pattern?: string
}

/** The schema compiled ahead of time by Ajv (scripts/gen-types.mjs), with allErrors and verbose errors. */
const validate = compiledValidator as unknown as ValidateFunction

export function schemaProblems(document: ManifestDocument): Problem[] {
  if (validate(document.data)) return []
  const errors = validate.errors ?? []
  return pruneAnyOf(errors).map((error) => toProblem(document, error, errors))
}

/**
 * For `anyOf` (a value that may be a string or a mapping, say), report the errors of the branch
 * whose type matches the data, or one "expected X or Y" when no branch's type matches.
 */
function pruneAnyOf(errors: ErrorObject[]): ErrorObject[] {
  const anyOfErrors = errors.filter((error) => error.keyword === 'anyOf')
  let kept = errors.filter((error) => error.keyword !== 'anyOf' && !isInsidePropertyNames(error))
  for (const anyOf of anyOfErrors) {
    const prefix = `${anyOf.schemaPath.slice(0, -'/anyOf'.length)}/anyOf/`
    const branchErrors = kept.filter(
      (error) => error.schemaPath.startsWith(prefix) && error.instancePath.startsWith(anyOf.instancePath),
    )
    kept = kept.filter((error) => !branchErrors.includes(error))
    const byBranch = new Map<string, ErrorObject[]>()
    for (const error of branchErrors) {
      const branch = error.schemaPath.slice(prefix.length).split('/')[0]
      byBranch.set(branch, [...(byBranch.get(branch) ?? []), error])
    }
    const typeMatching = [...byBranch.values()].filter(
      (list) => !list.some((error) => error.keyword === 'type' && error.instancePath === anyOf.instancePath),
    )
    if (typeMatching.length > 0) kept.push(...typeMatching[0])
    else kept.push({...anyOf, keyword: 'type', params: {type: branchTypes(anyOf)}})
  }
  return kept
}

function branchTypes(anyOf: ErrorObject): string {
  const branches = (anyOf.schema as SchemaNode[] | undefined) ?? []
  const names = branches.map((branch) => ((branch as {$ref?: string}).$ref ? 'mapping' : typeName(branch.type)))
  return [...new Set(names)].join(' or ')
}

function typeName(type: string | string[] | undefined): string {
  const one = (t: string) =>
    ({
      object: 'mapping',
      array: 'list',
      integer: 'integer',
      number: 'number',
      string: 'string',
      boolean: 'true or false',
    })[t] ?? t
  if (type === undefined) return 'value'
  return Array.isArray(type) ? type.map(one).join(' or ') : one(type)
}

function describeData(data: unknown): string {
  if (data === null) return 'null (an empty value)'
  if (Array.isArray(data)) return 'a list'
  if (typeof data === 'object') return 'a mapping'
  if (typeof data === 'string') return `the string ${JSON.stringify(truncate(data))}`
  return `${typeof data} ${String(data)}`
}

function truncate(text: string): string {
  return text.length > 40 ? `${text.slice(0, 37)}...` : text
}

function pointerToPath(pointer: string): PathSegment[] {
  if (pointer === '') return []
  return pointer
    .slice(1)
    .split('/')
    .map((part) => {
      const unescaped = part.replace(/~1/g, '/').replace(/~0/g, '~')
      return /^\d+$/.test(unescaped) ? Number(unescaped) : unescaped
    })
}

function example(schema: SchemaNode | undefined): string | undefined {
  const value = schema?.examples?.[0]
  if (value === undefined) return undefined
  return typeof value === 'string' ? value : JSON.stringify(value)
}

/** What a problem is built from: the error, the field it points at, and the schema that raised it. */
interface SchemaError {
  document: ManifestDocument
  error: ErrorObject
  path: PathSegment[]
  parent: SchemaNode | undefined
  at: (segments: PathSegment[], key?: boolean) => Pick<Problem, 'file' | 'line' | 'column' | 'path'>
}

/** One of ajv's errors as a located, hinted problem: a function per kind of schema error. */
function toProblem(document: ManifestDocument, error: ErrorObject, all: ErrorObject[]): Problem {
  const schemaError: SchemaError = {
    document,
    error,
    path: pointerToPath(error.instancePath),
    parent: error.parentSchema as SchemaNode | undefined,
    at: (segments, key = false) => ({
      file: document.file,
      ...locate(document, segments, {key}),
      path: formatPath(segments),
    }),
  }
  switch (error.keyword) {
    case 'additionalProperties':
      return unknownFieldProblem(schemaError)
    case 'required':
      return missingFieldProblem(schemaError)
    case 'type':
      return wrongTypeProblem(schemaError)
    case 'enum':
      return enumProblem(schemaError)
    case 'const':
      return constProblem(schemaError)
    case 'pattern':
      return patternProblem(schemaError)
    case 'propertyNames':
      return propertyNameProblem(schemaError, all)
    default:
      return otherKeywordProblem(schemaError)
  }
}

function unknownFieldProblem({error, path, parent, at}: SchemaError): Problem {
  const key = String((error.params as {additionalProperty: string}).additionalProperty)
  const allowed = Object.keys(parent?.properties ?? {})
  const suggestion = closest(key, allowed)
  return {
    ...at([...path, key], true),
    message: `unknown field "${key}"`,
    expected: allowed.length > 0 ? `one of ${allowed.join(', ')}` : undefined,
    hint: suggestion
      ? `did you mean "${suggestion}"?`
      : 'remove it, or check the manifest reference (docs/manifest.md)',
  }
}

function missingFieldProblem({error, path, parent, at}: SchemaError): Problem {
  const missing = String((error.params as {missingProperty: string}).missingProperty)
  const fieldSchema = parent?.properties?.[missing]
  const sample = example(fieldSchema)
  return {
    ...at(path),
    path: formatPath([...path, missing]),
    message: `missing required field "${missing}"`,
    expected: fieldSchema?.description,
    hint: sample ? `add it, e.g. \`${missing}: ${sample}\`` : `add \`${missing}:\``,
  }
}

function wrongTypeProblem({document, error, path, parent, at}: SchemaError): Problem {
  const expected =
    typeof error.params.type === 'string' && error.params.type.includes(' or ')
      ? error.params.type
      : typeName(error.params.type as string)
  const isTopLevel = path.length === 0
  const quoted =
    expected === 'string' && (typeof error.data === 'number' || typeof error.data === 'boolean')
      ? quoteHint(sourceText(document, path) ?? String(error.data), typeof error.data)
      : undefined
  return {
    ...at(path),
    message: isTopLevel
      ? `the manifest must be a mapping of fields, got ${describeData(error.data)}`
      : `wrong type: got ${describeData(error.data)}`,
    expected,
    hint:
      quoted ??
      (isTopLevel ? 'start with `name: my-kit` and `version: 0.1.0` at the top level' : hintFromSchema(parent)),
  }
}

function enumProblem({error, path, parent, at}: SchemaError): Problem {
  const allowed = ((error.params as {allowedValues: unknown[]}).allowedValues ?? []).map(String)
  const suggestion = typeof error.data === 'string' ? closest(error.data, allowed) : undefined
  return {
    ...at(path),
    message: `${describeData(error.data)} is not allowed here`,
    expected: `one of ${allowed.join(', ')}`,
    hint: suggestion ? `did you mean "${suggestion}"?` : (parent?.description ?? `use one of ${allowed.join(', ')}`),
  }
}

function constProblem({error, path, parent, at}: SchemaError): Problem {
  return {
    ...at(path),
    message: `${describeData(error.data)} is not allowed here`,
    expected: JSON.stringify((error.params as {allowedValue: unknown}).allowedValue),
    hint: parent?.description ?? 'remove it',
  }
}

function patternProblem({error, path, parent, at}: SchemaError): Problem {
  return {
    ...at(path),
    message: `${describeData(error.data)} is not in the expected form`,
    expected: parent?.description ?? `a value matching ${String((error.params as {pattern: string}).pattern)}`,
    hint: hintFromSchema(parent),
  }
}

function propertyNameProblem({error, path, at}: SchemaError, all: ErrorObject[]): Problem {
  const name = String((error.params as {propertyName: string}).propertyName)
  return {
    ...at([...path, name], true),
    message: `"${name}" is not a valid name here`,
    expected: describePropertyNames(error, all),
    hint: 'rename it',
  }
}

function otherKeywordProblem({error, path, parent, at}: SchemaError): Problem {
  return {
    ...at(path),
    message: error.message ?? `fails ${error.keyword}`,
    expected: parent?.description,
    hint: hintFromSchema(parent),
  }
}

/** Ajv marks errors raised while checking a key (not a value) with the key's name. */
function isInsidePropertyNames(error: ErrorObject): boolean {
  return (
    error.keyword !== 'propertyNames' && (error as ErrorObject & {propertyName?: string}).propertyName !== undefined
  )
}

/** The rule a key broke lives in the inner error Ajv reports for that key. */
function describePropertyNames(error: ErrorObject, all: ErrorObject[]): string | undefined {
  const name = (error.params as {propertyName: string}).propertyName
  const inner = all.find(
    (other) =>
      isInsidePropertyNames(other) &&
      other.instancePath === error.instancePath &&
      (other as ErrorObject & {propertyName?: string}).propertyName === name,
  )
  const rule = inner?.parentSchema as SchemaNode | undefined
  return rule?.description ?? (rule?.pattern ? `a name matching ${rule.pattern}` : undefined)
}

function hintFromSchema(schema: SchemaNode | undefined): string {
  const sample = example(schema)
  return sample ? `for example: ${sample}` : 'see docs/manifest.md for what this field takes'
}

function quoteHint(written: string, readAs: string): string {
  return `quote it: \`"${written}"\` (YAML reads unquoted ${written} as a ${readAs})`
}
