#!/usr/bin/env node
/**
 * Registry benchmark: aegis-kit `images push`/`images pull` against `skopeo copy`, the same
 * multi-layer image (>= 200 MB of random, incompressible data) and the same local
 * docker-registry, timed one after another in a single run.
 *
 *   npm run build                   # the CLI runs from dist/
 *   node bench/registry/run.mjs [MB]   # MB: total layer size, default 210
 *
 * Timed: a push of each tool into a fresh repository, an unchanged re-push of each, a pull of
 * each into an empty destination (an empty AEGIS_KIT_HOME / a new OCI layout), and the CLI's
 * start (`aegis-kit --version`, median of 5). Prints seconds and the ratios ours/skopeo.
 */
import {execFileSync, spawn} from 'node:child_process'
import {createHash, randomBytes} from 'node:crypto'
import {closeSync, mkdirSync, openSync, readFileSync, readSync, renameSync, rmSync, statSync, writeFileSync, writeSync} from 'node:fs'
import {createServer} from 'node:net'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {setTimeout as sleep} from 'node:timers/promises'

const repo = fileURLToPath(new URL('../..', import.meta.url))
const cli = join(repo, 'bin/run.js')
const benchDir = '/tmp/aegis-registry-bench'
const totalMb = Number(process.argv[2] ?? 210)
// Layer sizes in MB, largest first, summing to totalMb (the shape of a real image: a big base, smaller app layers).
const shares = [0.4, 0.25, 0.15, 0.1, 0.06, 0.04]
const layerSizes = shares.map((share) => Math.round(share * totalMb * 1e6))

rmSync(benchDir, {recursive: true, force: true})
mkdirSync(benchDir, {recursive: true})

const seconds = (ns) => Number(ns) / 1e9
function time(label, command, args, env = {}) {
  const start = process.hrtime.bigint()
  execFileSync(command, args, {stdio: ['ignore', 'ignore', 'pipe'], env: {...process.env, ...env}, maxBuffer: 1 << 26})
  const elapsed = seconds(process.hrtime.bigint() - start)
  console.log(`  ${label.padEnd(44)} ${elapsed.toFixed(3)} s`)
  return elapsed
}

// ---- 1. The image: an OCI layout written directly, uncompressed tar layers of random bytes ----

function sha256File(path) {
  const hash = createHash('sha256')
  const fd = openSync(path, 'r')
  const buffer = Buffer.alloc(8 << 20)
  try {
    for (let n; (n = readSync(fd, buffer, 0, buffer.length, null)) > 0;) hash.update(buffer.subarray(0, n))
  } finally {
    closeSync(fd)
  }
  return hash.digest('hex')
}

function writeBlob(layout, bytes) {
  const hex = createHash('sha256').update(bytes).digest('hex')
  writeFileSync(join(layout, 'blobs/sha256', hex), bytes)
  return {digest: `sha256:${hex}`, size: bytes.length}
}

