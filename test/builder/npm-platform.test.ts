// Packages built for another platform than the image's are removed after the npm install (an
// allowed install script runs on the build host and may fetch the host's build of a binding).
import {existsSync, mkdirSync, mkdtempSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {installArgs, pruneForeignPackages, rebuildArgs} from '../../dist/builder/npm-packages.js'
import type {NpmPackages} from '../../dist/kit/manifest.generated.js'

function prefixWith(packages: Record<string, {os?: string[]; cpu?: string[]}>): string {
  const prefix = mkdtempSync(path.join(tmpdir(), 'aegis-kit-prune-'))
  for (const [relative, fields] of Object.entries(packages)) {
    const dir = path.join(prefix, 'lib/node_modules', relative)
    mkdirSync(dir, {recursive: true})
    writeFileSync(
      path.join(dir, 'package.json'),
      JSON.stringify({name: relative.split('/node_modules/').at(-1), version: '1.0.0', ...fields}),
    )
  }
  return prefix
}

const tree = {
  app: {},
  '@native/linux-arm64': {os: ['linux'], cpu: ['arm64']},
  '@native/linux-x64': {os: ['linux'], cpu: ['x64']},
  'app/node_modules/@native/linux-x64': {os: ['linux'], cpu: ['x64']},
  'mac-only': {os: ['darwin']},
  'not-x64': {cpu: ['!x64']},
}

describe("npm packages for the image's platform", () => {
  it('an arm64 image keeps arm64 and platform-neutral packages and drops the others, nested ones too', async () => {
    const prefix = prefixWith(tree)
    const removed = await pruneForeignPackages(prefix, 'linux/arm64')
    expect(removed.map((line) => line.split(' ')[0])).toEqual([
      '@native/linux-x64@1.0.0',
      '@native/linux-x64@1.0.0',
      'mac-only@1.0.0',
    ])
    const present = (relative: string) => existsSync(path.join(prefix, 'lib/node_modules', relative, 'package.json'))
    expect(['app', '@native/linux-arm64', 'not-x64'].every(present)).toBe(true)
    expect(['@native/linux-x64', 'app/node_modules/@native/linux-x64', 'mac-only'].some(present)).toBe(false)
  })

  it('an amd64 image drops the arm64 package and the one that excludes x64', async () => {
    const prefix = prefixWith(tree)
    const removed = await pruneForeignPackages(prefix, 'linux/amd64')
    expect(removed.map((line) => line.split(' ')[0])).toEqual([
      '@native/linux-arm64@1.0.0',
      'mac-only@1.0.0',
      'not-x64@1.0.0',
    ])
  })

  it("npm is told the image's os and cpu", () => {
    const args = installArgs({packages: ['esbuild@0.25.12']}, '/p', 'linux/arm64', 11)
    expect(args).toContain('--os=linux')
    expect(args).toContain('--cpu=arm64')
    expect(installArgs({packages: ['esbuild@0.25.12']}, '/p', 'linux/amd64', 11)).toContain('--cpu=x64')
  })

  it("a foreign platform's allowed scripts wait for `npm rebuild` of exactly those packages", () => {
    const npm: NpmPackages = {packages: ['openclaw@2026.9.6'], allow_scripts: ['openclaw']}
    expect(installArgs(npm, '/p', 'linux/amd64', 11)).toContain('--allow-scripts=openclaw')
    const deferred = installArgs(npm, '/p', 'linux/arm64', 11, 'later')
    expect(deferred).toContain('--ignore-scripts')
    expect(deferred.some((arg) => arg.startsWith('--allow-scripts'))).toBe(false)
    const rebuild = rebuildArgs(npm, '/p', 'linux/arm64')
    expect(rebuild.slice(0, 4)).toEqual(['rebuild', '--global', '--prefix', '/p'])
    expect(rebuild).toContain('--allow-scripts=openclaw')
    expect(rebuild).toContain('--cpu=arm64')
    expect(rebuild.at(-1)).toBe('openclaw')
  })
})
