// The codebase's shape, checked by tools rather than by goodwill: the folder direction of src/
// (dependency-cruiser with .dependency-cruiser.cjs), the formatter and linter (Biome with
// biome.jsonc), and how long a function may be. docs/architecture.md describes the layers.
import {cp, mkdtemp, readFile, readdir, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {execa} from 'execa'
import ts from 'typescript'
import {afterAll, describe, expect, it} from 'vitest'
import {repoRoot} from './helpers/cli.js'

const depcruise = path.join(repoRoot, 'node_modules/.bin/depcruise')
const biome = path.join(repoRoot, 'node_modules/.bin/biome')

function cruise(cwd: string) {
  return execa(depcruise, ['src', '--config', path.join(repoRoot, '.dependency-cruiser.cjs'), '--output-type', 'err'], {
    cwd,
    reject: false,
  })
}

describe('the folder direction of src/', () => {
  const scratch: string[] = []
  afterAll(async () => {
    for (const dir of scratch) await rm(dir, {recursive: true, force: true})
  })

  it('holds: no import runs up a layer or across to a sibling, no runtime cycle', async () => {
    const result = await cruise(repoRoot)
    expect(result.exitCode, result.stdout + result.stderr).toBe(0)
  })

  // The rule must be able to fail: a copy of src/ with one upward import added is refused, naming it.
  it('fails on an upward import', async () => {
    const copy = await mkdtemp(path.join(tmpdir(), 'aegis-kit-arch-'))
    scratch.push(copy)
    await cp(path.join(repoRoot, 'src'), path.join(copy, 'src'), {recursive: true})
    await cp(path.join(repoRoot, 'tsconfig.json'), path.join(copy, 'tsconfig.json'))
    await writeFile(
      path.join(copy, 'src/oci/upward.ts'),
      "import {runDoctor} from '../doctor/index.js'\nexport const upward = runDoctor\n",
    )
    const result = await cruise(copy)
    expect(result.exitCode).not.toBe(0)
    expect(result.stdout + result.stderr).toMatch(/oci-imports-upward: src\/oci\/upward\.ts → src\/doctor\/index\.ts/)
  })
})

describe('formatting and lint', () => {
  it('the tree is formatted and lint-clean (fix with `npx biome check --write`)', async () => {
    const result = await execa(biome, ['check', '--reporter=summary'], {cwd: repoRoot, reject: false})
    expect(result.exitCode, result.stdout + result.stderr).toBe(0)
  })
})

/** A function may run to this many lines (declaration to closing brace); beyond it, its comment says why. */
const MAX_FUNCTION_LINES = 60
/** The sentence that says why a function is longer: in its doc comment or a comment right above it. */
const LONG_REASON = /\bLong: \S/

interface LongFunction {
  where: string
  lines: number
}

/** Functions of `text` over MAX_FUNCTION_LINES whose leading comments give no `Long:` reason. */
function unexplainedLongFunctions(fileName: string, text: string): LongFunction[] {
  const source = ts.createSourceFile(fileName, text, ts.ScriptTarget.Latest, true)
  const found: LongFunction[] = []
  const visit = (node: ts.Node): void => {
    if (ts.isFunctionLike(node) && 'body' in node && node.body !== undefined) {
      const first = source.getLineAndCharacterOfPosition(node.getStart(source)).line
      const lines = source.getLineAndCharacterOfPosition(node.end).line - first + 1
      if (lines > MAX_FUNCTION_LINES && !LONG_REASON.test(leadingComments(text, commentHolder(node))))
        found.push({where: `${fileName}:${first + 1}`, lines})
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
  return found
}

/** Where a function's comment sits: above its statement when it is a `const f = () => ...` or an object property. */
function commentHolder(node: ts.Node): ts.Node {
  const parent = node.parent
  if (ts.isPropertyAssignment(parent)) return parent
  if (ts.isVariableDeclaration(parent) && ts.isVariableStatement(parent.parent.parent)) return parent.parent.parent
  return node
}

function leadingComments(text: string, node: ts.Node): string {
  return (ts.getLeadingCommentRanges(text, node.getFullStart()) ?? []).map((r) => text.slice(r.pos, r.end)).join('\n')
}

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, {withFileTypes: true, recursive: true})
  return entries
    .filter((e) => e.isFile() && e.name.endsWith('.ts'))
    .map((e) => path.join(e.parentPath, e.name))
    .sort()
}

describe('function length', () => {
  it(`no function in src/ runs over ${MAX_FUNCTION_LINES} lines without a "Long:" reason in its comment`, async () => {
    const found: LongFunction[] = []
    for (const file of await sourceFiles(path.join(repoRoot, 'src')))
      found.push(...unexplainedLongFunctions(path.relative(repoRoot, file), await readFile(file, 'utf8')))
    expect(found.map((f) => `${f.where} (${f.lines} lines)`)).toEqual([])
  })

  // The check must be able to fail: a long function is found, in each place a function's comment can sit.
  it('finds a long function, and accepts one whose comment gives the reason', () => {
    const body = Array.from({length: MAX_FUNCTION_LINES}, (_, i) => `  step(${i})`).join('\n')
    const long = [
      `export function plain() {\n${body}\n}`,
      `const arrow = () => {\n${body}\n}`,
      `class C {\n  method() {\n${body}\n  }\n}`,
      `run(async () => {\n${body}\n})`,
    ].join('\n')
    expect(unexplainedLongFunctions('long.ts', long).map((f) => f.where)).toEqual([
      'long.ts:1',
      `long.ts:${MAX_FUNCTION_LINES + 3}`,
      `long.ts:${2 * MAX_FUNCTION_LINES + 6}`,
      `long.ts:${3 * MAX_FUNCTION_LINES + 9}`,
    ])
    const explained = [
      `/** Does it all. Long: one table of steps. */\nexport function plain() {\n${body}\n}`,
      `// Long: one table of steps.\nconst arrow = () => {\n${body}\n}`,
      `class C {\n  /** Long: one table of steps. */\n  method() {\n${body}\n  }\n}`,
      `run(\n  // Long: one table of steps.\n  async () => {\n${body}\n})`,
    ].join('\n')
    expect(unexplainedLongFunctions('explained.ts', explained)).toEqual([])
    const short = `function short() {\n${body.split('\n').slice(2).join('\n')}\n}`
    expect(unexplainedLongFunctions('short.ts', short)).toEqual([])
  })
})
