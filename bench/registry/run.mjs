#!/usr/bin/env node
/**
 * Registry benchmark: aegis-kit `images push`/`images pull` against `skopeo copy`, and against
 * the Go clients `oras cp` and `crane push`/`crane pull` when installed (scripts/install-bench-peers):
 * the same multi-layer image (>= 200 MB of random, incompressible data) and the same local
 * docker-registry, timed one after another in a single run.
 *
 *   npm run build                            # the CLI runs from dist/
 *   node bench/registry/run.mjs [MB] [--rounds N] [--baseline [NAME=]DIR]...
 *
 * MB: total layer size, default 210; N: default 5. DIR: another built aegis-kit (a copy of
 * bin/, dist/, package.json, oclif.manifest.json and node_modules, e.g. of the commit before a
 * change), timed as the tool NAME (default `before`) in the same rounds, so before/after ratios
 * share one run; --baseline may be given more than once.
 *
 * Timed, in each round: a push of each tool into a fresh repository, an unchanged re-push of
 * each, a pull of each into an empty destination (an empty AEGIS_KIT_HOME / a new OCI layout),
 * and the CLI's start (`aegis-kit --version`, `skopeo --version`..., and `node -e ''`, Node's
 * own). Which tool goes first alternates between rounds; each round has a fresh registry. skopeo
 * is told to keep the layers as they are (`--preserve-digests`), so both tools move the same
 * bytes. Prints every round, the medians, the ratios of the medians (ours/skopeo), the pull
 * without process start, and the load average.
 */
import {execFileSync, spawn} from 'node:child_process'
import {createHash, randomBytes} from 'node:crypto'
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs'
import {createServer} from 'node:net'
import {loadavg} from 'node:os'
import {join} from 'node:path'
import {fileURLToPath} from 'node:url'
import {setTimeout as sleep} from 'node:timers/promises'

const repo = fileURLToPath(new URL('../..', import.meta.url))
const cli = join(repo, 'bin/run.js')
const benchDir = process.env.AEGIS_BENCH_DIR ?? '/tmp/aegis-registry-bench'
const args = process.argv.slice(2)
const roundsFlag = args.indexOf('--rounds')
const rounds = roundsFlag === -1 ? 5 : Number(args.splice(roundsFlag, 2)[1])
const baselines = {}
for (let at; (at = args.indexOf('--baseline')) !== -1; ) {
  const value = args.splice(at, 2)[1]
  const eq = value.indexOf('=')
  baselines[eq === -1 ? 'before' : value.slice(0, eq)] = join(value.slice(eq + 1), 'bin/run.js')
}
const totalMb = Number(args[0] ?? 210)
// Layer sizes in MB, largest first, summing to totalMb (the shape of a real image: a big base, smaller app layers).
const shares = [0.4, 0.25, 0.15, 0.1, 0.06, 0.04]
const layerSizes = shares.map((share) => Math.round(share * totalMb * 1e6))

rmSync(benchDir, {recursive: true, force: true})
mkdirSync(benchDir, {recursive: true})

const seconds = (ns) => Number(ns) / 1e9
// CPU seconds (user + system) of the last timed command and its children, from GNU time: on a
// shared machine a tool's CPU time moves much less than its wall time.
const cpuFile = join(benchDir, 'cpu')
const gnuTime = ['/usr/bin/time', '-f', '%U %S', '-o', cpuFile]
let lastCpu = 0
function time(command, args, env = {}) {
  const start = process.hrtime.bigint()
  execFileSync(gnuTime[0], [...gnuTime.slice(1), command, ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: {...process.env, ...env},
    maxBuffer: 1 << 26,
  })
  const wall = seconds(process.hrtime.bigint() - start)
  const [user, system] = readFileSync(cpuFile, 'utf8').trim().split('\n').at(-1).split(' ').map(Number)
  lastCpu = user + system
  return wall
}
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted.length % 2
    ? sorted[sorted.length >> 1]
    : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2
}
const load = () =>
  loadavg()
    .map((n) => n.toFixed(2))
    .join(' ')

