// The doctor's probes where this machine is fine, made to see the faults a user's machine has:
// a binfmt_misc registration disabled or without the F flag, no KVM device.
import {mkdirSync, mkdtempSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {describe, expect, it} from 'vitest'

import {checkEmulation} from '../../src/doctor/emulation.js'
import {checkAccelerator} from '../../src/doctor/guest.js'

const AARCH64_MAGIC = 'magic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n'

/** A stand-in for /proc/sys/fs/binfmt_misc with one qemu-aarch64 registration. */
function binfmtDir(registration: string, status = 'enabled'): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'aegis-kit-binfmt-'))
  writeFileSync(path.join(dir, 'status'), `${status}\n`)
  writeFileSync(path.join(dir, 'register'), '')
  writeFileSync(path.join(dir, 'qemu-aarch64'), registration)
  return dir
}

describe('arm64 emulation', () => {
  it('a registration without the F flag is a warning that says so and how to register again', async () => {
    const dir = binfmtDir(`enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: OC\noffset 0\n${AARCH64_MAGIC}`)
    const check = await checkEmulation(dir)
    expect(check).toMatchObject({
      part: 'arm64 emulation',
      status: 'WARN',
      found: 'qemu-aarch64 is registered with binfmt_misc without the F (fix-binary) flag',
    })
    expect(check.fix).toBe(
      `scripts/setup from the checkout, or by hand: echo -1 > ${dir}/qemu-aarch64 && cat /usr/lib/binfmt.d/qemu-aarch64.conf > ${dir}/register (only arm64 builds need it)`,
    )
  })

  it('a disabled registration: the fix enables it', async () => {
    const dir = binfmtDir(`disabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: OCF\noffset 0\n${AARCH64_MAGIC}`)
    const check = await checkEmulation(dir)
    expect(check.found).toBe('qemu-aarch64 is registered with binfmt_misc but disabled')
    expect(check.fix).toContain(`echo 1 > ${dir}/qemu-aarch64`)
  })

  it('a registration whose interpreter file is gone', async () => {
    const dir = binfmtDir(
      `enabled\ninterpreter /nonexistent/qemu-aarch64-static\nflags: OCF\noffset 0\n${AARCH64_MAGIC}`,
    )
    const check = await checkEmulation(dir)
    expect(check.status).toBe('WARN')
    expect(check.found).toBe('qemu-aarch64 is registered with /nonexistent/qemu-aarch64-static, which no longer exists')
  })

  it('no binfmt_misc at all', async () => {
    const check = await checkEmulation(path.join(mkdtempSync(path.join(os.tmpdir(), 'aegis-kit-binfmt-')), 'absent'))
    expect(check.status).toBe('WARN')
    expect(check.found).toMatch(/^binfmt_misc is not mounted at /)
    expect(check.fix).toMatch(/apt-get install qemu-user-static && mount -t binfmt_misc binfmt_misc /)
  })
})

describe('accelerator', () => {
  it('no KVM device: TCG, with the reason, without a test boot', async () => {
    const cacheDir = mkdtempSync(path.join(os.tmpdir(), 'aegis-kit-accel-'))
    const check = await checkAccelerator(undefined, cacheDir, '/nonexistent/kvm')
    expect(check).toMatchObject({
      part: 'accelerator',
      status: 'WARN',
      found:
        'TCG software emulation, not KVM: /nonexistent/kvm does not exist (no KVM on this host, or the kvm module is not loaded)',
    })
  })

  it('a device that opens but no guest kernel to probe with: says so, and what makes one', async () => {
    const cacheDir = mkdtempSync(path.join(os.tmpdir(), 'aegis-kit-accel-'))
    mkdirSync(cacheDir, {recursive: true})
    const check = await checkAccelerator(undefined, cacheDir, '/dev/null')
    expect(check.status).toBe('WARN')
    expect(check.found).toMatch(/^not probed yet: \/dev\/null opens, but .* the store has none yet$/)
    expect(check.fix).toMatch(/the first `aegis-kit run` assembles it/)
  })
})
