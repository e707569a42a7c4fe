#!/usr/bin/env node
/**
 * Root-unpack benchmark: aegis-kit's unpackImage (as `aegis-kit run` calls it) against
 * `umoci raw unpack` of the same image, alternating which goes first, medians of N runs.
 *
 *   npm run build && node bench/unpack/run.mjs [REF] [--runs=N] [--baseline=DIST]
 *
 * --baseline adds a third contender: another build's dist/ (say, of the previous commit).
 * REF defaults to openclaw:2026.9.6 in the store of AEGIS_KIT_HOME (default
 * /tmp/aegis-unpack-bench/home, where it is built first when missing). umoci reads a copy of
 * the store's layout holding only this image (blobs hardlinked), so the store is left alone.
 * Run as root: both then keep owners (umoci's rootless mode would not).
 *
 * Every tree is kept until the end, and a run starts at least 5 minutes after the previous
 * run's trees were deleted: this machine's ext4 has no journal, and without one the kernel
 * skips inodes freed in the last 5 minutes while their inode-table block is dirty
 * (recently_deleted() in fs/ext4/ialloc.c), scanning past each of them on every file it creates. Right after deleting a root, creating the next
 * one's 48,000 files took several times longer, for umoci and for us alike.
 */
import {execSync} from 'node:child_process'
import {existsSync, linkSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {availableParallelism} from 'node:os'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const benchDir = '/tmp/aegis-unpack-bench'
const home = process.env.AEGIS_KIT_HOME ?? join(benchDir, 'home')
const storeRoot = join(home, 'store')
const ref = process.argv.slice(2).find((arg) => !arg.startsWith('--')) ?? 'openclaw:2026.9.6'
const runs = Number(process.argv.find((arg) => arg.startsWith('--runs='))?.slice('--runs='.length) ?? 3)
const baseline = process.argv.find((arg) => arg.startsWith('--baseline='))?.slice('--baseline='.length)
const out = join(benchDir, 'out')
const cleanedMarker = join(benchDir, 'cleaned-at')
const SETTLE_MS = 5 * 60 * 1000

const sh = (command) =>
  execSync(command, {stdio: ['ignore', 'pipe', 'inherit'], shell: '/bin/bash', maxBuffer: 1 << 26}).toString()
const blobPath = (root, digest) => join(root, 'blobs/sha256', digest.slice('sha256:'.length))
const json = (file) => JSON.parse(readFileSync(file, 'utf8'))

const findManifest = () =>
  json(join(storeRoot, 'index.json')).manifests.find(
    (m) => m.annotations?.['org.opencontainers.image.ref.name'] === ref,
  )
if (!existsSync(join(storeRoot, 'index.json')) || !findManifest()) {
  console.log(`building ${ref} into ${home} (one time)...`)
  execSync(`${join(repo, 'bin/run.js')} build ${ref.split(':')[0]}`, {
    stdio: 'inherit',
    env: {...process.env, AEGIS_KIT_HOME: home},
  })
}
const desc = findManifest()
if (desc.mediaType !== 'application/vnd.oci.image.manifest.v1+json')
  throw new Error(`${ref} is not a single-platform image manifest`)
const manifest = json(blobPath(storeRoot, desc.digest))

if (existsSync(out)) cleanUp() // an interrupted run's trees
const settle = existsSync(cleanedMarker) ? statSync(cleanedMarker).mtimeMs + SETTLE_MS - Date.now() : 0
if (settle > 0) {
  console.log(
    `waiting ${Math.ceil(settle / 1000)} s: the last run's trees were deleted less than 5 minutes ago (see the top of this file)`,
  )
  await new Promise((resolve) => setTimeout(resolve, settle))
}
const layout = join(out, 'layout')
mkdirSync(join(layout, 'blobs/sha256'), {recursive: true})
for (const {digest} of [desc, manifest.config, ...manifest.layers])
  linkSync(blobPath(storeRoot, digest), blobPath(layout, digest))
writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}')
writeFileSync(
  join(layout, 'index.json'),
  JSON.stringify({
    schemaVersion: 2,
    manifests: [{...desc, annotations: {'org.opencontainers.image.ref.name': 'bench'}}],
  }),
)