function buildImage(layout) {
  mkdirSync(join(layout, 'blobs/sha256'), {recursive: true})
  writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}')
  const work = join(benchDir, 'work')
  const layers = []
  layerSizes.forEach((size, i) => {
    const root = join(work, `layer-${i}`)
    mkdirSync(join(root, 'data'), {recursive: true})
    const fd = openSync(join(root, 'data', `random-${i}.bin`), 'w')
    for (let left = size; left > 0; left -= 4 << 20) writeSync(fd, randomBytes(Math.min(left, 4 << 20)))
    closeSync(fd)
    const tar = join(work, `layer-${i}.tar`)
    execFileSync('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', root, '-cf', tar, '.'])
    const hex = sha256File(tar)
    renameSync(tar, join(layout, 'blobs/sha256', hex))
    layers.push({mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${hex}`, size: statSync(join(layout, 'blobs/sha256', hex)).size})
    rmSync(root, {recursive: true, force: true})
  })
  const config = Buffer.from(JSON.stringify({
    created: '2026-01-01T00:00:00Z', architecture: 'amd64', os: 'linux', config: {Cmd: ['/bin/true']},
    rootfs: {type: 'layers', diff_ids: layers.map((l) => l.digest)},
    history: layers.map(() => ({created: '2026-01-01T00:00:00Z', created_by: 'bench/registry'})),
  }))
  const configDesc = {mediaType: 'application/vnd.oci.image.config.v1+json', ...writeBlob(layout, config)}
  const manifest = Buffer.from(JSON.stringify({schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: configDesc, layers}))
  const manifestDesc = {mediaType: 'application/vnd.oci.image.manifest.v1+json', ...writeBlob(layout, manifest)}
  writeFileSync(join(layout, 'index.json'), JSON.stringify({
    schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{...manifestDesc, annotations: {'org.opencontainers.image.ref.name': 'bench'}}],
  }))
  return {layers, digest: manifestDesc.digest, bytes: layers.reduce((sum, l) => sum + l.size, 0) + config.length + manifest.length}
}

// ---- 2. A local docker-registry (the same config as test/helpers/registry.ts, no auth) ----

async function freePort() {
  const server = createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

async function startRegistry() {
  const port = await freePort()
  const config = join(benchDir, 'registry.yml')
  writeFileSync(config, [
    'version: 0.1', 'log:', '  level: warn', '  accesslog:', '    disabled: true',
    'storage:', '  filesystem:', `    rootdirectory: ${join(benchDir, 'registry-storage')}`,
    '  maintenance:', '    uploadpurging:', '      enabled: false',
    'http:', `  addr: 127.0.0.1:${port}`, '',
  ].join('\n'))
  const child = spawn('docker-registry', ['serve', config], {stdio: 'ignore'})
  const url = `http://127.0.0.1:${port}/v2/`
  for (const deadline = Date.now() + 20_000; ;) {
    if (child.exitCode !== null) throw new Error('docker-registry exited')
    try {
      const response = await fetch(url)
      await response.body?.cancel()
      if (response.ok) break
    } catch {
      // not up yet
    }
    if (Date.now() > deadline) throw new Error('docker-registry did not start')
    await sleep(50)
  }
  return {host: `127.0.0.1:${port}`, stop: () => child.kill('SIGKILL')}
}

// ---- 3. The run ----

const layout = join(benchDir, 'layout')
console.log(`building a ${layerSizes.length}-layer image of ${totalMb} MB of random data in ${layout} ...`)
const image = buildImage(layout)
console.log(`  ${(image.bytes / 1e6).toFixed(1)} MB, layers ${image.layers.map((l) => (l.size / 1e6).toFixed(0)).join('+')} MB, manifest ${image.digest}`)

const registry = await startRegistry()
const homes = {push: join(benchDir, 'home-push'), pull: join(benchDir, 'home-pull')}
const aegis = (home, ...args) => ['node', [cli, ...args], {AEGIS_KIT_HOME: home}]
try {
  execFileSync('node', [cli, 'images', 'import', `oci-layout:${layout}:bench`, '--tag', 'bench:1'], {stdio: 'ignore', env: {...process.env, AEGIS_KIT_HOME: homes.push}})
  console.log(`\nregistry ${registry.host}; aegis-kit ${readFileSync(join(repo, 'package.json'), 'utf8').match(/"version": "([^"]+)"/)[1]}, ${execFileSync('skopeo', ['--version']).toString().trim()}`)
  const r = {}
  const ours = `${registry.host}/bench/aegis:1`
  const theirs = `${registry.host}/bench/skopeo:1`
  console.log('push into a fresh repository')
  r.pushOurs = time('aegis-kit images push', ...aegis(homes.push, 'images', 'push', 'bench:1', ours))
  r.pushSkopeo = time('skopeo copy oci: docker://', 'skopeo', ['copy', '--dest-tls-verify=false', `oci:${layout}:bench`, `docker://${theirs}`])
  console.log('re-push, unchanged')
  r.repushOurs = time('aegis-kit images push', ...aegis(homes.push, 'images', 'push', 'bench:1', ours))
  r.repushSkopeo = time('skopeo copy oci: docker://', 'skopeo', ['copy', '--dest-tls-verify=false', `oci:${layout}:bench`, `docker://${theirs}`])
  console.log('pull into an empty destination')
  r.pullOurs = time('aegis-kit images pull', ...aegis(homes.pull, 'images', 'pull', ours))
  r.pullSkopeo = time('skopeo copy docker:// oci:', 'skopeo', ['copy', '--src-tls-verify=false', `docker://${theirs}`, `oci:${join(benchDir, 'skopeo-pulled')}:bench`])
  console.log('CLI start (aegis-kit --version, median of 5)')
  const starts = Array.from({length: 5}, () => {
    const start = process.hrtime.bigint()
    execFileSync('node', [cli, '--version'], {stdio: 'ignore'})
    return seconds(process.hrtime.bigint() - start)
  }).sort((a, b) => a - b)
  r.start = starts[2]
  console.log(`  ${'aegis-kit --version'.padEnd(44)} ${r.start.toFixed(3)} s`)

  const ratio = (a, b) => (a / b).toFixed(2)
  console.log('\nsummary              aegis-kit   skopeo   ratio ours/skopeo')
  for (const [name, a, b] of [['push', r.pushOurs, r.pushSkopeo], ['unchanged re-push', r.repushOurs, r.repushSkopeo], ['pull', r.pullOurs, r.pullSkopeo]]) {
    console.log(`${name.padEnd(20)} ${a.toFixed(3).padStart(8)} s ${b.toFixed(3).padStart(7)} s   ${ratio(a, b)}`)
  }
  console.log(`CLI start            ${r.start.toFixed(3).padStart(8)} s   (target < 0.300 s)`)
  console.log(`re-push minus start  ${(r.repushOurs - r.start).toFixed(3).padStart(8)} s   (target <= 0.100 s)`)
} finally {
  registry.stop()
}
