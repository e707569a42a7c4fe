// Errors that come from a missing part of the machine end with the same pointer to `doctor`
// (as src/builder/tools.ts and src/guest/qemu.ts say it): the emulation a foreign platform needs,
// the compiler the guest harness needs, the guest kernel package apt must find. No VM, no build.
import {mkdtempSync, symlinkSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {afterEach, describe, expect, it} from 'vitest'
import {buildDebianRoot} from '../../src/builder/debian-base.js'
import {prepareTargetNode} from '../../src/builder/target-node.js'
import {AegisError} from '../../src/errors.js'
import {assembleGuestFiles, guestInputs} from '../../src/guest/assemble.js'
import {hostArchitecture, toPlatformName} from '../../src/oci/platform.js'

const DOCTOR_SUFFIX = '; run `aegis-kit doctor` to check the rest'

function tempDir(prefix: string): string {
  return mkdtempSync(path.join(tmpdir(), prefix))
}

/** A binfmt_misc directory that is mounted and enabled, with no handler registered. */
function emptyBinfmt(): string {
  const dir = tempDir('aegis-hints-binfmt-')
  writeFileSync(path.join(dir, 'status'), 'enabled\n')
  writeFileSync(path.join(dir, 'register'), '')
  return dir
}

/** The platform that is not this machine's: building for it needs emulation. */
const foreign = toPlatformName(hostArchitecture() === 'amd64' ? 'arm64' : 'amd64')

async function failure(promise: Promise<unknown>): Promise<AegisError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(AegisError)
  return error as AegisError
}

/** The guest files for a kernel package no archive has, in a new directory. */
function assembleMissingKernel(): Promise<unknown> {
  return assembleGuestFiles(tempDir('aegis-hints-guest-'), {
    arch: hostArchitecture(),
    kernelPackage: {name: 'aegis-no-such-kernel', version: '1.0'},
    harness: '',
    toolchain: '',
    key: '',
    version: '',
  })
}

describe('a missing part: the hint ends with "run `aegis-kit doctor`"', () => {
  const savedPath = process.env.PATH
  afterEach(() => {
    process.env.PATH = savedPath
  })

  it('no emulation for a foreign Debian base', async () => {
    const error = await failure(
      buildDebianRoot({suite: 'bookworm', variant: 'minbase'}, path.join(tempDir('aegis-hints-root-'), 'root'), {
        platform: foreign,
        sourceDateEpoch: 0,
        lockFile: 'aegis-kit.lock.json',
        updateLockHint: 'aegis-kit build . --update-lock',
        strict: false,
        onWarning: () => undefined,
        binfmtDir: emptyBinfmt(),
      }),
    )
    expect(error.message).toMatch(/^cannot build the \w+ Debian base \(variant minbase\)/)
    expect(error.hint).toMatch(/or use variant: extract/)
    expect(error.hint?.endsWith(DOCTOR_SUFFIX)).toBe(true)
  })

  it("no emulation for a foreign platform's npm install scripts", async () => {
    const error = await failure(
      prepareTargetNode('24.21.0', foreign, {
        cacheDir: tempDir('aegis-hints-target-'),
        packages: ['openclaw'],
        binfmtDir: emptyBinfmt(),
      }),
    )
    expect(error.message).toMatch(/^cannot run the install scripts of openclaw/)
    expect(error.hint?.endsWith(DOCTOR_SUFFIX)).toBe(true)
  })

  it('no gcc for the guest harness', async () => {
    // apt-cache is there (the kernel package resolves); gcc is not.
    const bin = tempDir('aegis-hints-bin-')
    symlinkSync('/usr/bin/apt-cache', path.join(bin, 'apt-cache'))
    process.env.PATH = bin
    const error = await failure(guestInputs({cacheDir: tempDir('aegis-hints-cache-')}))
    expect(error.message).toBe('gcc is not installed')
    expect(error.hint).toBe(`install the compiler: apt-get install gcc libc6-dev${DOCTOR_SUFFIX}`)
  })

  it('a guest kernel package apt cannot download', async () => {
    const error = await failure(assembleMissingKernel())
    expect(error.message).toMatch(/^downloading the guest kernel \(apt-get download aegis-no-such-kernel=1\.0\) failed/)
    expect(error.hint?.endsWith(DOCTOR_SUFFIX)).toBe(true)
  })

  it('apt-get download that leaves no package', async () => {
    const bin = tempDir('aegis-hints-bin-')
    writeFileSync(path.join(bin, 'apt-get'), '#!/bin/sh\nexit 0\n', {mode: 0o755})
    process.env.PATH = `${bin}:${savedPath}`
    const error = await failure(assembleMissingKernel())
    expect(error.message).toBe('apt-get download left no .deb for aegis-no-such-kernel')
    expect(error.hint).toBe(`run apt-get update and retry${DOCTOR_SUFFIX}`)
  })
})
