// A build killed with SIGKILL while it makes a Debian base (issue 11, observation 3): it must
// leave no mount under the data directory (a later `rm -rf` of it would follow a bind mount of
// the host's /dev into the host's files) and no process of its own still running.
import {type ChildProcess, spawn} from 'node:child_process'
import {chmodSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {execa} from 'execa'
import {afterAll, describe, expect, it} from 'vitest'
import {binRun, repoRoot} from '../helpers/cli.js'

const home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-killed-'))

/** Mount points under `dir`, as this process's mount namespace (the host's) sees them. */
function mountsUnder(dir: string): string[] {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((line) =>
      line.split(' ')[4]?.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(parseInt(octal, 8))),
    )
    .filter((point): point is string => point !== undefined && point.startsWith(`${dir}/`))
}

/** Whether any process of `group` sees a mount under `dir` (in whatever mount namespace it is in). */
function groupSeesMountsUnder(group: number, dir: string): boolean {
  return processesInGroup(group).some((pid) => {
    try {
      return readFileSync(`/proc/${pid}/mountinfo`, 'utf8')
        .split('\n')
        .some((line) => line.split(' ')[4]?.startsWith(`${dir}/`))
    } catch {
      return false
    }
  })
}

/** Processes in process group `group` (the build's: spawned detached, it leads its own). */
function processesInGroup(group: number): number[] {
  const found: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8')
      // Fields after the command name (which may hold spaces): state, ppid, pgrp, ...
      if (Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[2]) === group) found.push(Number(entry))
    } catch {
      // Gone while listed.
    }
  }
  return found
}

async function waitUntil(condition: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (!condition()) {
    if (Date.now() > deadline) return false
    await sleep(50)
  }
  return true
}

/** How much longer each of mmdebstrap's mount and umount calls takes here. */
const MOUNT_DELAY_S = 0.5

/**
 * `mount` and `umount` that each take MOUNT_DELAY_S longer: mmdebstrap's mounts for an extract
 * base (a devpts and a bind of /dev/shm) last a few milliseconds (why a random kill hit them 1
 * time in ~11), which a test cannot aim at. The first real call leaves a marker: from then on
 * mounts exist between 1 and 4 delays later (mount pts, mount shm, umount shm, umount pts).
 */
function slowMountTools(marker: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'aegis-kit-slow-mount-'))
  for (const tool of ['mount', 'umount']) {
    const real = ['/usr/bin', '/bin'].map((bin) => path.join(bin, tool)).find((file) => existsSync(file))
    // mmdebstrap asks `mount --version` first, long before it mounts anything.
    writeFileSync(
      path.join(dir, tool),
      `#!/bin/sh\n[ "$1" = --version ] || { touch '${marker}'; sleep ${MOUNT_DELAY_S}; }\nexec ${real} "$@"\n`,
    )
    chmodSync(path.join(dir, tool), 0o755)
  }
  return dir
}

afterAll(async () => {
  // Never delete through a mount: a leaked bind mount of /dev/shm would take the host's files.
  for (const point of mountsUnder(home).sort().reverse()) await execa('umount', ['--lazy', point], {reject: false})
  if (mountsUnder(home).length === 0) rmSync(home, {recursive: true, force: true})
})

describe('a build killed during its Debian base', () => {
  it('leaves no mount under the data directory and no process running, wherever the SIGKILL lands', async () => {
    const kit = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-killed-kit-')), 'hello')
    cpSync(path.join(repoRoot, 'kits/hello'), kit, {recursive: true})
    // Another package list: nothing of it is cached anywhere.
    const manifest = path.join(kit, 'aegis-kit.yaml')
    writeFileSync(
      manifest,
      readFileSync(manifest, 'utf8').replace('packages: [busybox-static]', 'packages: [busybox-static, hostname]'),
    )
    rmSync(path.join(kit, 'aegis-kit.lock.json'))
    const marker = path.join(home, 'mounting')
    const tools = slowMountTools(marker)
    const observed: Array<{kill: string; atMs: number; whileMounted: boolean; mounts: string[]; running: number[]}> = []
    for (let round = 0; round < 8; round++) {
      rmSync(marker, {force: true})
      // A data directory of its own each round: a round whose build got past the base step has
      // cached it, and a later build in the same directory would never make a base (or mount)
      // again. Inside `home`, so every round's mounts are looked for and cleaned up.
      const roundHome = mkdtempSync(path.join(home, `round-${round}-`))
      const build: ChildProcess = spawn(process.execPath, [binRun, 'build', kit, '--json'], {
        detached: true,
        stdio: 'ignore',
        env: {...process.env, AEGIS_KIT_HOME: roundHome, PATH: `${tools}:${process.env.PATH ?? ''}`},
      })
      const exited = new Promise((resolve) => build.once('exit', resolve))
      const started = Date.now()
      // Half the kills land while mmdebstrap mounts or unmounts, half anywhere in the base step.
      if (round % 2 === 0) {
        await waitUntil(() => existsSync(marker), 60_000)
        await sleep(MOUNT_DELAY_S * (1.2 + Math.random() * 2.6) * 1000)
        // On a loaded machine the random point can fall between mounts: aim at the next moment
        // something is mounted (up to 5 s), so these rounds test what they are for.
        await waitUntil(() => groupSeesMountsUnder(build.pid!, home), 5000)
      } else {
        await sleep(1000 + Math.random() * 30_000)
      }
      // The whole process group (as a closed terminal or a service manager does), or the CLI alone.
      const target = round % 4 < 2 ? 'group' : 'cli'
      const whileMounted = groupSeesMountsUnder(build.pid!, home)
      try {
        process.kill(target === 'group' ? -build.pid! : build.pid!, 'SIGKILL')
      } catch {
        // Already finished: this round checks a completed build.
      }
      await exited
      const atMs = Date.now() - started
      await waitUntil(() => processesInGroup(build.pid!).length === 0, 5000)
      observed.push({
        kill: target,
        atMs,
        whileMounted,
        mounts: mountsUnder(home),
        running: processesInGroup(build.pid!),
      })
      // Let what outlived the kill finish before the next round.
      await waitUntil(() => processesInGroup(build.pid!).length === 0, 120_000)
    }
    console.log(JSON.stringify(observed))
    expect(observed.filter((round) => round.mounts.length > 0 || round.running.length > 0)).toEqual([])
    // The kills aimed at the mounts hit them (else this proves nothing).
    expect(observed.filter((round) => round.whileMounted).length).toBeGreaterThanOrEqual(2)
  }, 600_000)
})
