/**
 * The sandbox every kit hook runs in: bubblewrap (bwrap), because a hook is other people's code
 * (a pulled kit's as much as the user's own) and the CLI runs as the user, often root. What the
 * hook sees is built from nothing: /usr and the library directories read-only, the kit
 * directory read-only, the runner's own child.js, a private /tmp, /dev and /proc, and no
 * network unless the kit declares `hooks.network`. Its own user, PID, mount, IPC, UTS and
 * (without network) network namespaces. docs/hooks.md, "Sandbox", describes the same list: keep
 * them in step.
 */
import {existsSync, lstatSync, readlinkSync, realpathSync} from 'node:fs'
import {constants} from 'node:os'
import {AegisError} from '../errors.js'
import {execFileText, findOnPath, type ExecResult} from '../exec.js'

/** The unprivileged user inside the sandbox (nobody): the hook is not root even there. */
const SANDBOX_ID = '65534'
/** Top-level directories Node and its libraries may live in: a symlink (merged /usr) or a directory. */
const SYSTEM_DIRS = ['/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32']
/** What name resolution and TLS read, bound only for a kit that declares network. */
const NETWORK_FILES = ['/etc/resolv.conf', '/etc/hosts', '/etc/nsswitch.conf', '/etc/ssl']

export interface SandboxedRun {
  /** The kit directory: mounted read-only at the same path, and the working directory. */
  kitDir: string
  /** Host files the command needs (the runner's child.js): mounted read-only at the same path. */
  files: string[]
  network: boolean
  /** The command's whole environment. */
  env: NodeJS.ProcessEnv
  input: string
  timeoutMs: number
  /** Says which hook of which kit, for the error when the sandbox cannot start. */
  what: string
}

/**
 * Runs `command` (its first word the path of a program inside /usr or `files`) in the sandbox.
 * Every process it starts dies with it: when the command exits, bwrap's init (PID 1 of the
 * sandbox's PID namespace) exits and the kernel kills the rest; at the time limit the runner
 * kills bwrap, and --die-with-parent takes the sandbox with it.
 */
export async function runSandboxed(command: string[], run: SandboxedRun): Promise<ExecResult> {
  const bwrap = findOnPath('bwrap')
  if (!bwrap)
    throw new AegisError(`cannot run ${run.what}: bubblewrap (bwrap), the sandbox hooks run in, is not installed`, {
      hint: 'scripts/setup installs it (apt-get install bubblewrap)',
    })
  const result = await execFileText(bwrap, [...sandboxArgs(command[0], run), '--', ...command], {
    env: run.env,
    input: run.input,
    timeoutMs: run.timeoutMs,
  })
  // bwrap reports a sandbox it could not build on stderr before the command starts; the command
  // itself has written nothing then.
  const setupFailure =
    result.exitCode === 1 && result.stdout === '' && /^bwrap: /.test(result.stderr)
      ? result.stderr.split('\n')[0]
      : undefined
  if (setupFailure) {
    throw new AegisError(`cannot start the sandbox for ${run.what}: ${setupFailure}`, {
      hint: 'hooks run only in a sandbox, which needs user namespaces: sysctl -w user.max_user_namespaces=15000 (and kernel.unprivileged_userns_clone=1 where it exists); in a container, a seccomp profile that allows them',
    })
  }
  return {...result, ...signalOf(result)}
}

function sandboxArgs(program: string, run: SandboxedRun): string[] {
  const args = [
    '--unshare-user',
    '--unshare-pid',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    ...(run.network ? [] : ['--unshare-net']),
    '--uid',
    SANDBOX_ID,
    '--gid',
    SANDBOX_ID,
    '--hostname',
    'aegis-hook',
    '--die-with-parent',
    // Its own session: a hook cannot push input into a terminal the CLI runs on (TIOCSTI).
    '--new-session',
    '--ro-bind',
    '/usr',
    '/usr',
  ]
  for (const dir of SYSTEM_DIRS) {
    if (!existsSync(dir)) continue
    if (lstatSync(dir).isSymbolicLink()) args.push('--symlink', readlinkSync(dir), dir)
    else args.push('--ro-bind', dir, dir)
  }
  args.push('--ro-bind-try', '/etc/ld.so.cache', '/etc/ld.so.cache')
  if (run.network) for (const file of NETWORK_FILES) args.push('--ro-bind-try', file, file)
  // A Node outside /usr (nvm, /opt): that one file, not the directory it came from.
  const realProgram = realpathSync(program)
  // /tmp first: a bind under /tmp made before it (Node in a checkout there) would be hidden by it.
  args.push('--proc', '/proc', '--dev', '/dev', '--tmpfs', '/tmp')
  if (!realProgram.startsWith('/usr/')) args.push('--ro-bind', realProgram, program)
  // After /tmp: a kit or child.js under /tmp is mounted over the private /tmp, not hidden by it.
  for (const file of run.files) args.push('--ro-bind', file, file)
  args.push('--ro-bind', run.kitDir, run.kitDir, '--chdir', run.kitDir)
  return args
}

/**
 * bwrap's init exits with 128 + the signal when the command is killed by one (a crash, an
 * out-of-memory abort): reported as the signal, as it would be without the sandbox.
 */
function signalOf(result: ExecResult): Pick<ExecResult, 'exitCode' | 'signal'> {
  if (result.signal || result.exitCode === null || result.exitCode <= 128)
    return {exitCode: result.exitCode, signal: result.signal}
  const signal = (Object.keys(constants.signals) as NodeJS.Signals[]).find(
    (name) => constants.signals[name] === (result.exitCode ?? 0) - 128,
  )
  return signal ? {exitCode: null, signal} : {exitCode: result.exitCode, signal: null}
}