// ---- 1. The image: an OCI layout written directly, uncompressed tar layers of random bytes ----

function sha256File(path) {
  const hash = createHash('sha256')
  const fd = openSync(path, 'r')
  const buffer = Buffer.alloc(8 << 20)
  try {
    for (let n; (n = readSync(fd, buffer, 0, buffer.length, null)) > 0; ) hash.update(buffer.subarray(0, n))
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
    execFileSync('tar', [
      '--sort=name',
      '--mtime=@0',
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      '-C',
      root,
      '-cf',
      tar,
      '.',
    ])
    const hex = sha256File(tar)
    renameSync(tar, join(layout, 'blobs/sha256', hex))
    layers.push({
      mediaType: 'application/vnd.oci.image.layer.v1.tar',
      digest: `sha256:${hex}`,
      size: statSync(join(layout, 'blobs/sha256', hex)).size,
    })
    rmSync(root, {recursive: true, force: true})
  })
  const config = Buffer.from(
    JSON.stringify({
      created: '2026-01-01T00:00:00Z',
      architecture: 'amd64',
      os: 'linux',
      config: {Cmd: ['/bin/true']},
      rootfs: {type: 'layers', diff_ids: layers.map((l) => l.digest)},
      history: layers.map(() => ({created: '2026-01-01T00:00:00Z', created_by: 'bench/registry'})),
    }),
  )
  const configDesc = {mediaType: 'application/vnd.oci.image.config.v1+json', ...writeBlob(layout, config)}
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: configDesc,
      layers,
    }),
  )
  const manifestDesc = {mediaType: 'application/vnd.oci.image.manifest.v1+json', ...writeBlob(layout, manifest)}
  writeFileSync(
    join(layout, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [{...manifestDesc, annotations: {'org.opencontainers.image.ref.name': 'bench'}}],
    }),
  )
  return {
    layers,
    digest: manifestDesc.digest,
    bytes: layers.reduce((sum, l) => sum + l.size, 0) + config.length + manifest.length,
  }
}

// ---- 2. A local docker-registry (the same config as test/helpers/registry.ts, no auth) ----
// A fresh one (new port, empty storage) per round: skopeo remembers which repositories of a
// registry hold a blob (its blob-info cache) and would mount instead of uploading in round 2.

