// The direction of src/: a folder may import its own files and folders of a lower layer, never
// one of its own layer or above. `npm test` runs `depcruise` with this (test/architecture.test.ts),
// so an upward import fails the suite. docs/architecture.md explains each layer.
//
// Top-level files of src/ (errors.ts, exec.ts, paths.ts, ...) are layer 0: shared by everyone,
// importing nothing above.
const LAYERS = [
  ['(root)'],
  ['oci'],
  ['store'],
  ['image', 'registry', 'kit'],
  ['hooks', 'signing', 'guest'],
  ['builder', 'kit-artifact'],
  ['runner'],
  ['doctor', 'cli'],
  ['commands'],
]

const ROOT_FILES = '^src/[^/]+$'
const folderPath = (name) => (name === '(root)' ? ROOT_FILES : `^src/${name}/`)

const forbidden = []
LAYERS.forEach((layer, rank) => {
  for (const name of layer) {
    // Same layer, another folder: siblings stay independent (a shared need goes one layer down).
    const peers = layer.filter((other) => other !== name)
    const above = LAYERS.slice(rank + 1).flat()
    const targets = [...peers, ...above]
    if (targets.length === 0) continue
    forbidden.push({
      name: `${name}-imports-upward`,
      comment: `src/${name === '(root)' ? '*.ts' : name} is in layer ${rank}: it may import only from layers below (${LAYERS.slice(0, rank).flat().join(', ') || 'none'})`,
      severity: 'error',
      from: {path: folderPath(name)},
      to: {path: targets.map(folderPath)},
    })
  }
})

forbidden.push(
  {
    name: 'no-circular',
    comment: 'a cycle between modules makes their load order and their tests fragile',
    severity: 'error',
    from: {path: '^src/'},
    // Type-only imports are erased at compile time: a cycle through one loads nothing twice.
    to: {circular: true, viaOnly: {dependencyTypesNot: ['type-only']}},
  },
  {
    name: 'store-internals',
    comment:
      'the store is used through its public API (src/store/index.ts, local-store.ts, types.ts), not its internals',
    severity: 'error',
    from: {path: '^src/', pathNot: '^src/store/'},
    to: {path: '^src/store/(paths|lock|fs-util|layout|layout-import|archive-export|blob-writer|tar-io|graph)\\.ts$'},
  },
)

module.exports = {
  forbidden,
  options: {
    doNotFollow: {path: 'node_modules'},
    includeOnly: '^src/',
    tsConfig: {fileName: 'tsconfig.json'},
    tsPreCompilationDeps: true,
    enhancedResolveOptions: {extensions: ['.ts', '.js', '.cjs']},
  },
}
