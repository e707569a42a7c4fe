/**
 * An instance's life after its first boot, run by its supervisor (the `run` process, foreground
 * or detached): it pauses the VM when the idle clock says so, resumes it when a connection or a
 * command asks, and says every transition in the instance's log and state record. The rules of
 * idleness are idle.ts's; the VM's pause and resume are QMP's (guest/qmp.ts).
 */
import {messageOf} from '../errors.js'
import type {ExecRequest, ExecSession, RunningVm} from '../guest/index.js'
import {IdleClock, type IdleRules, type Lease} from './idle.js'

export type LifeState = 'running' | 'paused'

/** What `ps` and the supervisor API show of an instance's life. */
export interface LifeStatus {
  state: LifeState
  /** Milliseconds without activity (0 while a lease is held). */
  idleMs: number
  leases: Array<Pick<Lease, 'id' | 'holder' | 'reason'> & {expiresInMs: number}>
  /** How many times the VM was paused, and woken. */
  pauses: number
  /** The idle rules in force; `idlePausing` false when the guest sends no activity samples. */
  rules: IdleRules & {idlePausing: boolean}
}

export interface LifecycleOptions {
  vm: RunningVm
  rules: IdleRules
  /** A line in the instance's log. */
  log(message: string): void
  /** The state changed: for the instance's record. */
  onState?(state: LifeState): void
  /** Time, for tests. */
  now?: () => number
  /** How often the idle clock is looked at. */
  checkEveryMs?: number
}

export class InstanceLifecycle {
  private state: LifeState = 'running'
  private readonly clock: IdleClock
  private readonly timer: NodeJS.Timeout
  private readonly unsubscribe: () => void
  /** Whether the guest has sent an activity sample: a harness too old to send them is never paused for idleness. */
  private sampled = false
  private transition: Promise<void> = Promise.resolve()
  private pauses = 0
  private readonly now: () => number

  constructor(private readonly options: LifecycleOptions) {
    this.now = options.now ?? Date.now
    this.clock = new IdleClock(options.rules, this.now)
    this.unsubscribe = options.vm.onHeartbeat((sample) => {
      this.sampled = true
      if (this.state === 'running') this.clock.heartbeat(sample)
    })
    this.timer = setInterval(() => this.check(), options.checkEveryMs ?? 1000)
    this.timer.unref()
  }

  /** Pausing for idleness needs the guest's activity samples: without them a busy workload would be frozen. */
  get idlePausing(): boolean {
    return this.sampled && !this.options.rules.alwaysOn
  }

  status(): LifeStatus {
    const now = this.now()
    return {
      state: this.state,
      idleMs: this.clock.idleMs(),
      leases: this.clock.liveLeases().map(({id, holder, reason, expiresAt}) => ({
        id,
        holder,
        ...(reason ? {reason} : {}),
        expiresInMs: expiresAt - now,
      })),
      pauses: this.pauses,
      rules: {...this.options.rules, idlePausing: this.idlePausing},
    }
  }

  /** Activity from outside the guest (a connection on an exposed port, an exec): the idle clock restarts. */
  touch(what: string): void {
    this.clock.active(what)
  }

  /** Running again, if it was paused; `why` goes to the log ("a connection to :8080"). */
  async wake(why: string): Promise<void> {
    this.clock.active(why)
    await this.serially(async () => {
      if (this.state !== 'paused') return
      const started = this.now()
      await this.options.vm.resume()
      this.clock.resetBaseline()
      this.setState('running')
      this.options.log(`woken by ${why} (resumed in ${this.now() - started} ms)`)
    })
  }

  /** Paused now (the `pause` command); it wakes on the next connection or `resume`. */
  async pause(why: string): Promise<void> {
    await this.serially(async () => {
      if (this.state !== 'running') return
      await this.options.vm.pause()
      this.pauses++
      this.setState('paused')
      this.options.log(`paused ${why}`)
    })
  }

  /**
   * Runs a command in the guest, waking it first; the session counts as activity while it
   * lasts, so an instance is never paused under a user's `exec`.
   */
  async exec(request: ExecRequest): Promise<ExecSession> {
    await this.wake('an exec')
    const session = this.options.vm.exec(request)
    const busy = setInterval(() => this.clock.active('an exec session'), 1000)
    const done = () => {
      clearInterval(busy)
      this.clock.active('an exec session')
    }
    session.exit.then(done, done)
    return session
  }

  keepalive(lease: {id: string; holder: Lease['holder']; ttlMs: number; reason?: string}): Lease {
    const held = this.clock.keepalive(lease)
    this.options.log(
      `lease ${lease.id} held for ${Math.round(lease.ttlMs / 1000)} s${lease.reason ? ` (${lease.reason})` : ''}`,
    )
    // A lease on a paused instance means someone wants it awake.
    if (this.state === 'paused') void this.wake(`lease ${lease.id}`).catch(() => undefined)
    return held
  }

  release(id: string): boolean {
    const had = this.clock.release(id)
    if (had) this.options.log(`lease ${id} released`)
    return had
  }

  close(): void {
    clearInterval(this.timer)
    this.unsubscribe()
  }

  private check(): void {
    if (this.state !== 'running' || !this.idlePausing || !this.clock.shouldPause()) return
    const idleSeconds = Math.round(this.clock.idleMs() / 1000)
    this.pause(`after ${idleSeconds} s idle (last activity: ${this.clock.lastActivity})`).catch((error: unknown) =>
      this.options.log(`could not pause: ${messageOf(error)}`),
    )
  }

  private setState(state: LifeState): void {
    this.state = state
    this.options.onState?.(state)
  }

  /** One transition at a time: a wake that arrives during a pause waits for it, then resumes. */
  private serially(action: () => Promise<void>): Promise<void> {
    const next = this.transition.then(action)
    this.transition = next.catch(() => undefined)
    return next
  }
}
