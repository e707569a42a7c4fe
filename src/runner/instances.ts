/**
 * The instances on this machine: one directory per instance name under the data directory,
 * holding `state.json` (who runs it, its ports, how it ended) and, for a detached instance,
 * `console.log`. `run` claims the name, `ps` lists, `stop` signals the process that owns the VM,
 * `logs` reads the console. No secret is ever written here: URLs are kept without their token.
 */
import {mkdir, open, readdir, readFile, rename, rm, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {AegisError} from '../errors.js'
import {withFileLock} from '../file-lock.js'
import {processAlive} from '../process-identity.js'
import type {LifeState} from './lifecycle.js'

export type InstanceStatus = 'starting' | 'running' | 'healthy' | 'exited'

export interface InstanceState {
  name: string
  kit: string
  /** The process that owns the VM (the `run` command, or its detached supervisor). */
  pid: number
  /** That process's start time in clock ticks since boot (Linux), so a reused pid is not mistaken for it. */
  pidStart?: string
  startedAt: string
  status: InstanceStatus
  detached: boolean
  ports: Array<{hostPort: number; guestPort: number}>
  workspace?: string
  memoryMib?: number
  vcpus?: number
  /** QEMU's accelerator, once the VM runs. */
  accel?: 'kvm' | 'tcg'
  /** The kit's UI URLs, without the `#token=` part. */
  urls: Array<{label: string; url: string}>
  exitCode?: number
  /** How it ended, in one sentence (set when status is `exited`). */
  message?: string
  /** Whether its VM runs, is paused, or is stopped until the next connection (lifecycle.ts), once it has booted. */
  life?: LifeState
  /** VMs booted after the first (wakes from stopped, restarts), and restarts of the workload. */
  boots?: number
  restarts?: number
  /** The kit's profile it runs, when one was chosen. */
  profile?: string
  /** The instance that spawned it through the guest API (children.ts); stopped with it. */
  parent?: string
  /** The session it belongs to (`run --session`): a workspace and per_session secrets it may share. */
  session?: string
  /** The supervisor's API (supervisor-api.ts), while it runs. */
  apiSocket?: string
}

/** An instance as `ps` shows it: a recorded process that is gone without saying so has `lost` it. */
export interface InstanceEntry extends InstanceState {
  alive: boolean
  /** Shown as exited, but its owner was killed before it could record the end. */
  lost?: boolean
}

const NAME_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,62}$/

export function checkInstanceName(name: string): void {
  checkDirectoryName(name, 'instance')
}

/** A session name: the same rule as an instance name, since it names a directory too. */
export function checkSessionName(name: string): void {
  checkDirectoryName(name, 'session')
}

function checkDirectoryName(name: string, kind: 'instance' | 'session'): void {
  if (!NAME_PATTERN.test(name)) {
    throw new AegisError(`"${name}" is not a usable ${kind} name`, {
      hint: 'use lowercase letters, digits, ".", "_" and "-" (at most 63), starting with a letter or digit',
    })
  }
}

/** At most `max` live instances in `session` (the kit's `resources.max_agents_per_session`). */
export interface SessionLimit {
  session: string
  max: number
}

/** The workspace a session's instances share when their kit says `workspace.mode: shared`. */
export function sessionWorkspaceDir(dataDir: string, session: string): string {
  return path.join(dataDir, 'sessions', session, 'workspace')
}

export class InstanceRegistry {
  constructor(readonly root: string) {}

  static forDataDir(dataDir: string): InstanceRegistry {
    return new InstanceRegistry(path.join(dataDir, 'instances'))
  }

  dir(name: string): string {
    return path.join(this.root, name)
  }

  logFile(name: string): string {
    return path.join(this.dir(name), 'console.log')
  }

  /**
   * Records `state` as the instance `state.name`, failing when a live process already owns that
   * name, or when `limit` says its session is full. A record left by a process that is gone
   * (killed, machine rebooted) is replaced.
   */
  async claim(state: InstanceState, limit?: SessionLimit): Promise<void> {
    checkInstanceName(state.name)
    await mkdir(this.dir(state.name), {recursive: true})
    // An exclusive lock file makes two `run --name x` started together race safely.
    const lock = path.join(this.dir(state.name), 'claim.lock')
    const handle = await open(lock, 'wx').catch(async (error: NodeJS.ErrnoException) => {
      if (error.code !== 'EEXIST') throw error
      // Unreadable (its holder removed it meanwhile): no holder, so the lock is taken over below.
      const holder = Number((await readFile(lock, 'utf8').catch(() => '')).trim())
      if (holder > 0 && processAlive(holder)) throw instanceBusy(state.name)
      await rm(lock, {force: true})
      return open(lock, 'wx')
    })
    try {
      await handle.writeFile(String(process.pid))
      const existing = await this.read(state.name)
      // `alive` is false for an exited record and for one whose process is gone.
      if (existing?.alive) throw instanceBusy(state.name, existing)
      if (limit === undefined) await this.write(state)
      // Counted and claimed under one lock: two instances started together cannot both be the last.
      else
        await withFileLock(path.join(this.root, `.session-${limit.session}.lock`), async () => {
          await this.checkRoom(state.name, limit)
          await this.write(state)
        })
    } finally {
      await handle.close()
      await rm(lock, {force: true})
    }
  }

