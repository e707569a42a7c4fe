/**
 * `run --detach`: the same `run` command re-executed as a detached supervisor (its own session,
 * output to the instance's console.log) that owns the VM, gvproxy and the frame filter for the
 * instance's lifetime. The launcher waits until the instance is healthy, relays progress, prints
 * the URLs and exits. URLs carry the gateway token, so they travel only through a private pipe
 * (fd 3) between the two processes, never through the log or the state file.
 */
import {spawn} from 'node:child_process'
import {createWriteStream, readFileSync} from 'node:fs'
import {mkdir, open, readFile} from 'node:fs/promises'
import {createInterface} from 'node:readline'
import type {Readable, Writable} from 'node:stream'
import {AegisError, messageOf} from '../errors.js'
import {instanceBusy, type InstanceRegistry} from './instances.js'

const SUPERVISOR_ENV = 'AEGIS_KIT_SUPERVISOR'
const CHANNEL_FD = 3
const PARENT_ENV = 'AEGIS_KIT_PARENT'
const GRANT_FD = 4

type ChannelMessage =
  | {type: 'status'; message: string}
  | {type: 'ready'; urls: Array<{label: string; url: string}>; healthyMs?: number}

/** The supervisor's end of the pipe to its launcher; absent in an ordinary `run`. */
export interface SupervisorChannel {
  status(message: string): void
  ready(urls: Array<{label: string; url: string}>, healthyMs?: number): void
}

export function isSupervisor(env: NodeJS.ProcessEnv = process.env): boolean {
  return env[SUPERVISOR_ENV] === '1'
}

/** In a child's supervisor: its parent's name and the token its parent made for it (read once, from fd 4). */
export function readGrant(env: NodeJS.ProcessEnv = process.env): {parent: string; token: string} | undefined {
  const parent = env[PARENT_ENV]
  if (!isSupervisor(env) || parent === undefined) return undefined
  try {
    return {parent, token: readFileSync(GRANT_FD, 'utf8').trim()}
  } catch (error) {
    throw new AegisError(`${PARENT_ENV} is set but no capability token came on fd ${GRANT_FD}: ${messageOf(error)}`, {
      hint: `children are started by their parent's guest API; unset ${PARENT_ENV}`,
    })
  }
}

export function openSupervisorChannel(): SupervisorChannel {
  const stream = createWriteStream('', {fd: CHANNEL_FD})
  let open = true
  // The launcher may be gone (Ctrl-C after ready, or killed): a closed pipe is not our failure.
  stream.on('error', () => (open = false))
  const send = (message: ChannelMessage) => {
    if (open) stream.write(`${JSON.stringify(message)}\n`)
  }
  return {
    status: (message) => send({type: 'status', message}),
    ready: (urls, healthyMs) => {
      send({type: 'ready', urls, healthyMs})
      open = false
      stream.end()
    },
  }
}

export interface LaunchOptions {
  registry: InstanceRegistry
  name: string
  /** `run`'s own arguments, without --detach. */
  args: string[]
  onStatus: (message: string) => void
  signal: AbortSignal
  /** Set in the supervisor's environment over this process's (a parent's secrets for its child). */
  env?: Record<string, string>
  /** A child's capability token and its parent's name, handed over on fd 4 (never argv or environment). */
  grant?: {parent: string; token: string}
}

export interface LaunchResult {
  pid: number
  urls: Array<{label: string; url: string}>
  healthyMs?: number
  logFile: string
}

export async function launchDetached(options: LaunchOptions): Promise<LaunchResult> {
  const {registry, name} = options
  const existing = await registry.read(name)
  if (existing?.alive) throw instanceBusy(name, existing)
  await mkdir(registry.dir(name), {recursive: true})
  const logFile = registry.logFile(name)
  const log = await open(logFile, 'w', 0o600)
  const script = process.argv[1]
  if (!script) throw new AegisError('cannot tell which aegis-kit to start (process.argv[1] is empty)')
  const {[PARENT_ENV]: _inherited, ...environment} = process.env
  const child = spawn(process.execPath, [script, 'run', ...options.args], {
    detached: true,
    stdio: ['ignore', log.fd, log.fd, 'pipe', ...(options.grant ? (['pipe'] as const) : [])],
    env: {
      ...environment,
      ...options.env,
      [SUPERVISOR_ENV]: '1',
      ...(options.grant ? {[PARENT_ENV]: options.grant.parent} : {}),
    },
  })
  await log.close()
  if (options.grant) (child.stdio[GRANT_FD] as Writable).end(options.grant.token)
  const pid = child.pid
  if (pid === undefined) throw new AegisError(`could not start the supervisor for ${name}`, {hint: `see ${logFile}`})

  const stopChild = () => {
    try {
      process.kill(pid, 'SIGTERM')
    } catch {
      // already gone
    }
  }
  // Ctrl-C while it starts: the user does not want a half-started instance left running.
  options.signal.addEventListener('abort', stopChild, {once: true})
  try {
    const channel = child.stdio[CHANNEL_FD] as Readable
    let ready: Extract<ChannelMessage, {type: 'ready'}> | undefined
    for await (const line of createInterface({input: channel})) {
      const message = parseMessage(line)
      if (message?.type === 'status') options.onStatus(message.message)
      else if (message?.type === 'ready') ready = message
    }
    if (!ready) throw await startupFailure(name, logFile, child.exitCode)
    child.unref()
    return {pid, urls: ready.urls, healthyMs: ready.healthyMs, logFile}
  } finally {
    options.signal.removeEventListener('abort', stopChild)
  }
}

function parseMessage(line: string): ChannelMessage | undefined {
  try {
    return JSON.parse(line) as ChannelMessage
  } catch {
    return undefined // not one of ours (the channel carries only JSON lines); skipped
  }
}

/** The supervisor's own error (its `Error:` and `hint:` lines in the log), or a pointer to the log. */
async function startupFailure(name: string, logFile: string, exitCode: number | null): Promise<AegisError> {
  // No log (the supervisor died before writing one): the message below points at the exit code.
  const text = await readFile(logFile, 'utf8').catch(() => '')
  const lines = text.split('\n')
  const at = lines.findLastIndex((line) => line.startsWith('Error: '))
  if (at >= 0) {
    const hint = lines[at + 1]?.startsWith('  hint: ') ? lines[at + 1]?.slice('  hint: '.length) : undefined
    return new AegisError(lines[at]!.slice('Error: '.length), {hint: hint ?? `the instance's output is in ${logFile}`})
  }
  return new AegisError(`${name} stopped while starting${exitCode === null ? '' : ` (exit ${exitCode})`}`, {
    hint: `see aegis-kit logs ${name}`,
  })
}
