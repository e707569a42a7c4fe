/**
 * The guest kernel and initramfs, assembled from Debian's packages: the cloud kernel and
 * its modules from `linux-image-cloud-<arch>`, and the harness (images/guest/*.c) built
 * static with the host's gcc and libc6-dev, under a key made of every input (package versions,
 * harness sources, compiler). The result is kept in the image store, the one place `run` and the
 * tests boot guests from (guest-store.ts).
 */

import {createHash} from 'node:crypto'
import {existsSync} from 'node:fs'
import {readdir, readFile, realpath, rm, stat, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {gzipSync} from 'node:zlib'

import {AegisError, messageOf} from '../errors.js'
import {execFileText, findOnPath} from '../exec.js'
import {hostArchitecture, toDebianArch, toGnuTriplet, type Architecture} from '../oci/platform.js'
import {remembered} from '../remembered.js'
import {buildCpio, type CpioEntry} from './cpio.js'
import {extractVmlinux} from './kernel-image.js'
import {GUEST_MODULES, resolveModuleOrder} from './modules.js'

/** A guest runs the host's own architecture, one of those aegis-kit supports. */
export type GuestArch = Architecture

export interface GuestImage {
  /** Kernel to pass to QEMU's -kernel: the ELF vmlinux (PVH boot) when it could be extracted. */
  kernel: string
  /** gzip'd cpio initramfs holding the harness as /init and the modules it loads. */
  initrd: string
  /** Identifies the inputs: kernel package and version plus the harness hash. */
  version: string
  /** `uname -r` inside the guest. */
  kernelRelease: string
}

/** How every hint about a missing part ends (as tools.ts and qemu.ts phrase it). */
const RUN_DOCTOR = 'run `aegis-kit doctor` to check the rest'
const COMPILER_HINT = `install the compiler: apt-get install gcc libc6-dev; ${RUN_DOCTOR}`

/** Bump when the initramfs layout or the assembly steps change. */
const ASSEMBLY_FORMAT = 1

export const HARNESS_SOURCE_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../images/guest')
const HARNESS_SOURCES = [
  'harness.c',
  'harness.h',
  'guest_setup.c',
  'port_proxy.c',
  'port_proxy.h',
  'control.c',
  'control.h',
  'heartbeat.c',
  'exec.c',
  'exec.h',
  'tunnel.c',
  'tunnel.h',
]

async function run(file: string, args: string[], options: {cwd?: string; what: string; hint: string}): Promise<string> {
  const result = await execFileText(file, args, {cwd: options.cwd}).catch((error: unknown) => {
    throw new AegisError(`${options.what} failed: ${messageOf(error)}`, {hint: options.hint, cause: error})
  })
  if (result.exitCode === 0) return result.stdout
  const stderr = result.stderr.trim()
  // apt prints warnings (W:) around the line that says what failed (E:): keep that one.
  const detail =
    stderr.split('\n').find((line) => line.startsWith('E: ')) ??
    (stderr.split('\n').slice(-3).join(' ') || `exit code ${result.exitCode ?? result.signal}`)
  throw new AegisError(`${options.what} failed: ${detail.replace(/\s+/g, ' ')}`, {hint: options.hint})
}

/**
 * resolveKernelPackage, remembered until apt's package lists change: `apt-cache show` costs
 * about a second, and this runs before every boot.
 */
async function resolveKernelPackageCached(
  metaPackage: string,
  cacheDir: string,
): Promise<{name: string; version: string}> {
  const lists = await aptPackageLists()
  const stamp = JSON.stringify(
    await Promise.all(
      lists.sort().map(async (name) => {
        const info = await stat(path.join(APT_LISTS_DIR, name))
        return [name, info.size, info.mtimeMs]
      }),
    ),
  )
  return remembered(path.join(cacheDir, `kernel-${metaPackage}.json`), stamp, () => resolveKernelPackage(metaPackage))
}

export const APT_LISTS_DIR = '/var/lib/apt/lists'

/**
 * apt's package lists (file names in APT_LISTS_DIR): plain `*_Packages`, or compressed
 * (`.lz4`, `.gz`, ...) when apt is configured to keep them so, as on these machines.
 */
export async function aptPackageLists(listsDir = APT_LISTS_DIR): Promise<string[]> {
  const names = await readdir(listsDir).catch(() => [] as string[]) // no apt lists: callers say to run apt-get update
  return names.filter((name) => /_Packages(\.\w+)?$/.test(name))
}

/** The concrete kernel package the cloud meta-package points at, e.g. linux-image-6.1.0-56-cloud-amd64 6.1.192-2. */
async function resolveKernelPackage(metaPackage: string): Promise<{name: string; version: string}> {
  const hint = `on a Debian host run: apt-get update; ${RUN_DOCTOR}`
  const show = await run('apt-cache', ['show', '--no-all-versions', metaPackage], {
    what: `apt-cache show ${metaPackage}`,
    hint,
  })
  const depends = /^Depends: (linux-image-[^\s,]+) \(= ([^)]+)\)/m.exec(show)
  if (!depends) throw new AegisError(`cannot tell which kernel ${metaPackage} depends on`, {hint})
  return {name: depends[1]!, version: depends[2]!}
}

