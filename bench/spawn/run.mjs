#!/usr/bin/env node
/**
 * Spawn benchmark (issue 14), measured in one run on this machine, nothing asserted: how long a
 * hello-sized work instance takes from the request to its first answer,
 *  a. from inside a bot instance: `POST /v1/instances` on 127.0.0.1:7777 in the bot's VM (timed
 *     in the guest by busybox `time` around the request, which is answered once the child's
 *     healthcheck has answered), against
 *  b. from the host: `aegis-kit run KIT --profile work --detach` (timed from the command's start
 *     to its exit, which is also once the healthcheck has answered), then a request to its page.
 * The peer of the guest path is aegis-kit's own host path on the same kit in the same run: the
 * ambition is that the guest path adds under 100 ms. Medians of N rounds, alternating.
 *
 *   npm run build && node bench/spawn/run.mjs [--runs=N]
 * Uses AEGIS_KIT_HOME (default: a temporary one; the kit is built first).
 */
import {execFileSync} from 'node:child_process'
import {cpSync, mkdtempSync, readFileSync, writeFileSync} from 'node:fs'
import {loadavg, tmpdir} from 'node:os'
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const bin = join(repo, 'bin/run.js')
const home = process.env.AEGIS_KIT_HOME ?? mkdtempSync(join(tmpdir(), 'aegis-bench-spawn-'))
const env = {...process.env, AEGIS_KIT_HOME: home}
const runs = Number(process.argv.find((arg) => arg.startsWith('--runs='))?.slice('--runs='.length) ?? 5)
const loads = [loadavg()[0]]

const cli = (args) =>
  execFileSync(process.execPath, [bin, ...args], {env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe']})
const median = (values) => [...values].sort((a, b) => a - b)[Math.floor(values.length / 2)]
const timed = (fn) => {
  const started = process.hrtime.bigint()
  fn()
  return Number(process.hrtime.bigint() - started) / 1e6
}

// The kit: hello with a bot that may spawn one work instance (as test/run/guest-api.test.ts).
const kit = join(home, 'spawn-bench-kit')
cpSync(join(repo, 'kits/hello'), kit, {recursive: true})
cpSync(join(repo, 'test/fixtures/two-tier/api.sh'), join(kit, 'www/api.sh'))
const manifestFile = join(kit, 'aegis-kit.yaml')
const manifest = readFileSync(manifestFile, 'utf8')
writeFileSync(
  manifestFile,
  manifest.replace(
    /\nprofiles:\n[\s\S]*?\n(?=healthcheck:)/,
    `
profiles:
  bot:
    memory_mb: 256
    capabilities: {spawn: true, spawn_depth: 1, max_children: 1, allowed_profiles: [work]}
  work:
    memory_mb: 256
    exposes: [8080]

`,
  ),
)
cli(['build', kit])
cli(['run', kit, '--profile', 'bot', '--name', 'bot', '--detach'])

const guestMs = []
const hostMs = []
try {
  for (let round = 0; round < runs; round++) {
    // a. inside the bot; busybox time prints "real 0m 4.93s" (10 ms resolution) on stderr.
    const out = execFileSync(
      process.execPath,
      [
        bin,
        'exec',
        'bot',
        '--',
        'busybox',
        'sh',
        '-c',
        `busybox time busybox sh /srv/www/api.sh POST /v1/instances '{"handle":"work","profile":"work"}' 2>&1`,
      ],
      {env, encoding: 'utf8'},
    )
    if (!/ 201 Created/.test(out)) throw new Error(`spawn from the bot failed:\n${out}`)
    const real = /real\s+(\d+)m\s*([\d.]+)s/.exec(out)
    if (!real) throw new Error(`no time in:\n${out}`)
    guestMs.push((Number(real[1]) * 60 + Number(real[2])) * 1000)
    cli(['exec', 'bot', '--', 'busybox', 'sh', '/srv/www/api.sh', 'DELETE', '/v1/instances/bot.work'])

    // b. from the host, the same kit and profile.
    hostMs.push(timed(() => cli(['run', kit, '--profile', 'work', '--name', 'hostwork', '--detach'])))
    cli(['rm', '--force', 'hostwork'])
    loads.push(loadavg()[0])
  }
} finally {
  cli(['stop', 'bot'])
}

const guest = median(guestMs)
const host = median(hostMs)
console.log(`spawn to answer, hello work instance, medians of ${runs} (TCG):`)
console.log(
  `  from inside the bot (POST /v1/instances): ${(guest / 1000).toFixed(2)} s  [${guestMs.map((ms) => (ms / 1000).toFixed(2)).join(' ')}]`,
)
console.log(
  `  from the host (run --detach):             ${(host / 1000).toFixed(2)} s  [${hostMs.map((ms) => (ms / 1000).toFixed(2)).join(' ')}]`,
)
console.log(`  guest path minus host path: ${Math.round(guest - host)} ms (ratio ${(guest / host).toFixed(2)})`)
console.log(`  load average during the run: ${loads.map((load) => load.toFixed(2)).join(' ')}`)
