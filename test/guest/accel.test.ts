// Choosing QEMU's accelerator: KVM only when a test boot of the guest kernel works under it.
// These machines' /dev/kvm is a nested PVM device that QEMU cannot use (REFERENCE.md), so the
// working-KVM path is shown by the same probe under TCG, which does boot the kernel.
import {spawn} from 'node:child_process'
import {chmodSync, existsSync, mkdtempSync, readFileSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {beforeAll, describe, expect, it} from 'vitest'

import {accelArgs, chooseAccel, probeBoot, probeKvm} from '../../src/guest/accel.js'
import type {StoredGuest} from '../../src/guest/guest-store.js'
import {AegisError} from '../../src/errors.js'
import {findOnPath} from '../../src/exec.js'
import {QEMU} from '../../src/guest/qemu.js'
import {alive, waitGone} from '../run/helpers.js'
import {hostGuest} from './helpers.js'

const qemu = findOnPath(QEMU)!
// Some of these machines have the nested /dev/kvm, some none at all. Without one, run decides at
// once (no probe); the probe's own path is still taken with a stand-in device that opens, and
// QEMU's real KVM boot then fails, as the nested device's does.
const kvmDevice = existsSync('/dev/kvm') ? '/dev/kvm' : '/dev/null'
let guest: StoredGuest

beforeAll(async () => {
  guest = await hostGuest()
}, 600_000)

function tempDir(): string {
  return mkdtempSync(path.join(os.tmpdir(), 'aegis-kit-accel-'))
}

/** Real QEMU behind a script that counts its starts in `counter`. */
function countingQemu(counter: string): string {
  const script = path.join(tempDir(), 'qemu-system-x86_64')
  writeFileSync(script, `#!/bin/sh\necho start >> '${counter}'\nexec '${qemu}' "$@"\n`)
  chmodSync(script, 0o755)
  return script
}

describe('the accelerator probe', {timeout: 60_000}, () => {
  it('recognises an accelerator that boots the kernel: the same probe under TCG gets to the panic', async () => {
    expect(await probeBoot(qemu, guest.kernel, 'tcg', 30_000)).toEqual({ok: true})
  })

  it("a boot that fails is refused with QEMU's own words", async () => {
    const probe = await probeBoot(qemu, '/bin/ls', 'tcg', 30_000)
    expect(probe.ok).toBe(false)
    expect(probe.reason).toMatch(/^a test boot under TCG failed \(QEMU exit 1: .+\)$/)
  })

  it('a boot that does not get to its panic in time is stopped and refused (TCG, cut at 50 ms)', async () => {
    const probe = await probeBoot(qemu, guest.kernel, 'tcg', 50)
    expect(probe.ok).toBe(false)
    expect(probe.reason).toMatch(/^a test boot under TCG printed (nothing|no panic) in 0\.05 s/)
  })

  // A stand-in for the one fault this machine cannot cause for real: a KVM on which the kernel
  // hangs without output (here QEMU aborts at once instead). The "QEMU" only sleeps.
  it('a CLI killed mid-probe leaves no QEMU behind (a stand-in QEMU that hangs)', async () => {
    const dir = tempDir()
    const pidFile = path.join(dir, 'qemu.pid')
    const hanging = path.join(dir, 'qemu-system-x86_64')
    writeFileSync(hanging, `#!/bin/sh\necho $$ > '${pidFile}'\nexec sleep 600\n`)
    chmodSync(hanging, 0o755)
    const accelModule = path.resolve(import.meta.dirname, '../../dist/guest/accel.js')
    const cli = spawn(
      process.execPath,
      [
        '--input-type=module',
        '-e',
        `const {probeKvm} = await import(${JSON.stringify(accelModule)}); await probeKvm(${JSON.stringify(hanging)}, ${JSON.stringify(guest.kernel)}, 600000)`,
      ],
      {stdio: 'ignore'},
    )
    const deadline = Date.now() + 20_000
    while (!existsSync(pidFile) || readFileSync(pidFile, 'utf8').trim() === '') {
      if (Date.now() > deadline) throw new Error('the stand-in QEMU did not start')
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    const qemuPid = Number(readFileSync(pidFile, 'utf8'))
    try {
      expect(alive([qemuPid])).toEqual([qemuPid])
      cli.kill('SIGKILL')
      expect(await waitGone([qemuPid], 10_000)).toEqual([])
    } finally {
      if (alive([qemuPid]).length > 0) process.kill(qemuPid, 'SIGKILL')
    }
  })

  it("this machine's /dev/kvm (nested PVM) fails the KVM probe, with a reason", async () => {
    const probe = await probeKvm(qemu, guest.kernel)
    expect(probe.ok).toBe(false)
    expect(probe.reason).toMatch(/a test boot under KVM (failed|printed)/)
  })
})

describe('choosing the accelerator', {timeout: 60_000}, () => {
  it('auto falls back to TCG with a warning that says why, probes once, and keeps the outcome', async () => {
    const dir = tempDir()
    const counter = path.join(dir, 'starts')
    const counted = countingQemu(counter)
    const status: string[] = []
    const options = {
      choice: 'auto' as const,
      qemu: counted,
      kernel: guest.kernel,
      cacheDir: dir,
      kvmDevice,
      onStatus: (m: string) => status.push(m),
    }
    expect(await chooseAccel(options)).toBe('tcg')
    expect(status.at(-1)).toMatch(
      /^warning: running under TCG software emulation .*: a test boot under KVM .*; --accel tcg skips this check$/,
    )
    expect(readFileSync(counter, 'utf8')).toBe('start\n')
    const kept = JSON.parse(readFileSync(path.join(dir, 'accel-probe.json'), 'utf8')) as {value: {ok: boolean}}
    expect(kept.value.ok).toBe(false)

    status.length = 0
    expect(await chooseAccel(options)).toBe('tcg')
    expect(readFileSync(counter, 'utf8')).toBe('start\n') // not probed again
    expect(status).toHaveLength(1)
    expect(status[0]).toMatch(/^warning: running under TCG/)

    // A kept file that is not JSON (a disk filled mid-write, a hand edit) means probing again.
    writeFileSync(path.join(dir, 'accel-probe.json'), '{"key": "trunc')
    expect(await chooseAccel(options)).toBe('tcg')
    expect(readFileSync(counter, 'utf8')).toBe('start\nstart\n')
  })

  // The stand-in QEMU again (a KVM that hangs cannot be caused here): it counts its starts and sleeps.
  it('a probe that timed out is believed for an hour, then tried again', async () => {
    const dir = tempDir()
    const counter = path.join(dir, 'starts')
    const hanging = path.join(dir, 'qemu-system-x86_64')
    writeFileSync(hanging, `#!/bin/sh\necho start >> '${counter}'\nexec sleep 600\n`)
    chmodSync(hanging, 0o755)
    const status: string[] = []
    const options = {
      choice: 'auto' as const,
      qemu: hanging,
      kernel: guest.kernel,
      cacheDir: dir,
      kvmDevice,
      onStatus: (m: string) => status.push(m),
    }
    expect(await chooseAccel(options)).toBe('tcg')
    expect(status.at(-1)).toMatch(/a test boot under KVM printed nothing in 5 s/)
    expect(await chooseAccel(options)).toBe('tcg')
    expect(readFileSync(counter, 'utf8')).toBe('start\n')

    const file = path.join(dir, 'accel-probe.json')
    const kept = JSON.parse(readFileSync(file, 'utf8')) as {value: {timedOut?: boolean}; savedAt: number}
    expect(kept.value.timedOut).toBe(true)
    writeFileSync(file, JSON.stringify({...kept, savedAt: Date.now() - 2 * 3600_000}))
    expect(await chooseAccel(options)).toBe('tcg')
    expect(readFileSync(counter, 'utf8')).toBe('start\nstart\n')
  })

  it('--accel kvm where KVM cannot boot is an error pointing at --accel tcg', async () => {
    const error = await chooseAccel({
      choice: 'kvm',
      qemu,
      kernel: guest.kernel,
      cacheDir: tempDir(),
      onStatus: () => undefined,
    }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(AegisError)
    expect((error as AegisError).message).toMatch(/^--accel kvm: KVM cannot boot the guest here: /)
    expect((error as AegisError).hint).toMatch(/--accel tcg/)
  })

  it('no KVM device: TCG at once, the warning names the device, nothing probed or kept', async () => {
    const dir = tempDir()
    const counter = path.join(dir, 'starts')
    const status: string[] = []
    const accel = await chooseAccel({
      choice: 'auto',
      qemu: countingQemu(counter),
      kernel: guest.kernel,
      cacheDir: dir,
      onStatus: (m) => status.push(m),
      kvmDevice: path.join(dir, 'kvm'),
    })
    expect(accel).toBe('tcg')
    expect(status).toEqual([expect.stringMatching(/warning: running under TCG .*\/kvm does not exist/)])
    expect(existsSync(counter)).toBe(false)
    expect(existsSync(path.join(dir, 'accel-probe.json'))).toBe(false)
  })

  it('--accel tcg probes nothing and warns of nothing', async () => {
    const dir = tempDir()
    const counter = path.join(dir, 'starts')
    const status: string[] = []
    expect(
      await chooseAccel({
        choice: 'tcg',
        qemu: countingQemu(counter),
        kernel: guest.kernel,
        cacheDir: dir,
        onStatus: (m) => status.push(m),
      }),
    ).toBe('tcg')
    expect(status).toEqual([])
    expect(existsSync(counter)).toBe(false)
  })

  it("QEMU's flags: KVM with the host CPU, TCG with a translation cache for the guest's memory", () => {
    expect(accelArgs('kvm', 2048)).toEqual(['-accel', 'kvm', '-cpu', 'host'])
    expect(accelArgs('tcg', 2048)).toEqual(['-accel', 'tcg,tb-size=512', '-cpu', 'max'])
  })
})
