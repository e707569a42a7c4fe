/**
 * The image's own Node (another architecture than this machine's), made runnable here to run the
 * kit's allowed npm install scripts: what a script builds or fetches follows `process.arch`, so
 * run by the host's Node it would be the host's (an x64 binding in an arm64 image). qemu-user,
 * registered with binfmt_misc, runs the binary; a sysroot of the target's glibc and libstdc++
 * (extracted from Debian's packages, no emulation needed) gives it its dynamic loader and
 * libraries through QEMU_LD_PREFIX, which qemu-user reads and every emulated child inherits.
 */
import {existsSync} from 'node:fs'
import {mkdir, mkdtemp, readdir, rename, rm} from 'node:fs/promises'
import path from 'node:path'
import {AegisError} from '../errors.js'
import {fromPlatform, toDebianArch} from '../oci/platform.js'
import {BINFMT_DIR, DEBIAN_MIRROR, emulationProblem} from './debian-base.js'
import {fetchNodeRuntime} from './node-runtime.js'
import {runMmdebstrap} from './tools.js'

/** Node's Linux builds need glibc 2.28 or newer; bookworm has 2.36. */
const SYSROOT_SUITE = 'bookworm'

export interface TargetNode {
  /** The target platform's `node` binary. */
  node: string
  /** What running it needs in the environment (QEMU_LD_PREFIX). */
  env: Record<string, string>
}

export interface TargetNodeOptions {
  /** Node downloads and sysroots are cached under it. */
  cacheDir: string
  /** Who needs it, for the error: the packages whose install scripts run. */
  packages: string[]
  binfmtDir?: string
  onLine?: (line: string) => void
}

/** The Node `version` built for `platform`, ready to run on this machine under emulation. */
export async function prepareTargetNode(
  version: string,
  platform: string,
  options: TargetNodeOptions,
): Promise<TargetNode> {
  const arch = fromPlatform(platform)
  const problem = await emulationProblem(arch, options.binfmtDir ?? BINFMT_DIR)
  if (problem) {
    throw new AegisError(
      `cannot run the install scripts of ${options.packages.join(', ')} for ${platform}: they run with the ${arch} Node under qemu-user emulation, and ${problem}`,
      {
        hint: "install qemu-user-static and register it with binfmt_misc with the F flag (scripts/setup does both), or build for this machine's platform only; run `aegis-kit doctor` to check the rest",
      },
    )
  }
  const runtime = await fetchNodeRuntime(version, arch, path.join(options.cacheDir, 'downloads'))
  const sysroot = await targetSysroot(platform, path.join(options.cacheDir, 'sysroots'), options.onLine)
  return {node: path.join(runtime, 'bin', 'node'), env: {QEMU_LD_PREFIX: sysroot}}
}

/** The target's C and C++ runtime libraries (libc6, libstdc++6 and what they need), cached under `dir`. */
export async function targetSysroot(platform: string, dir: string, onLine?: (line: string) => void): Promise<string> {
  const arch = toDebianArch(fromPlatform(platform))
  const target = path.join(dir, `${SYSROOT_SUITE}-${arch}`)
  if (existsSync(path.join(target, 'lib'))) return target
  await mkdir(dir, {recursive: true})
  const work = await mkdtemp(path.join(dir, '.build-'))
  try {
    const root = path.join(work, 'root')
    // extract unpacks the packages without running anything: no emulation for this step.
    await runMmdebstrap(
      [
        '--quiet',
        '--variant=extract',
        `--architectures=${arch}`,
        '--include=libstdc++6',
        SYSROOT_SUITE,
        root,
        DEBIAN_MIRROR,
      ],
      {
        hint: "install it: apt-get install mmdebstrap (scripts/setup does); the image's Node needs its own architecture's libraries to run the install scripts",
        onLine,
      },
    )
    // Only the libraries stay: qemu-user looks every absolute path up in the sysroot first, so
    // its /etc, /dev or /tmp would shadow the host's for the emulated scripts.
    for (const name of await readdir(root))
      if (name !== 'lib' && name !== 'usr') await rm(path.join(root, name), {recursive: true, force: true})
    for (const name of await readdir(path.join(root, 'usr')))
      if (name !== 'lib') await rm(path.join(root, 'usr', name), {recursive: true, force: true})
    await rename(root, target).catch(async (error: NodeJS.ErrnoException) => {
      // Another build made it at the same time: theirs is as good as ours.
      if (!existsSync(path.join(target, 'lib'))) throw error
    })
  } finally {
    await rm(work, {recursive: true, force: true})
  }
  return target
}
