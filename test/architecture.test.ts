// The codebase's shape, checked by tools rather than by goodwill: the folder direction of src/
// (dependency-cruiser with .dependency-cruiser.cjs), and the formatter and linter (Biome with
// biome.jsonc). docs/architecture.md describes the layers.
import {cp, mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {execa} from 'execa'
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