async function freePort() {
  const server = createServer()
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

async function startRegistry(round) {
  const port = await freePort()
  const config = join(benchDir, 'registry.yml')
  const storage = join(benchDir, `registry-storage-${round}`)
  writeFileSync(
    config,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storage}`,
      '  maintenance:',
      '    uploadpurging:',
      '      enabled: false',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      '',
    ].join('\n'),
  )
  const child = spawn('docker-registry', ['serve', config], {stdio: 'ignore'})
  const url = `http://127.0.0.1:${port}/v2/`
  for (const deadline = Date.now() + 20_000; ; ) {
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
  return {
    host: `127.0.0.1:${port}`,
    stop: () => {
      child.kill('SIGKILL')
      rmSync(storage, {recursive: true, force: true})
    },
  }
}

// ---- 3. The run ----

const layout = join(benchDir, 'layout')
console.log(`building a ${layerSizes.length}-layer image of ${totalMb} MB of random data in ${layout} ...`)
const image = buildImage(layout)
console.log(
  `  ${(image.bytes / 1e6).toFixed(1)} MB, layers ${image.layers.map((l) => (l.size / 1e6).toFixed(0)).join('+')} MB, manifest ${image.digest}`,
)

// skopeo gzips uncompressed layers on the way to a registry (and into an oci: layout) unless told
// not to; aegis-kit moves them as they are. Same bytes both ways: the same digests in both repositories.
const SAME_BYTES = ['--preserve-digests']
const importHome = join(benchDir, 'home-push')
const aegis = (home, ...rest) => ['node', [cli, ...rest], {AEGIS_KIT_HOME: home}]
const installed = (command) => {
  try {
    execFileSync('sh', ['-c', `command -v ${command}`], {stdio: 'ignore'})
    return true
  } catch {
    return false
  }
}
// The Go registry clients, when installed (scripts/install-bench-peers): oras and crane move an
// OCI layout's blobs as they are, as aegis-kit does.
const peers = [
  'skopeo',
  ...['oras', 'crane'].filter(
    (tool) =>
      installed(tool) || (console.log(`${tool} is not installed (scripts/install-bench-peers): left out`), false),
  ),
]
// Baselines are aegis-kit too (other builds of it): a column each, before the peers.
const tools = ['ours', ...Object.keys(baselines), ...peers]
const version = {
  skopeo: () => execFileSync('skopeo', ['--version']).toString().trim(),
  oras: () =>
    `oras ${
      execFileSync('oras', ['version'])
        .toString()
        .match(/Version:\s*(\S+)/)?.[1]
    }`,
  crane: () => `crane ${execFileSync('dpkg-query', ['-W', '-f', '${Version}', 'crane']).toString()}`,
}
const startArgs = {skopeo: ['skopeo', ['--version']], oras: ['oras', ['version']], crane: ['crane', ['version']]}
// What each tool runs for a step; `dest` is its own repository in this round's registry.
function commands(round, host) {
  const dest = (tool) => `${host}/bench/${tool}-${round}:1`
  const pulled = (tool) => join(benchDir, `${tool}-pulled-${round}`)
  return {
    ours: {
      push: () => aegis(importHome, 'images', 'push', 'bench:1', dest('ours')),
      pull: () => aegis(pulled('ours'), 'images', 'pull', dest('ours')),
    },
    ...Object.fromEntries(
      Object.entries(baselines).map(([name, bin]) => [
        name,
        {
          push: () => ['node', [bin, 'images', 'push', 'bench:1', dest(name)], {AEGIS_KIT_HOME: importHome}],
          pull: () => ['node', [bin, 'images', 'pull', dest(name)], {AEGIS_KIT_HOME: pulled(name)}],
        },
      ]),
    ),
    skopeo: {
      push: () => [
        'skopeo',
        ['copy', ...SAME_BYTES, '--dest-tls-verify=false', `oci:${layout}:bench`, `docker://${dest('skopeo')}`],
      ],
      pull: () => [
        'skopeo',
        [
          'copy',
          ...SAME_BYTES,
          '--dest-oci-accept-uncompressed-layers',
          '--src-tls-verify=false',
          `docker://${dest('skopeo')}`,
          `oci:${pulled('skopeo')}:bench`,
        ],
      ],
    },
    oras: {
      push: () => ['oras', ['cp', '--from-oci-layout', '--to-plain-http', `${layout}:bench`, dest('oras')]],
      pull: () => ['oras', ['cp', '--from-plain-http', '--to-oci-layout', dest('oras'), `${pulled('oras')}:bench`]],
    },
    crane: {
      push: () => ['crane', ['push', '--insecure', layout, dest('crane')]],
      pull: () => ['crane', ['pull', '--insecure', '--format=oci', dest('crane'), pulled('crane')]],
    },
    dest,
    pulled,
  }
}
let registry
try {
  execFileSync('node', [cli, 'images', 'import', `oci-layout:${layout}:bench`, '--tag', 'bench:1'], {
    stdio: 'ignore',
    env: {...process.env, AEGIS_KIT_HOME: importHome},
  })
  console.log(
    `\naegis-kit ${readFileSync(join(repo, 'package.json'), 'utf8').match(/"version": "([^"]+)"/)[1]}, ${peers.map((tool) => version[tool]()).join(', ')}, node ${process.version}`,
  )
  console.log(`load average at start: ${load()}\n`)
  const steps = ['push', 'repush', 'pull']
  // Node's own start, with no code of ours: the floor under every aegis-kit run on this machine.
  const nodeStart = []
  const results = Object.fromEntries(
    tools.map((tool) => [tool, {push: [], repush: [], pull: [], start: [], pushCpu: [], pullCpu: []}]),
  )
  console.log(`round  ${steps.map((step) => `${step} ${tools.join('/')}`.padEnd(8 * tools.length + 8)).join('')}load`)
  for (let round = 1; round <= rounds; round++) {
    registry = await startRegistry(round)
    const run = commands(round, registry.host)
    // Rotate who goes first: the later of back-to-back runs finds warmer caches.
    const order = tools.map((_, i) => tools[(i + round) % tools.length])
    const row = Object.fromEntries(tools.map((tool) => [tool, {}]))
    for (const step of steps) {
      for (const tool of order) {
        results[tool][step].push((row[tool][step] = time(...run[tool][step === 'repush' ? 'push' : step]())))
        if (step !== 'repush') results[tool][`${step}Cpu`].push(lastCpu)
      }
    }
    results.ours.start.push(...Array.from({length: 5}, () => time('node', [cli, '--version'])))
    nodeStart.push(...Array.from({length: 5}, () => time('node', ['-e', ''])))
    for (const [name, bin] of Object.entries(baselines))
      results[name].start.push(...Array.from({length: 5}, () => time('node', [bin, '--version'])))
    for (const tool of peers) results[tool].start.push(...Array.from({length: 5}, () => time(...startArgs[tool])))
    // Like for like: every tool pushed the same manifest, byte for byte.
    const raw = (reference) =>
      execFileSync('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${reference}`]).toString()
    for (const tool of tools.slice(1)) {
      if (raw(run.dest('ours')) !== raw(run.dest(tool)))
        throw new Error(`aegis-kit and ${tool} pushed different manifests: the comparison would not be like for like`)
    }
    for (const tool of tools) rmSync(run.pulled(tool), {recursive: true, force: true})
    registry.stop()
    registry = undefined
    const cell = (step) =>
      tools
        .map((tool) => row[tool][step].toFixed(2))
        .join('/')
        .padEnd(8 * tools.length + 8)
    console.log(`${String(round).padEnd(6)} ${steps.map(cell).join('')}${load()}`)
  }

  const m = (tool, step) => median(results[tool][step])
  console.log(
    `\nmedians of ${rounds} rounds (s)   ${tools.map((tool) => (tool === 'ours' ? 'aegis-kit' : tool).padStart(9)).join(' ')}   ratios ours/${tools.slice(1).join(', ours/')}`,
  )
  for (const [name, step] of [
    ['push', 'push'],
    ['unchanged re-push', 'repush'],
    ['pull', 'pull'],
    ['process start', 'start'],
    ['push, CPU s (user+sys)', 'pushCpu'],
    ['pull, CPU s (user+sys)', 'pullCpu'],
  ]) {
    const ratios = tools
      .slice(1)
      .map((tool) => (m('ours', step) / m(tool, step)).toFixed(2))
      .join(', ')
    console.log(`${name.padEnd(28)} ${tools.map((tool) => m(tool, step).toFixed(3).padStart(9)).join(' ')}   ${ratios}`)
  }
  // Process start is ~0.15 s of Node and oclif against a few ms for a Go binary: the rest is the transfer itself.
  for (const step of ['push', 'pull']) {
    const net = (tool) => m(tool, step) - m(tool, 'start')
    console.log(
      `${`${step} minus process start`.padEnd(28)} ${tools.map((tool) => net(tool).toFixed(3).padStart(9)).join(' ')}   ${tools
        .slice(1)
        .map((tool) => (net('ours') / net(tool)).toFixed(2))
        .join(', ')}`,
    )
  }
  console.log(`${"node -e '' (Node's own start)".padEnd(28)} ${median(nodeStart).toFixed(3).padStart(9)}`)
  console.log(`load average at end: ${load()}`)
} finally {
  registry?.stop()
}
