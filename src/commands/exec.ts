import {Args, Flags, type Interfaces} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {AegisError} from '../errors.js'
import type {ExecRequest} from '../guest/index.js'
import {defaultDataDir} from '../paths.js'
import {type ExecClient, openExec} from '../runner/exec-stream.js'
import {InstanceRegistry} from '../runner/instances.js'
import {supervisorSocketOf} from '../runner/supervisor-api.js'

const FORWARDED_SIGNALS = {SIGINT: 'INT', SIGTERM: 'TERM', SIGHUP: 'HUP', SIGQUIT: 'QUIT'} as const

type ExecFlags = Interfaces.InferredFlags<typeof Exec.flags>

export default class Exec extends BaseCommand {
  static override summary = 'Run a command in a running instance (docker exec).'
  static override description =
    `The command runs as the workload's user, in its environment (with its secrets) and its working
directory, unless --user, --env or --workdir say otherwise. A paused instance is woken first. The
exit code is the command's (126: not executable, 127: not found). Without -t, Ctrl-C is
forwarded to the command as SIGINT; with -t the local terminal is in raw mode and every key
goes to the command's terminal.`

  static override examples = [
    {description: 'A shell in openclaw', command: '<%= config.bin %> <%= command.id %> -it openclaw -- bash'},
    {description: 'One command', command: '<%= config.bin %> <%= command.id %> hello -- busybox uname -a'},
  ]

  static override strict = false
  static override args = {name: Args.string({description: 'Instance name (see aegis-kit ps).', required: true})}
  static override flags = {
    interactive: Flags.boolean({char: 'i', description: 'Keep stdin open and forward it to the command.'}),
    tty: Flags.boolean({char: 't', description: "Allocate a pseudo-terminal the local terminal's size."}),
    user: Flags.string({char: 'u', description: 'Numeric UID[:GID] to run as (GID defaults to UID).'}),
    workdir: Flags.string({char: 'w', description: 'Working directory in the guest.'}),
    env: Flags.string({char: 'e', description: 'K=V added to the environment (repeatable).', multiple: true}),
  }

  async run(): Promise<void> {
    const {args, flags, argv} = await this.parse(Exec)
    const command = this.commandAfterDashes(args.name, argv)
    const request = execRequest(command, flags)
    const stdout = process.stdout
    const socket = await supervisorSocketOf(InstanceRegistry.forDataDir(defaultDataDir()), args.name)
    const session = await openExec(socket, args.name, request, {
      stdout: (data) => stdout.write(data),
      stderr: (data) => process.stderr.write(data),
    })
    const cleanups = [...forwardSignals(session, flags.tty), ...forwardStdin(session, flags)]
    let exitCode: number
    try {
      exitCode = await session.exit
    } finally {
      for (const cleanup of cleanups.reverse()) cleanup()
    }
    await new Promise<void>((resolve) => stdout.write('', () => resolve()))
    if (exitCode !== 0) this.exit(exitCode)
  }

  /** The command after `--`, which must be all that follows the instance name. */
  private commandAfterDashes(name: string, argv: unknown[]): string[] {
    const dashes = this.argv.indexOf('--')
    if (dashes < 0)
      throw new AegisError('exec needs -- before the command', {hint: `aegis-kit exec ${name} -- CMD [ARG...]`})
    const command = this.argv.slice(dashes + 1)
    if (command.length === 0 || argv.length !== command.length + 1)
      throw new AegisError(command.length === 0 ? 'exec needs a command after --' : 'unexpected arguments before --', {
        hint: `aegis-kit exec ${name} -- CMD [ARG...]`,
      })
    return command
  }
}

/** The command with --user, --workdir, --env and (-t) the terminal's size. */
function execRequest(command: string[], flags: ExecFlags): ExecRequest {
  const request: ExecRequest = {command}
  if (flags.user !== undefined) {
    const match = /^(\d+)(?::(\d+))?$/.exec(flags.user)
    if (!match)
      throw new AegisError(`--user ${flags.user}: expected numeric UID[:GID]`, {hint: 'e.g. --user 0 or 1000:1000'})
    request.user = {uid: Number(match[1]), gid: Number(match[2] ?? match[1])}
  }
  if (flags.workdir !== undefined) request.workdir = flags.workdir
  if (flags.env !== undefined) {
    const env: Record<string, string> = {}
    for (const pair of flags.env) {
      const equals = pair.indexOf('=')
      if (equals <= 0) throw new AegisError(`--env ${pair}: expected K=V`)
      env[pair.slice(0, equals)] = pair.slice(equals + 1)
    }
    request.env = env
  }
  if (flags.tty) request.tty = terminalSize()
  return request
}

/** The local terminal's size. */
function terminalSize(): {rows: number; cols: number} {
  const stdout = process.stdout
  // A terminal that reports no size (0x0 under `script`, say) gets the classic 24x80.
  return {
    rows: stdout.isTTY && stdout.rows > 0 ? stdout.rows : 24,
    cols: stdout.isTTY && stdout.columns > 0 ? stdout.columns : 80,
  }
}

/** Passes the local terminal's resizes (with -t) and the usual signals to the command; returns what undoes that. */
function forwardSignals(session: ExecClient, tty: boolean): Array<() => void> {
  const cleanups: Array<() => void> = []
  if (tty && process.stdout.isTTY) {
    const onResize = (): void => {
      const {rows, cols} = terminalSize()
      session.resize(rows, cols)
    }
    process.on('SIGWINCH', onResize)
    cleanups.push(() => process.off('SIGWINCH', onResize))
  }
  for (const [local, remote] of Object.entries(FORWARDED_SIGNALS)) {
    const forward = (): void => session.signal(remote)
    process.on(local, forward)
    cleanups.push(() => process.off(local, forward))
  }
  return cleanups
}

/** With -i, stdin to the command (raw with -t on a terminal); without, the command's stdin ends. Returns what undoes that. */
function forwardStdin(session: ExecClient, flags: ExecFlags): Array<() => void> {
  const cleanups: Array<() => void> = []
  const stdin = process.stdin
  if (flags.interactive) {
    if (flags.tty && stdin.isTTY) {
      stdin.setRawMode(true)
      cleanups.push(() => stdin.setRawMode(false))
    }
    const onData = (data: Buffer): void => session.write(data)
    const onEnd = (): void => session.endStdin()
    stdin.on('data', onData).once('end', onEnd)
    cleanups.push(() => {
      stdin.off('data', onData).off('end', onEnd)
      stdin.pause()
      stdin.destroy()
    })
  } else session.endStdin()
  return cleanups
}
