#!/usr/bin/env node
/**
 * Layer-writing benchmark: our LayerWriter (gzip and zstd) against umoci and tar | gzip/pigz/zstd
 * on one big tree, timed one after another in a single run.
 *
 *   npx tsc -p tsconfig.json      # or npm run build: this imports from dist/
 *   node bench/layers/run.mjs [TREE]
 *
 * Also times our gzip at levels 1-5 and, against each umoci blob, names our fastest level whose
 * blob is no larger: the comparison at equal output size.
 *
 * TREE defaults to $LAYER_BENCH_TREE, else /tmp/aegis-layers-bench/openclaw/node_modules,
 * installed there first with `npm install --ignore-scripts openclaw@2026.9.6` when missing.
 *
 * LAYER_BENCH_ROUNDS=N (default 1) runs every contender N times, in turn, and reports medians
 * (umoci repack, the slowest, only in the first round).
 *
 * LAYER_BENCH_BEFORE=<dist directory of another build> (e.g. a worktree of an earlier commit,
 * built) times that build's LayerWriter right after ours at every setting, checks that both
 * write the same bytes, and prints ours / before: a change measured in one run. Each row also
 * shows the 1-minute load average when it started (the machine may be shared).
 */
import {execFileSync, execSync} from 'node:child_process'
import {existsSync, mkdirSync, rmSync, statSync} from 'node:fs'
import {availableParallelism} from 'node:os'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const writeLayer = join(repo, 'bench/layers/write-layer.mjs')

const benchDir = '/tmp/aegis-layers-bench'
const tree = process.argv[2] ?? process.env.LAYER_BENCH_TREE ?? join(benchDir, 'openclaw/node_modules')
const out = join(benchDir, 'out')
const rounds = Number(process.env.LAYER_BENCH_ROUNDS ?? 1)
const before = process.env.LAYER_BENCH_BEFORE
if (before !== undefined && !existsSync(join(before, 'image/layer-writer.js')))
  throw new Error(`LAYER_BENCH_BEFORE=${before} holds no image/layer-writer.js: build that tree first`)

if (!existsSync(tree)) {
  console.log(`installing openclaw into ${dirname(tree)} (one time)...`)
  execSync(
    `npm install --prefix ${dirname(tree)} --ignore-scripts --no-audit --no-fund --loglevel=error openclaw@2026.9.6`,
    {stdio: 'inherit'},
  )
}

rmSync(out, {recursive: true, force: true})
mkdirSync(out, {recursive: true})

const sh = (command) =>
  execSync(command, {stdio: ['ignore', 'pipe', 'inherit'], shell: '/bin/bash', maxBuffer: 1 << 26}).toString()
const size = (file) => statSync(file).size
const mb = (bytes) => (bytes / 1e6).toFixed(1)
const tarFlags = '--sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner'
const tarCmd = `tar ${tarFlags} -C ${tree} -c .`

const treeBytes = Number(sh(`du -sb ${tree}`).split('\t')[0])
const treeFiles = Number(sh(`find ${tree} | wc -l`).trim())
console.log(
  `tree: ${tree}: ${mb(treeBytes)} MB, ${treeFiles} entries; ${availableParallelism()} cores; node ${process.version}`,
)
console.log(`load: ${sh('cat /proc/loadavg').trim()}`)
sh(`${tarCmd} | cat > /dev/null`) // warm the page cache so every contender reads from memory

/** Every timed run, by contender, in the order contenders first ran. */
const samples = new Map()
/**
 * Runs a shell command under bash's `time`: wall seconds and CPU seconds (user + sys of all
 * its processes). CPU time is the fairer figure on a shared machine; wall time is the goal.
 * `output` is the file it made, or a function that finds it afterwards.
 */
