// image.npm.patches: exact, loud replacements in installed packages.
import {mkdirSync, mkdtempSync, readFileSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {applyNpmPatches} from '../../dist/builder/npm-packages.js'

function prefixWith(files: Record<string, string>): string {
  const prefix = mkdtempSync(path.join(tmpdir(), 'aegis-kit-patch-'))
  for (const [relative, content] of Object.entries(files)) {
    const file = path.join(prefix, 'lib/node_modules', relative)
    mkdirSync(path.dirname(file), {recursive: true})
    writeFileSync(file, content)
  }
  return prefix
}

const patch = {
  package: 'demo',
  file: 'dist/shared-*.mjs',
  find: 'const TIMEOUT = 5e3;',
  replace: 'const TIMEOUT = 12e4;',
  reason: 'slow starts',
}

describe('npm patches', () => {
  it('replaces the text once in the file the glob matches and says what it did', async () => {
    const prefix = prefixWith({
      'demo/dist/shared-AbC123.mjs': 'a;\nconst TIMEOUT = 5e3;\nb;\n',
      'demo/dist/other.mjs': 'const TIMEOUT = 5e3;\n',
    })
    const applied = await applyNpmPatches(prefix, [patch])
    expect(applied).toEqual(['demo/dist/shared-AbC123.mjs: slow starts'])
    expect(readFileSync(path.join(prefix, 'lib/node_modules/demo/dist/shared-AbC123.mjs'), 'utf8')).toBe(
      'a;\nconst TIMEOUT = 12e4;\nb;\n',
    )
    expect(readFileSync(path.join(prefix, 'lib/node_modules/demo/dist/other.mjs'), 'utf8')).toBe(
      'const TIMEOUT = 5e3;\n',
    )
  })

  it('fails when the text is gone (upstream changed) or ambiguous', async () => {
    await expect(
      applyNpmPatches(prefixWith({'demo/dist/shared-x.mjs': 'const TIMEOUT = 6e3;\n'}), [patch]),
    ).rejects.toThrow(/occurs 0 times in dist\/shared-x\.mjs/)
    await expect(
      applyNpmPatches(prefixWith({'demo/dist/shared-x.mjs': 'const TIMEOUT = 5e3;\nconst TIMEOUT = 5e3;\n'}), [patch]),
    ).rejects.toThrow(/occurs 2 times/)
  })

  it('fails when no file matches', async () => {
    await expect(applyNpmPatches(prefixWith({'demo/dist/renamed.mjs': 'x'}), [patch])).rejects.toThrow(
      /no file matches dist\/shared-\*\.mjs/,
    )
  })
})
