/** Runs the external tools a build drives (mmdebstrap, npm) with errors that say what failed and how to fix it. */
import {AegisError} from '../errors.js'
import {execFileText} from '../exec.js'

export interface ToolOptions {
  env?: Record<string, string>
  cwd?: string
  hint?: string
  /** Each output line, for progress. */
  onLine?: (line: string) => void
  signal?: AbortSignal
}

/**
 * mmdebstrap, which as root bind-mounts the host's /dev/shm, a devpts, /proc and /sys into the
 * new root for the maintainer scripts, in the host's mount namespace: killed before it unmounted
 * them, it left them under the data directory, where `rm -rf` would reach the host's files.
 * Here it runs in a private mount namespace (its mounts never reach the host's) and a PID
 * namespace whose first process dies with this one (PR_SET_PDEATHSIG, set by setpriv and by
 * unshare's --kill-child): whatever kills aegis-kit, even SIGKILL, kills every process of the
 * base with it, and the mounts go with the last of them. As another user mmdebstrap's unshare
 * mode makes namespaces of its own, so it runs as it is.
 */
export function runMmdebstrap(args: string[], options: ToolOptions = {}): Promise<string> {
  if (process.getuid?.() !== 0) return runTool('mmdebstrap', args, options)
  return runTool('mmdebstrap', args, {
    ...options,
    wrapper: [
      'setpriv',
      '--pdeathsig',
      'KILL',
      '--',
      'unshare',
      '--mount',
      '--propagation',
      'private',
      '--pid',
      '--fork',
      '--kill-child=SIGKILL',
      '--',
    ],
  })
}

interface WrappedToolOptions extends ToolOptions {
  /** A command that runs `command` (namespaces): exit 127 from it means `command` is missing. */
  wrapper?: string[]
}

export async function runTool(command: string, args: string[], options: WrappedToolOptions = {}): Promise<string> {
  const [file, ...fileArgs] = [...(options.wrapper ?? []), command, ...args]
  const onLine = options.onLine
  const result = await execFileText(file, fileArgs, {
    // Added to ours: callers name only what they set (SOURCE_DATE_EPOCH, npm's config).
    env: {...process.env, ...options.env},
    cwd: options.cwd,
    all: true,
    signal: options.signal,
    // unshare ignores SIGTERM while its child runs; killed, it takes its namespace's processes along.
    killSignal: options.wrapper ? 'SIGKILL' : 'SIGTERM',
    onLine:
      onLine &&
      ((line) => {
        if (line.trim() !== '') onLine(line)
      }),
  }).catch((error: unknown) => {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw error
  })
  if (result === undefined || (options.wrapper && result.exitCode === 127)) {
    const missing = result === undefined ? file : command
    throw new AegisError(`${missing} is not installed`, {
      hint: `${options.hint ? `${options.hint}; ` : ''}run \`aegis-kit doctor\` to check the rest`,
    })
  }
  if (result.canceled) throw new AegisError(`${command} was interrupted`)
  if (result.exitCode !== 0) {
    const tail = (result.all ?? '').trim().split('\n').slice(-6).join('\n  ')
    throw new AegisError(`${command} failed (exit ${result.exitCode ?? result.signal}):\n  ${tail}`, {
      hint: options.hint,
    })
  }
  return result.stdout
}
