// resources.disk in a real QEMU microVM (TCG here): the workload's writable layer is a disk of
// that size, so writing past it fails with ENOSPC, and the host's disk gives no more than that.
// The data directory is a tmpfs of its own, so that its free space moves only with this test
// (other work on the machine writes to the shared disk meanwhile).
import {cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, statfsSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {repoRoot, runCli} from '../helpers/cli.js'
import {execa, startRun} from './helpers.js'

const LIMIT_MIB = 64
const MiB = 1024 ** 2
let home: string
let kit: string

/** The hello kit, run as root (the image's / is root's, so writing /big needs it), with `disk`. */
function helloWithDisk(disk: string): string {
  const dir = path.join(mkdtempSync(path.join(tmpdir(), 'aegis-kit-disk-kit-')), 'hello')
  cpSync(path.join(repoRoot, 'kits/hello'), dir, {recursive: true})
  const manifest = readFileSync(path.join(dir, 'aegis-kit.yaml'), 'utf8')
  const edited = manifest
    .replace('user: "1000:1000"', 'user: "0:0"')
    .replace(/^ {2}cpu: 1$/m, `  cpu: 1\n  disk: ${disk}`)
  expect(edited).toMatch(new RegExp(`disk: ${disk}\\n`))
  writeFileSync(path.join(dir, 'aegis-kit.yaml'), edited)
  return dir
}

function freeBytes(dir: string): number {
  const info = statfsSync(dir)
  return info.bavail * info.bsize
}

beforeAll(async () => {
  home = mkdtempSync(path.join(tmpdir(), 'aegis-kit-disk-home-'))
  await execa('mount', ['-t', 'tmpfs', '-o', 'size=1536m', 'tmpfs', home])
  kit = helloWithDisk(`${LIMIT_MIB}mb`)
  // A first run unpacks the root, makes its disk and assembles the guest: what the measured run must not do.
  const warm = await runCli(['run', kit, '--', 'busybox', 'true'], {env: {AEGIS_KIT_HOME: home}, timeout: 400_000})
  expect(warm.exitCode, warm.all).toBe(0)
}, 420_000)

afterAll(async () => {
  if (home) await execa('umount', ['-l', home], {reject: false})
})

describe('resources.disk limits the writable layer', () => {
  it('a workload writing past it gets ENOSPC, and the host gives at most the limit', async () => {
    const before = freeBytes(home)
    const workspace = mkdtempSync(path.join(tmpdir(), 'aegis-kit-disk-ws-'))
    // The guest waits (on the shared workspace) until the host has measured, then exits with dd's code.
    const script = [
      'busybox dd if=/dev/zero of=/big bs=1M count=200; rc=$?',
      'busybox sync',
      'echo "dd-exit=$rc"',
      'while [ ! -e /workspace/measured ]; do busybox sleep 0.2; done',
      'exit $rc',
    ].join('; ')
    const run = startRun([kit, '--workspace', workspace, '--', 'busybox', 'sh', '-c', script], {AEGIS_KIT_HOME: home})
    await run.waitFor(/dd-exit=\d+/, 300_000)
    const during = freeBytes(home)
    writeFileSync(path.join(workspace, 'measured'), '')
    const result = await run.child

    expect(run.output()).toMatch(/No space left on device/)
    expect(run.output()).toMatch(/dd-exit=1\b/)
    expect(result.exitCode).toBe(1)
    const used = before - during
    // The writes reached the host's disk file (not guest memory), and no more than the limit did.
    expect(used).toBeGreaterThan((LIMIT_MIB / 2) * MiB)
    expect(used).toBeLessThanOrEqual(LIMIT_MIB * MiB)
    // The sparse file is gone with the VM, and its space with it.
    expect(readdirSync(path.join(home, 'scratch'))).toEqual([])
    expect(before - freeBytes(home)).toBeLessThan(4 * MiB)
  }, 400_000)

  it('refuses a limit too small for a disk, or larger than the free space, before booting', async () => {
    const tiny = await runCli(['run', helloWithDisk('1mb')], {env: {AEGIS_KIT_HOME: home}})
    expect(tiny.exitCode).not.toBe(0)
    expect(tiny.stderr).toMatch(/^Error: resources\.disk \(1mb\) is 1 MiB; the writable layer needs at least 16 MiB$/m)
    const huge = await runCli(['run', helloWithDisk('100gb')], {env: {AEGIS_KIT_HOME: home}})
    expect(huge.exitCode).not.toBe(0)
    expect(huge.stderr).toMatch(
      /^Error: resources\.disk \(100gb\) is 100\.0 GiB but only .* is free under .*: the instance could fill the host's disk$/m,
    )
    expect(huge.stderr).toMatch(/^\s*hint: free space there/m)
    expect(existsSync(path.join(home, 'instances', 'hello'))).toBe(false)
  }, 120_000)
})