function time(name, command, output) {
  const load = Number(sh('cat /proc/loadavg').split(' ')[0])
  const timed = sh(`TIMEFORMAT='%R %U %S'; { time ( { ${command} ; } > ${out}/stdout 2>&1 ) ; } 2>&1`)
    .trim()
    .split('\n')
    .at(-1)
  const [wall, user, sys] = timed.split(' ').map(Number)
  const file = typeof output === 'function' ? output() : output
  const note = sh(`cat ${out}/stdout`).trim()
  const row = {name, wall, cpu: user + sys, bytes: file ? size(file) : undefined, note, load}
  if (!samples.has(name)) samples.set(name, [])
  samples.get(name).push(row)
  console.log(
    `${name.padEnd(36)} ${wall.toFixed(2).padStart(6)} s wall ${row.cpu.toFixed(2).padStart(6)} s cpu  ${row.bytes ? `${mb(row.bytes)} MB` : ''.padEnd(8)}  load ${load.toFixed(2)}`,
  )
}

/** Our LayerWriter at `level` (default when undefined), then the `before` build's at the same setting. */
function ours(kind, level, file) {
  const args = `${kind} ${tree} ${file}${level === undefined ? '' : ` ${level}`}`
  const label = `${kind}${level === undefined ? '' : ` -${level}`}`
  time(`aegis-kit LayerWriter ${label}`, `node ${writeLayer} ${args}`, file)
  if (before === undefined) return
  const mine = samples.get(`aegis-kit LayerWriter ${label}`).at(-1)
  time(`before: LayerWriter ${label}`, `LAYER_BENCH_DIST=${before} node ${writeLayer} ${args}`, file)
  const theirs = samples.get(`before: LayerWriter ${label}`).at(-1)
  if (JSON.parse(theirs.note).digest !== JSON.parse(mine.note).digest)
    throw new Error(`${label}: the before build writes other bytes than ours`)
}

// umoci: a new layer from the tree on top of an empty image (the same job: tar + gzip + digests).
// `insert` packs a host directory; `repack` diffs an unpacked bundle against its mtree first.
const largestBlob = (layout) => join(layout, 'blobs/sha256', sh(`ls -S ${layout}/blobs/sha256 | head -1`).trim())
const insertLayout = join(out, 'umoci-insert')
const repackLayout = join(out, 'umoci-repack')
const bundle = join(out, 'bundle')

for (let round = 1; round <= rounds; round++) {
  if (rounds > 1) console.log(`round ${round} of ${rounds}`)
  ours('gzip', undefined, `${out}/ours.tar.gz`)
  ours('zstd', undefined, `${out}/ours.tar.zst`)

  rmSync(insertLayout, {recursive: true, force: true})
  sh(`umoci init --layout ${insertLayout} && umoci new --image ${insertLayout}:base`)
  time('umoci insert', `umoci insert --rootless --image ${insertLayout}:base ${tree} /app`, () =>
    largestBlob(insertLayout),
  )
  if (round === 1) {
    sh(`umoci init --layout ${repackLayout} && umoci new --image ${repackLayout}:base`)
    sh(`umoci unpack --rootless --image ${repackLayout}:base ${bundle} && cp -a ${tree} ${bundle}/rootfs/app`) // not timed
    time('umoci repack', `umoci repack --image ${repackLayout}:new ${bundle}`, () => largestBlob(repackLayout))
    rmSync(bundle, {recursive: true, force: true})
  }

  // The size/time curve: our gzip at lower levels, to compare with umoci at equal or smaller output
  // (umoci's Go gzip at its default level makes a larger blob than zlib's level 6).
  for (const level of [1, 2, 3, 4, 5]) {
    ours('gzip', level, `${out}/ours-${level}.tar.gz`)
    rmSync(`${out}/ours-${level}.tar.gz`)
  }

  time('tar --sort=name | gzip -6', `${tarCmd} | gzip -6 > ${out}/tar.gz`, `${out}/tar.gz`)
  time('tar --sort=name | pigz -6', `${tarCmd} | pigz -6 > ${out}/tar.pigz.gz`, `${out}/tar.pigz.gz`)
  time('tar --sort=name | zstd -T2', `${tarCmd} | zstd -q -T2 > ${out}/tar.zst`, `${out}/tar.zst`)
}

