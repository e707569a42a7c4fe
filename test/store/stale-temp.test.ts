// What killed commands leave (issue 11, observation 3): a build's scratch under cache/tmp/ (a
// Debian base's is ~118 MB) and a kit unpack under store/kits/.tmp/. `images prune` and the next
// build remove those whose owner is dead, keep a live owner's, and never delete through a mount.
import {spawnSync} from 'node:child_process'
import {existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {execa} from 'execa'
import {afterAll, describe, expect, it} from 'vitest'
import {runCli} from '../helpers/cli.js'

const mounted: string[] = []

afterAll(async () => {
  for (const point of mounted) await execa('umount', ['--lazy', point], {reject: false})
})

function startTime(pid: number | 'self'): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
}

/** A pid whose process has exited. */
function deadPid(): number {
  const pid = spawnSync('true').pid
  if (pid === undefined) throw new Error('could not start true')
  return pid
}

/** A temp directory as a command records it, with a file of `bytes` bytes. */
function ownedDir(parent: string, label: string, pid: number, start: string, bytes = 1000): string {
  const dir = path.join(parent, `${label}-${pid}@${start}-0123456789abcdef`)
  mkdirSync(path.join(dir, 'root'), {recursive: true})
  writeFileSync(path.join(dir, 'root', 'file'), Buffer.alloc(bytes))
  return dir
}

interface PruneJson {
  tempDirs: Array<{path: string; size: number}>
  kept: Array<{path: string; reason: string}>
  bytesFreed: number
}

describe('temp directories of killed commands', () => {
  it("images prune removes those of dead owners (and of a reused pid), keeps a live owner's and one with a mount under it", async () => {
    const home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-stale-'))
    const scratch = path.join(home, 'cache', 'tmp')
    const unpacks = path.join(home, 'store', 'kits', '.tmp')
    const dead = deadPid()
    const deadBase = ownedDir(scratch, 'base', dead, '12345', 1 << 20)
    const reusedPid = ownedDir(scratch, 'npm', process.pid, `${startTime('self')}1`)
    const deadUnpack = ownedDir(unpacks, 'kit', dead, '12345')
    const liveBase = ownedDir(scratch, 'base', process.pid, startTime('self'))
    const liveUnpack = ownedDir(unpacks, 'kit', process.pid, startTime('self'))
    // What a killed mmdebstrap left before its mounts were private: a mount under a dead owner's root.
    const mountedBase = ownedDir(scratch, 'base', dead, '54321')
    const shm = path.join(mountedBase, 'root', 'dev', 'shm')
    mkdirSync(shm, {recursive: true})
    await execa('mount', ['-t', 'tmpfs', 'aegis-kit-test', shm])
    mounted.push(shm)
    writeFileSync(path.join(shm, 'host-file'), 'must survive')

    const result = await runCli(['images', 'prune', '--json'], {env: {AEGIS_KIT_HOME: home}})
    expect(result.exitCode, result.stderr).toBe(0)
    const pruned = JSON.parse(result.stdout) as PruneJson
    expect(pruned.tempDirs.map((dir) => dir.path).sort()).toEqual([deadBase, reusedPid, deadUnpack].sort())
    expect(pruned.bytesFreed).toBeGreaterThanOrEqual((1 << 20) + 2000)
    expect(pruned.kept.map((dir) => dir.path)).toEqual([mountedBase])
    expect(result.stderr).toContain(`${mountedBase} of a killed command: ${shm} is mounted under it`)
    for (const gone of [deadBase, reusedPid, deadUnpack]) expect(existsSync(gone), gone).toBe(false)
    for (const kept of [liveBase, liveUnpack, mountedBase]) expect(existsSync(kept), kept).toBe(true)
    expect(readFileSync(path.join(shm, 'host-file'), 'utf8')).toBe('must survive')
  })

  it("the next build removes those of dead owners and keeps a live owner's", async () => {
    const home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-stale-'))
    const scratch = path.join(home, 'cache', 'tmp')
    const unpacks = path.join(home, 'store', 'kits', '.tmp')
    const dead = deadPid()
    const deadBase = ownedDir(scratch, 'base', dead, '12345')
    const deadUnpack = ownedDir(unpacks, 'kit', dead, '12345')
    const liveBase = ownedDir(scratch, 'base', process.pid, startTime('self'))
    const liveUnpack = ownedDir(unpacks, 'kit', process.pid, startTime('self'))

    const result = await runCli(['build', 'hello', '--json'], {env: {AEGIS_KIT_HOME: home}})
    expect(result.exitCode, result.stderr).toBe(0)
    expect(existsSync(deadBase)).toBe(false)
    expect(existsSync(deadUnpack)).toBe(false)
    expect(existsSync(liveBase)).toBe(true)
    expect(existsSync(liveUnpack)).toBe(true)
    rmSync(home, {recursive: true, force: true})
  }, 180_000)
})