const compressed = manifest.layers.reduce((sum, layer) => sum + layer.size, 0)
console.log(
  `image: ${ref} ${desc.digest.slice(0, 19)}: ${manifest.layers.length} layers, ${(compressed / 1e6).toFixed(1)} MB compressed; ${availableParallelism()} cores; node ${process.version}; uid ${process.getuid()}`,
)
console.log(`load: ${sh('cat /proc/loadavg').trim()}`)
for (const layer of manifest.layers) sh(`cat ${blobPath(storeRoot, layer.digest)} > /dev/null`) // the blobs from the page cache for both

const ours = (dist) => (dest) =>
  `node ${join(repo, 'bench/unpack/unpack-image.mjs')} ${storeRoot} ${desc.digest} ${dest} ${dist}`
const contenders = {
  'aegis-kit unpackImage': ours(join(repo, 'dist')),
  'umoci raw unpack': (dest) =>
    `umoci raw unpack ${process.getuid() === 0 ? '' : '--rootless '}--image ${layout}:bench ${dest}`,
  ...(baseline === undefined ? {} : {'baseline unpackImage': ours(baseline)}),
}
const names = Object.keys(contenders)
const times = Object.fromEntries(names.map((name) => [name, []]))
const describe = {}

/** Wall and CPU seconds (user + sys of the command and its children) under bash's `time`. */
function time(name, dest) {
  sh('sync') // the previous run's dirty pages are not this run's cost
  const timed = sh(`TIMEFORMAT='%R %U %S'; { time ( { ${contenders[name](dest)} ; } > ${out}/stdout 2>&1 ) ; } 2>&1`)
    .trim()
    .split('\n')
    .at(-1)
  const [wall, user, sys] = timed.split(' ').map(Number)
  times[name].push({wall, cpu: user + sys})
  describe[name] ??= `${(sh(`du -sb ${dest}`).split('\t')[0] / 1e6) | 0} MB, ${sh(`find ${dest} | wc -l`).trim()} paths`
  console.log(`  ${name.padEnd(24)} ${wall.toFixed(2).padStart(6)} s wall ${(user + sys).toFixed(2).padStart(6)} s cpu`)
}

function cleanUp() {
  rmSync(out, {recursive: true, force: true})
  writeFileSync(cleanedMarker, new Date().toISOString())
}

/** Every path's type, mode, owner, size, mtime, link target and link count, and every file's content. */
const treeOf = (dest) =>
  sh(
    `cd ${dest} && find . -mindepth 1 -printf '%p %y %m %U %G %s %T@ %l %n\\n' | LC_ALL=C sort && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum`,
  )

for (let run = 0; run < runs; run++) {
  console.log(`run ${run + 1}/${runs}:`)
  const order = run % 2 === 0 ? names : [...names].reverse()
  const dests = {}
  for (const [index, name] of order.entries()) time(name, (dests[name] = join(out, `dest-${run}-${index}`)))
  // Not timed: the same tree as umoci's, or the figures mean nothing.
  if (run === 0 && treeOf(dests['aegis-kit unpackImage']) !== treeOf(dests['umoci raw unpack']))
    throw new Error(`the two trees differ: diff -r ${Object.values(dests).join(' ')}`)
}

const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}
const summary = Object.fromEntries(
  names.map((name) => [
    name,
    {wall: median(times[name].map((t) => t.wall)), cpu: median(times[name].map((t) => t.cpu))},
  ]),
)
console.log(`medians of ${runs}:`)
for (const name of names)
  console.log(
    `  ${name.padEnd(24)} ${summary[name].wall.toFixed(2).padStart(6)} s wall ${summary[name].cpu.toFixed(2).padStart(6)} s cpu  (${describe[name]})`,
  )
const ratio = (name) =>
  `${(summary[name].wall / summary['umoci raw unpack'].wall).toFixed(2)} wall, ${(summary[name].cpu / summary['umoci raw unpack'].cpu).toFixed(2)} cpu`
console.log(`ratio ours / umoci (target <= 1.0): ${ratio('aegis-kit unpackImage')}`)
if (baseline !== undefined) console.log(`ratio baseline / umoci: ${ratio('baseline unpackImage')}`)
console.log(`load: ${sh('cat /proc/loadavg').trim()}`)
cleanUp()
