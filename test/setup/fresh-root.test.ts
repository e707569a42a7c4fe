/**
 * The README's set-up command on a machine that has nothing but what a new machine of this kind
 * has: a fresh Debian 12 root (mmdebstrap minbase plus git, ca-certificates, python3, make, g++,
 * and the host's Node and npm), the checkout cloned into it, `scripts/setup` run inside it with
 * chroot, then `validate openclaw`, `build hello` and `doctor`, still inside.
 *
 * CI runs on a reused machine where packages installed by hand earlier are still present, so a
 * green suite there cannot show that set-up installs everything: this root can. (This is how the
 * README's set-up came to fail on a new machine: `qemu-user-static` was never in scripts/setup.)
 *
 * What a chroot shares with the host, and how the test keeps it honest:
 * - binfmt_misc registrations are host-wide. A registration with the F flag opened its
 *   interpreter when it was registered, so arm64 programs run inside the root even when set-up
 *   installed no emulator there: the test checks that every interpreter set-up relies on exists
 *   inside the root.
 * - The host's package registries are reached through a CA of their own (NODE_EXTRA_CA_CERTS,
 *   SSL_CERT_FILE), so the host's CA files and its apt and npm configuration are copied in, as a
 *   new machine of this kind has them.
 * - The bind mounts of /proc, /sys and /dev live in a private mount namespace (unshare), so they
 *   vanish with it, whatever way the test ends: removing the root can never reach the host's /dev.
 */