/**
 * The compiler and static libc the harness is built with, part of the cache key. Asking gcc and
 * dpkg costs two processes, so the answer is remembered until either file changes.
 */
async function toolchainVersion(triplet: string, cacheDir: string): Promise<string> {
  const hint = COMPILER_HINT
  const libc = `/usr/lib/${triplet}/libc.a`
  const gcc = findOnPath('gcc')
  if (!existsSync(libc)) throw new AegisError('libc6-dev (static libc.a) is missing', {hint})
  if (!gcc) throw new AegisError('gcc is not installed', {hint})
  const stamp = JSON.stringify(
    await Promise.all(
      [gcc, libc].map(async (file) => {
        const info = await stat(file)
        return [await realpath(file), info.size, info.mtimeMs]
      }),
    ),
  )
  return remembered(path.join(cacheDir, `toolchain-${triplet}.json`), stamp, async () => {
    const [gccVersion, libcVersion] = await Promise.all([
      run('gcc', ['-dumpfullversion'], {what: 'gcc', hint}),
      run('dpkg-query', ['-W', '-f=${Version}', 'libc6-dev'], {what: 'dpkg-query libc6-dev', hint}),
    ])
    return `gcc ${gccVersion}, libc6-dev ${libcVersion}`
  })
}

async function harnessHash(): Promise<string> {
  const hash = createHash('sha256')
  for (const file of HARNESS_SOURCES) {
    hash.update(file + '\0')
    hash.update(await readFile(path.join(HARNESS_SOURCE_DIR, file)))
  }
  return hash.digest('hex')
}

/** Every *.ko under `dir`, by canonical module name, as paths relative to `dir`. */
async function listModuleFiles(dir: string): Promise<Map<string, string>> {
  const files = new Map<string, string>()
  for (const entry of await readdir(dir, {recursive: true, withFileTypes: true})) {
    if (!entry.isFile() || !entry.name.endsWith('.ko')) continue
    const relative = path.relative(dir, path.join(entry.parentPath, entry.name))
    files.set(entry.name.slice(0, -3).replaceAll('-', '_'), relative)
  }
  return files
}

async function buildHarness(workDir: string): Promise<Buffer> {
  const output = path.join(workDir, 'init')
  const sources = HARNESS_SOURCES.filter((file) => file.endsWith('.c')).map((file) =>
    path.join(HARNESS_SOURCE_DIR, file),
  )
  await run('gcc', ['-static', '-Os', '-s', '-Wall', '-o', output, ...sources], {
    what: 'building the guest harness',
    hint: COMPILER_HINT,
  })
  return readFile(output)
}