  private async checkRoom(name: string, {session, max}: SessionLimit): Promise<void> {
    const members = (await this.list()).filter(
      (entry) => entry.alive && entry.session === session && entry.name !== name,
    )
    if (members.length < max) return
    throw new AegisError(
      `session ${session} already runs ${members.length} instance${members.length === 1 ? '' : 's'} (${members.map((entry) => entry.name).join(', ')}), the most its kit allows (resources.max_agents_per_session: ${max})`,
      {hint: `stop one of them (aegis-kit stop NAME), or run in another --session`},
    )
  }

  async update(name: string, patch: Partial<InstanceState>): Promise<void> {
    const current = await this.read(name)
    if (!current) return
    const {alive: _alive, ...state} = current
    await this.write({...state, ...patch})
  }

  async read(name: string): Promise<InstanceEntry | undefined> {
    let text: string
    try {
      text = await readFile(path.join(this.dir(name), 'state.json'), 'utf8')
    } catch {
      return undefined // no record (never claimed, or removed meanwhile)
    }
    const state = JSON.parse(text) as InstanceState
    if (state.status === 'exited' || processAlive(state.pid, state.pidStart))
      return {...state, alive: state.status !== 'exited'}
    // Its owner died without recording the end (SIGKILL, a reboot); its VM and helpers died with it.
    return {
      ...state,
      status: 'exited',
      alive: false,
      lost: true,
      message: `${state.name}: its supervisor (pid ${state.pid}) ended without recording how the instance ended (killed?)`,
    }
  }

  async list(): Promise<InstanceEntry[]> {
    // No directory yet: no instances. A record that cannot be read (being rewritten) is left out of this listing.
    const names = await readdir(this.root).catch(() => [] as string[])
    const entries = await Promise.all(names.sort().map((name) => this.read(name).catch(() => undefined)))
    return entries.filter((entry): entry is InstanceEntry => entry !== undefined)
  }

  async remove(name: string): Promise<void> {
    await rm(this.dir(name), {recursive: true, force: true})
  }

  /** The instance `name`, or an error that lists the ones there are. */
  async get(name: string): Promise<InstanceEntry> {
    const entry = await this.read(name)
    if (entry) return entry
    const names = (await this.list()).map((instance) => instance.name)
    throw new AegisError(`no instance named ${name}`, {
      hint:
        names.length > 0
          ? `instances: ${names.join(', ')} (aegis-kit ps)`
          : 'start one with aegis-kit run KIT --detach',
    })
  }

  private async write(state: InstanceState): Promise<void> {
    const file = path.join(this.dir(state.name), 'state.json')
    // Readers (`ps`) never see a half-written file.
    await writeFile(`${file}.tmp`, `${JSON.stringify(state, null, 2)}\n`, {mode: 0o600})
    await rename(`${file}.tmp`, file)
  }
}

export function instanceBusy(name: string, existing?: InstanceEntry): AegisError {
  return new AegisError(
    `an instance named ${name} is already running${existing ? ` (pid ${existing.pid}, kit ${existing.kit})` : ''}`,
    {
      hint: `stop it with aegis-kit stop ${name}, or pick another name with --name`,
    },
  )
}

/** The start time of `pid` (field 22 of /proc/PID/stat), or undefined where there is no /proc. */
/**
 * Stops a running instance the way Ctrl-C does: SIGTERM to the process that owns its VM (which
 * gives the workload a grace period, then powers off), SIGKILL to that process if it outlives
 * `timeoutMs` (its VM, gvproxy and virtiofsd die with it). Resolves with the final record.
 */
export async function stopInstance(
  registry: InstanceRegistry,
  name: string,
  timeoutMs: number,
): Promise<InstanceEntry> {
  const entry = await registry.get(name)
  if (!entry.alive) return entry
  signal(entry.pid, 'SIGTERM')
  const deadline = Date.now() + timeoutMs
  while (processAlive(entry.pid, entry.pidStart) && Date.now() < deadline) await sleep(100)
  if (processAlive(entry.pid, entry.pidStart)) {
    signal(entry.pid, 'SIGKILL')
    while (processAlive(entry.pid, entry.pidStart)) await sleep(100)
    await registry.update(name, {
      status: 'exited',
      message: `${name}: killed after ${Math.round(timeoutMs / 1000)}s without stopping`,
    })
  }
  return (await registry.read(name)) ?? entry
}

function signal(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name)
  } catch {
    // gone meanwhile
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