/** One row per contender: the medians of its wall and of its CPU times, and the loads it ran at. */
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}
const results = [...samples.values()].map((rows) => ({
  ...rows[0],
  wall: median(rows.map((row) => row.wall)),
  cpu: median(rows.map((row) => row.cpu)),
  loads: rows.map((row) => row.load),
}))
const byName = (name) => results.find((row) => row.name === name)
const oursGzip = JSON.parse(byName('aegis-kit LayerWriter gzip').note)
const oursZstd = JSON.parse(byName('aegis-kit LayerWriter zstd').note)
console.log(`\n(${oursGzip.compressor}; ${oursZstd.compressor})`)
const oursAtLevel = [1, 2, 3, 4, 5].map((level) => byName(`aegis-kit LayerWriter gzip -${level}`))
const pairs = results
  .filter((row) => row.name.startsWith('aegis-kit LayerWriter '))
  .map((row) => [row, byName(row.name.replace('aegis-kit LayerWriter ', 'before: LayerWriter '))])
  .filter(([, theirs]) => theirs !== undefined)

// Our gzip must read back with gzip itself.
execFileSync('gzip', ['-t', join(out, 'ours.tar.gz')])

// Our output must read back with the stock tools, to the same tar.
execFileSync('gzip', ['-t', join(out, 'ours.tar.gz')])
const tarOf = (cmd) => sh(`${cmd} | sha256sum`).split(' ')[0]
if (`sha256:${tarOf(`gzip -dc ${out}/ours.tar.gz`)}` !== oursGzip.diffId)
  throw new Error('gzip -d does not give our diffId')
if (`sha256:${tarOf(`zstd -dc ${out}/ours.tar.zst`)}` !== oursZstd.diffId)
  throw new Error('zstd -d does not give our diffId')

const [gzipOurs, zstdOurs] = [byName('aegis-kit LayerWriter gzip'), byName('aegis-kit LayerWriter zstd')]
const ourRows = new Set([...oursAtLevel, ...pairs.flat(), gzipOurs, zstdOurs])
console.log('\nratios ours / peer (< 1: ours is faster), wall and cpu:')
for (const peer of results.filter((row) => !ourRows.has(row))) {
  const mine = peer.name.includes('zstd') ? zstdOurs : gzipOurs
  const label = `${mine.name.replace('aegis-kit LayerWriter ', 'ours ')} / ${peer.name}`
  console.log(`  ${label.padEnd(40)} ${(mine.wall / peer.wall).toFixed(2)}  ${(mine.cpu / peer.cpu).toFixed(2)}`)
}
// Equal size: against each umoci blob, our fastest gzip level whose blob is no larger.
for (const umoci of results.filter((row) => row.name.startsWith('umoci'))) {
  const fit = [gzipOurs, ...oursAtLevel].filter((row) => row.bytes <= umoci.bytes).sort((a, b) => a.wall - b.wall)[0]
  console.log(
    fit
      ? `  at no larger a blob than ${umoci.name} (${mb(umoci.bytes)} MB): ${fit.name} ${mb(fit.bytes)} MB, ${(fit.wall / umoci.wall).toFixed(2)} wall, ${(fit.cpu / umoci.cpu).toFixed(2)} cpu`
      : `  no level of ours makes a blob as small as ${umoci.name}'s`,
  )
}
if (pairs.length > 0) {
  console.log('\nours / before (same bytes checked; < 1: faster now), wall and cpu:')
  for (const [mine, theirs] of pairs)
    console.log(
      `  ${mine.name.replace('aegis-kit LayerWriter ', '').padEnd(10)} ${(mine.wall / theirs.wall).toFixed(2)}  ${(mine.cpu / theirs.cpu).toFixed(2)}`,
    )
}
const kind = rounds > 1 ? `median of ${rounds}` : 'one run'
console.log(`\n| contender | wall s (${kind}) | cpu s | blob MB | load |\n| --- | --- | --- | --- | --- |`)
for (const row of results) {
  const loads = `${Math.min(...row.loads).toFixed(1)}${row.loads.length > 1 ? `-${Math.max(...row.loads).toFixed(1)}` : ''}`
  console.log(
    `| ${row.name.replaceAll('|', '\\|')} | ${row.wall.toFixed(2)} | ${row.cpu.toFixed(2)} | ${row.bytes ? mb(row.bytes) : ''} | ${loads} |`,
  )
}
console.log(`load: ${sh('cat /proc/loadavg').trim()}`)
rmSync(out, {recursive: true, force: true})