/** Assembles the guest for `inputs` in `workDir`: the kernel (vmlinux, else vmlinuz) and initrd.img. */
export async function assembleGuestFiles(workDir: string, inputs: GuestInputs): Promise<Omit<GuestImage, 'version'>> {
  const {arch, kernelPackage} = inputs
  await run('apt-get', ['download', `${kernelPackage.name}=${kernelPackage.version}`], {
    cwd: workDir,
    what: `downloading the guest kernel (apt-get download ${kernelPackage.name}=${kernelPackage.version})`,
    hint: `check that Debian's package archive is reachable and run apt-get update, or boot files you have: --kernel FILE --initrd FILE; ${RUN_DOCTOR}`,
  })
  const deb = (await readdir(workDir)).find((name) => name.endsWith('.deb'))
  if (!deb)
    throw new AegisError(`apt-get download left no .deb for ${kernelPackage.name}`, {
      hint: `run apt-get update and retry; ${RUN_DOCTOR}`,
    })
  const unpacked = path.join(workDir, 'kernel')
  await run('dpkg-deb', ['-x', path.join(workDir, deb), unpacked], {
    what: 'dpkg-deb -x',
    hint: `install dpkg; ${RUN_DOCTOR}`,
  })

  const [kernelRelease] = await readdir(path.join(unpacked, 'lib/modules'))
  if (!kernelRelease)
    throw new AegisError(`${kernelPackage.name} has no modules directory`, {hint: 'report this kernel package'})
  const moduleDir = path.join(unpacked, 'lib/modules', kernelRelease)
  const modules = await resolveModuleOrder(moduleDir, await listModuleFiles(moduleDir), GUEST_MODULES)

  const entries: CpioEntry[] = [
    {path: 'init', type: 'file', mode: 0o755, data: await buildHarness(workDir)},
    {path: 'dev/console', type: 'chardev', mode: 0o600, major: 5, minor: 1},
    {path: 'proc', type: 'dir', mode: 0o755},
    {path: 'sys', type: 'dir', mode: 0o755},
    {
      path: 'modules/order',
      type: 'file',
      mode: 0o644,
      data: Buffer.from(modules.map((m) => `${m.name}.ko\n`).join('')),
    },
  ]
  for (const module of modules) {
    entries.push({
      path: `modules/${module.name}.ko`,
      type: 'file',
      mode: 0o644,
      data: await readFile(path.join(moduleDir, module.file)),
    })
  }
  await writeFile(path.join(workDir, 'initrd.img'), gzipSync(buildCpio(entries), {level: 9}))

  const vmlinuz = await readFile(path.join(unpacked, 'boot', `vmlinuz-${kernelRelease}`))
  const vmlinux = arch === 'amd64' ? extractVmlinux(vmlinuz) : undefined
  const kernelFile = vmlinux ? 'vmlinux' : 'vmlinuz'
  await writeFile(path.join(workDir, kernelFile), vmlinux ?? vmlinuz)
  await rm(unpacked, {recursive: true, force: true})
  await rm(path.join(workDir, deb), {force: true})
  await rm(path.join(workDir, 'init'), {force: true})
  return {kernel: path.join(workDir, kernelFile), initrd: path.join(workDir, 'initrd.img'), kernelRelease}
}

/** What a guest is assembled from; equal inputs give an equal guest. */
export interface GuestInputs {
  arch: GuestArch
  /** The concrete kernel package, e.g. linux-image-6.1.0-56-cloud-amd64 6.1.192-2. */
  kernelPackage: {name: string; version: string}
  /** sha256 of the harness sources. */
  harness: string
  /** Compiler and static libc versions. */
  toolchain: string
  /** 16 hex digits of the hash of all of the above: names the cache directory and the store tag. */
  key: string
  /** For people: kernel package and version plus the harness hash. */
  version: string
}

/**
 * The inputs of this host's guest. Needs a Debian host with apt lists, gcc and libc6-dev; the
 * answers that cost a process are remembered in `cacheDir`, so this is a few file reads.
 */
export async function guestInputs(options: {cacheDir: string; arch?: GuestArch}): Promise<GuestInputs> {
  const host = hostArchitecture()
  const arch = options.arch ?? host
  // The harness is compiled by the host's gcc against the host's static libc: another
  // architecture's guest would need a cross toolchain.
  if (arch !== host) {
    throw new AegisError(`cannot assemble an ${arch} guest on an ${host} host yet`, {
      hint: `assemble on an ${arch} machine`,
    })
  }
  const kernelMetaPackage = `linux-image-cloud-${toDebianArch(arch)}`
  const triplet = toGnuTriplet(arch)
  const [kernelPackage, harness, toolchain] = await Promise.all([
    resolveKernelPackageCached(kernelMetaPackage, options.cacheDir),
    harnessHash(),
    toolchainVersion(triplet, options.cacheDir),
  ])
  const keyed = {format: ASSEMBLY_FORMAT, arch, kernelPackage, harness, toolchain, modules: GUEST_MODULES}
  const key = createHash('sha256').update(JSON.stringify(keyed)).digest('hex').slice(0, 16)
  return {
    arch,
    kernelPackage,
    harness,
    toolchain,
    key,
    version: `${kernelPackage.name} ${kernelPackage.version}, harness ${harness.slice(0, 12)}`,
  }
}