import {execFileSync} from 'node:child_process'
import {cp, mkdir, mkdtemp, readFile, readdir, rm, symlink} from 'node:fs/promises'
import {existsSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {execa} from 'execa'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {repoRoot} from '../helpers/cli.js'

const MINUTE = 60_000
/** Where the checkout lands inside the root, and the user a new machine has there. */
const CHECKOUT = '/root/aegis-kit'
const BINFMT = '/proc/sys/fs/binfmt_misc'

let root: string
/** Everything the chrooted shell printed, for the assertions and for a failure's message. */
let transcript = ''
let exitCode: number | undefined

/** The host files a new machine of this kind has before any set-up, at the same paths. */
function hostConfigFiles(): string[] {
  const files = [
    '/etc/resolv.conf',
    '/etc/hosts',
    '/etc/ssl/certs/ca-certificates.crt',
    process.env.NODE_EXTRA_CA_CERTS,
    process.env.SSL_CERT_FILE,
    npmConfig('globalconfig'),
    npmConfig('userconfig'),
  ]
  return [...new Set(files.filter((file): file is string => file !== undefined && file !== '' && existsSync(file)))]
}

function npmConfig(key: string): string {
  return execFileSync('npm', ['config', 'get', key], {encoding: 'utf8'}).trim()
}

/** Copies a host directory's entries into the same place in the root (apt's configuration). */
async function copyDirectory(dir: string): Promise<void> {
  if (!existsSync(dir)) return
  await mkdir(path.join(root, dir), {recursive: true})
  for (const entry of await readdir(dir))
    await cp(path.join(dir, entry), path.join(root, dir, entry), {recursive: true, dereference: false})
}

/** The host's Node and npm, as the machine image has them (node in /usr/bin, npm beside its modules). */
async function copyNode(): Promise<void> {
  const node = process.execPath
  await cp(node, path.join(root, node))
  const npmRoot = execFileSync('npm', ['root', '-g'], {encoding: 'utf8'}).trim()
  await cp(path.join(npmRoot, 'npm'), path.join(root, npmRoot, 'npm'), {recursive: true})
  const bin = path.dirname(node)
  for (const [name, target] of [
    ['npm', 'npm-cli.js'],
    ['npx', 'npx-cli.js'],
  ] as const) {
    await symlink(path.relative(bin, path.join(npmRoot, 'npm', 'bin', target)), path.join(root, bin, name))
  }
  // npm builds native addons against the headers of the Node it runs (npm's `nodedir`).
  const nodedir = npmConfig('nodedir')
  const headers = path.join(nodedir, 'include', 'node')
  if (nodedir !== '' && existsSync(headers)) await cp(headers, path.join(root, headers), {recursive: true})
}

/**
 * The host's downloaded .debs, hard-linked into the root's apt cache: a download cache only (apt
 * checks each against the archive's hashes and downloads what is missing or different; which
 * packages get installed is still scripts/setup's choice). It keeps this test within minutes.
 */
async function seedAptCache(): Promise<void> {
  const host = '/var/cache/apt/archives'
  if (!existsSync(host)) return
  const debs = (await readdir(host)).filter((name) => name.endsWith('.deb'))
  if (debs.length === 0) return
  const cache = path.join(root, host)
  await mkdir(cache, {recursive: true})
  // On another filesystem there are no hard links, and copying gigabytes would cost more than
  // downloading: then apt downloads.
  await execa('cp', ['-al', '--', ...debs.map((name) => path.join(host, name)), cache]).catch(() => undefined)
}

/**
 * Clones the checkout as it is now: HEAD plus uncommitted changes to tracked files. A CI checkout
 * may belong to another user (git then refuses it as "dubious ownership" unless told it is safe)
 * or may not be a git repository at all: then the tree is copied as it is, without what
 * .gitignore leaves out, which is what a clone would hold.
 */
async function cloneCheckout(): Promise<void> {
  const target = path.join(root, CHECKOUT)
  const git = ['-c', 'safe.directory=*', '-c', 'user.name=aegis-kit test', '-c', 'user.email=test@localhost']
  const stash = await execa('git', [...git, 'stash', 'create'], {cwd: repoRoot, reject: false})
  if (stash.exitCode === 0) {
    const worktree = stash.stdout.trim()
    await execa('git', [...git, 'clone', '--quiet', '--no-checkout', repoRoot, target])
    await execa('git', [...git, '-C', target, 'checkout', '--quiet', '--detach', worktree === '' ? 'HEAD' : worktree])
    return
  }
  console.warn(`fresh-root: git stash create failed (${stash.stderr.trim()}); copying the tree instead of cloning it`)
  await mkdir(target, {recursive: true})
  await execa('tar', [
    '-C',
    repoRoot,
    '--exclude=./node_modules',
    '--exclude=./dist',
    '--exclude=*.tsbuildinfo',
    '--exclude=./tmp',
    '--exclude=./.git',
    '-cf',
    '-',
    '.',
  ]).pipe('tar', ['-C', target, '-xf', '-'])
}

/** The interpreters of the binfmt_misc registrations set-up makes (qemu-aarch64 on x86_64). */
async function interpretersSetupRelies(): Promise<Array<{name: string; interpreter: string}>> {
  const setup = await readFile(path.join(repoRoot, 'scripts/setup'), 'utf8')
  const names = [...setup.matchAll(/binfmt\.d\/([\w-]+)\.conf/g)].map((match) => match[1])
  const found: Array<{name: string; interpreter: string}> = []
  for (const name of names) {
    const registration = await readFile(path.join(BINFMT, name), 'utf8')
    const interpreter = /^interpreter (\S+)$/m.exec(registration)?.[1]
    if (interpreter) found.push({name, interpreter})
  }
  return found
}

describe.skipIf(process.getuid?.() !== 0)(
  'a fresh Debian 12 root (skipped without root: mmdebstrap and chroot need it)',
  () => {
    beforeAll(async () => {
      root = await mkdtemp(path.join(tmpdir(), 'fresh-root-'))
      // What a new machine of this kind has before any set-up (the env's node machine): a minimal
      // Debian with git and the native-addon toolchain, plus Node and npm.
      const sources = existsSync('/etc/apt/sources.list.d/debian.sources')
        ? ['/etc/apt/sources.list.d/debian.sources']
        : []
      await execa(
        'mmdebstrap',
        [
          '--quiet',
          '--variant=minbase',
          '--include=git,ca-certificates,python3,make,g++',
          'bookworm',
          root,
          ...sources,
        ],
        {stdin: 'ignore'},
      )
      await copyNode()
      for (const file of hostConfigFiles()) {
        await mkdir(path.dirname(path.join(root, file)), {recursive: true})
        await cp(file, path.join(root, file), {dereference: true})
      }
      // Extra CAs survive ca-certificates' triggers, which rebuild the bundle from these.
      await copyDirectory('/usr/local/share/ca-certificates')
      // apt reaches the same archive as the host, configured as the host is (and only so: the
      // sources mmdebstrap wrote would name each suite twice).
      await rm(path.join(root, 'etc/apt/sources.list.d'), {recursive: true, force: true})
      await rm(path.join(root, 'etc/apt/sources.list'), {force: true})
      await copyDirectory('/etc/apt/sources.list.d')
      await copyDirectory('/etc/apt/apt.conf.d')
      if (existsSync('/etc/apt/sources.list'))
        await cp('/etc/apt/sources.list', path.join(root, 'etc/apt/sources.list'))
      await seedAptCache()
      await cloneCheckout()

      const env = {
        PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        HOME: '/root',
        LANG: 'C.UTF-8',
        CI: 'true',
        ...(process.env.NODE_EXTRA_CA_CERTS ? {NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS} : {}),
        ...(process.env.SSL_CERT_FILE ? {SSL_CERT_FILE: process.env.SSL_CERT_FILE} : {}),
      }
      const inside = [
        `cd ${CHECKOUT}`,
        'echo "== scripts/setup"',
        'scripts/setup',
        'echo "== validate openclaw"',
        './bin/run.js validate openclaw',
        'echo "== build hello"',
        './bin/run.js build hello',
        'echo "== doctor"',
        './bin/run.js doctor',
        'echo "== done"',
      ].join(' && ')
      const mounts = ['proc', 'sys', 'dev']
        .map((dir) => `mount --rbind /${dir} "$root/${dir}" && mount --make-rslave "$root/${dir}"`)
        .join(' && ')
      const envArgs = Object.entries(env).map(([key, value]) => `${key}=${value}`)
      // The root bound onto itself first: on a real machine / is a mount point, and tools that
      // make their own mount namespace (unshare --mount, as the build runs mmdebstrap) fail with
      // EINVAL changing the propagation of a / that is not one.
      const chroot = `root="$1" && shift && mount --bind "$root" "$root" && ${mounts} && exec chroot "$root" /usr/bin/env -i "$@"`
      const result = await execa(
        'unshare',
        ['--mount', '--propagation', 'private', '--', 'sh', '-ec', chroot, 'sh', root, ...envArgs, 'sh', '-ec', inside],
        {
          reject: false,
          all: true,
          stdin: 'ignore',
          timeout: 12 * MINUTE,
        },
      )
      transcript = String(result.all)
      exitCode = result.exitCode
    }, 15 * MINUTE)

    afterAll(async () => {
      // The mounts went with the namespace; check, never remove through a live /dev.
      if (!root) return
      const mounts = await readFile('/proc/self/mountinfo', 'utf8')
      if (mounts.includes(` ${root}/`))
        throw new Error(`mounts under ${root} outlived the test's namespace; not removing it`)
      await rm(root, {recursive: true, force: true})
    }, 2 * MINUTE)

    it("runs the README's set-up, then validate openclaw, build hello and doctor, inside the root", () => {
      const tail = transcript.split('\n').slice(-40).join('\n')
      expect(exitCode, `inside the fresh root:\n${tail}`).toBe(0)
      expect(transcript).toContain('== done')
      expect(transcript).toMatch(/built hello:0\.1\.0 sha256:[0-9a-f]{12}/)
    })

    it('installed every interpreter set-up relies on inside the root, not only on the host', async () => {
      const interpreters = await interpretersSetupRelies()
      expect(interpreters.length, 'scripts/setup registers qemu-aarch64 with binfmt_misc').toBeGreaterThan(0)
      for (const {name, interpreter} of interpreters) {
        expect(existsSync(path.join(root, interpreter)), `${name}'s interpreter ${interpreter} inside the root`).toBe(
          true,
        )
      }
    })
  },
)
