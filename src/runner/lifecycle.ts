/**
 * An instance's life after its first boot, run by its supervisor (the `run` process, foreground
 * or detached). It owns the instance's current VM: pauses it when the idle clock says so, resumes
 * it when a connection or a command asks, stops it after the stop window paused (freeing its
 * memory) and boots a new one on the next connection, and boots a new one when the workload ends
 * and the restart policy says so. Every transition is a line in the instance's log and a change of
 * its record. The rules of idleness are idle.ts's; pause and resume are QMP's (guest/qmp.ts).
 */
import {AegisError, messageOf} from '../errors.js'
import type {ExecRequest, ExecSession, RunningVm, VmResult} from '../guest/index.js'
import {deferred} from '../undo-stack.js'
import {IdleClock, type IdleRules, type Lease} from './idle.js'

export type LifeState = 'running' | 'paused' | 'stopped'

/** docker's words: `no` (default), `on-failure` (a non-zero exit), `always` (any exit). */
export type RestartPolicy = 'no' | 'on-failure' | 'always'
export const RESTART_POLICIES: readonly RestartPolicy[] = ['no', 'on-failure', 'always']

/** What `ps` and the supervisor API show of an instance's life. */
export interface LifeStatus {
  state: LifeState
  /** Milliseconds without activity (0 while a lease is held). */
  idleMs: number
  leases: Array<Pick<Lease, 'id' | 'holder' | 'reason'> & {expiresInMs: number}>
  /** How many times the VM was paused. */
  pauses: number
  /** How many times a new VM was booted after the first: restarts and wakes from stopped. */
  boots: number
  restarts: number
  /** The idle rules in force; `idlePausing` false when the guest sends no activity samples. */
  rules: IdleRules & {idlePausing: boolean; restart: RestartPolicy}
}

export interface LifecycleOptions {
  vm: RunningVm
  rules: IdleRules
  /** `always_on` restarts a workload that ends as `always` does. */
  restart: RestartPolicy
  /** Boots a new VM with the same spec (the workspace is kept; memory and the writable layer are new). */
  boot(): Promise<RunningVm>
  /** Resolves once a newly booted VM serves (the kit's healthcheck), before connections reach it. */
  ready(vm: RunningVm): Promise<void>
  /** Each VM as it boots, the first included: to attach what is per VM (the guest API's tunnel). */
  onVm?(vm: RunningVm): void
  /** A line in the instance's log. */
  log(message: string): void
  /** Says how a VM ended, in one sentence. */
  describeEnd(result: VmResult): string
  /** The state changed: for the instance's record. */
  onState?(state: LifeState, counts: {boots: number; restarts: number}): void
  /** Time, for tests. */
  now?: () => number
  /** How often the idle clock is looked at. */
  checkEveryMs?: number
}

/** A workload that ran less than this before it ended is crashing: the next restart waits longer. */
const CRASH_WINDOW_MS = 10_000
const MAX_BACKOFF_MS = 30_000

export class InstanceLifecycle {
  private state: LifeState = 'running'
  private vm: RunningVm
  private readonly clock: IdleClock
  private readonly timer: NodeJS.Timeout
  private unsubscribe: () => void = () => {}
  /** Whether the guest has sent an activity sample: a harness too old to send them is never paused for idleness. */
  private sampled = false
  private transition: Promise<void> = Promise.resolve()
  private pauses = 0
  private boots = 0
  private restarts = 0
  private pausedAt = 0
  private bootedAt: number
  private backoffMs = 1000
  /** Why the current VM is being stopped: by the user (the instance ends) or for idleness (it sleeps). */
  private stopping: 'user' | 'idle' | undefined
  private lastResult: VmResult | undefined
  private readonly end = deferred<VmResult>()
  private readonly now: () => number

  constructor(private readonly options: LifecycleOptions) {
    this.now = options.now ?? Date.now
    this.clock = new IdleClock(options.rules, this.now)
    this.bootedAt = this.now()
    this.vm = options.vm
    this.attach(options.vm)
    this.timer = setInterval(() => this.check(), options.checkEveryMs ?? 1000)
    this.timer.unref()
  }

  /** How the instance ended: its last VM's outcome, once no VM will follow. */
  get result(): Promise<VmResult> {
    return this.end.promise
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
      boots: this.boots,
      restarts: this.restarts,
      rules: {...this.options.rules, idlePausing: this.idlePausing, restart: this.restartPolicy},
    }
  }

  /** Running again: resumed if paused, booted if stopped; `why` goes to the log ("a connection to :8080"). */
  async wake(why: string): Promise<void> {
    this.clock.active(why)
    await this.serially(async () => {
      if (this.stopping === 'user') throw new AegisError('the instance is stopping')
      if (this.state === 'paused') {
        const started = this.now()
        await this.vm.resume()
        this.clock.resetBaseline()
        this.setState('running')
        this.options.log(`woken by ${why} (resumed in ${this.now() - started} ms)`)
      } else if (this.state === 'stopped') {
        const started = this.now()
        this.options.log(`booting again for ${why}`)
        await this.bootAgain()
        this.options.log(`woken by ${why} (booted in ${((this.now() - started) / 1000).toFixed(1)} s)`)
      }
    })
  }

  /**
   * Bytes on a connection the relay holds open: activity, and a VM paused meanwhile (a kit whose
   * open connections do not keep it awake) resumes for them. Cheap while running: it is called for
   * every chunk.
   */
  traffic(why: string): void {
    this.clock.active(why)
    // A stopped VM took its connections with it; only a paused one still holds them.
    if (this.state !== 'paused' || this.stopping) return
    this.wake(why).catch((error: unknown) => this.options.log(`could not wake for ${why}: ${messageOf(error)}`))
  }

  /** Paused now (the `pause` command); it wakes on the next connection or `resume`. */
  async pause(why: string): Promise<void> {
    await this.serially(async () => {
      if (this.state !== 'running') return
      await this.vm.pause()
      this.pauses++
      this.pausedAt = this.now()
      this.setState('paused')
      this.options.log(`paused ${why}`)
    })
  }

  /** A new VM now (the `restart` command): the workload is stopped as `stop` does, then booted again. */
  async restart(graceMs: number): Promise<void> {
    await this.serially(async () => {
      if (this.stopping === 'user') throw new AegisError('the instance is stopping')
      if (this.state !== 'stopped') {
        this.stopping = 'idle' // not the instance's end: a VM follows
        await this.vm.stop(graceMs)
        this.stopping = undefined
      }
      this.restarts++
      this.options.log('restarting on request (aegis-kit restart)')
      const started = this.now()
      await this.bootAgain()
      this.options.log(`restarted (booted in ${((this.now() - started) / 1000).toFixed(1)} s)`)
    })
  }

  /** The instance's end (Ctrl-C, `stop`): its workload gets SIGTERM and `graceMs`, and no VM follows. */
  async stop(graceMs: number): Promise<VmResult> {
    this.stopping = 'user'
    // A VM that is not running has nothing to stop: the instance ends with the last VM's outcome.
    if (this.state === 'stopped') this.finish(this.lastResult)
    else await this.vm.stop(graceMs).catch(() => undefined)
    return this.end.promise
  }

  /**
   * Runs a command in the guest, waking it first; the session counts as activity while it
   * lasts, so an instance is never paused under a user's `exec`.
   */
  async exec(request: ExecRequest): Promise<ExecSession> {
    await this.wake('an exec')
    const session = this.vm.exec(request)
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
    // A lease on a sleeping instance means someone wants it awake.
    if (this.state !== 'running') void this.wake(`lease ${lease.id}`).catch(() => undefined)
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

  private get restartPolicy(): RestartPolicy {
    return this.options.rules.alwaysOn ? 'always' : this.options.restart
  }

  private attach(vm: RunningVm): void {
    this.unsubscribe()
    this.unsubscribe = vm.onHeartbeat((sample) => {
      this.sampled = true
      if (this.state === 'running') this.clock.heartbeat(sample)
    })
    this.options.onVm?.(vm)
    vm.result.then(
      (result) => {
        this.ended.add(vm)
        this.vmEnded(vm, result)
      },
      (error: unknown) => {
        this.ended.add(vm)
        this.vmFailed(vm, error)
      },
    )
  }

  /** VMs whose result has settled (and been handled by vmEnded or vmFailed). */
  private readonly ended = new WeakSet<RunningVm>()

  private async bootAgain(): Promise<void> {
    this.clock.resetBaseline()
    const vm = await this.options.boot()
    this.vm = vm
    this.boots++
    this.bootedAt = this.now()
    this.attach(vm)
    await this.options.ready(vm)
    this.clock.active('a boot')
    this.setState('running')
  }

  private vmEnded(vm: RunningVm, result: VmResult): void {
    if (vm !== this.vm) return
    this.lastResult = result
    if (this.stopping === 'user') {
      this.finish(result)
      return
    }
    if (this.stopping === 'idle') {
      this.stopping = undefined
      this.unsubscribe()
      this.setState('stopped')
      return
    }
    const policy = this.restartPolicy
    const restart = policy === 'always' || (policy === 'on-failure' && result.exitCode !== 0)
    if (!restart) {
      this.finish(result)
      return
    }
    // A workload that keeps crashing at once is restarted ever more slowly; one that ran a while, after 1 s.
    if (this.now() - this.bootedAt >= CRASH_WINDOW_MS) this.backoffMs = 1000
    const delayMs = this.backoffMs
    this.backoffMs = Math.min(this.backoffMs * 2, MAX_BACKOFF_MS)
    this.restarts++
    this.options.log(
      `${this.options.describeEnd(result)}; restarting in ${delayMs / 1000} s (restart ${this.restarts}, --restart ${policy})`,
    )
    this.setState('stopped')
    setTimeout(() => {
      if (this.stopping === 'user') this.finish(result)
      // A wake may have booted it meanwhile.
      else
        this.serially(async () => {
          if (this.state !== 'stopped') return
          const started = this.now()
          await this.bootAgain()
          this.options.log(`restarted (booted in ${((this.now() - started) / 1000).toFixed(1)} s)`)
        }).catch((error: unknown) => {
          // The workload ended again while its healthcheck was awaited: that end was handled as
          // any other (the next restart after the backoff, or the instance's end).
          if (!this.ended.has(this.vm)) this.vmFailed(this.vm, error)
        })
    }, delayMs)
  }

  private vmFailed(vm: RunningVm, error: unknown): void {
    if (vm !== this.vm) return
    this.options.log(`the VM failed: ${messageOf(error)}`)
    this.end.reject(error)
    this.close()
  }

  private finish(result: VmResult | undefined): void {
    this.close()
    if (result) this.end.resolve(result)
    else this.end.reject(new AegisError('the instance ended before its first VM did'))
  }

  private check(): void {
    if (this.state === 'paused' && this.now() - this.pausedAt >= this.options.rules.stopAfterMs) {
      this.stopIdle().catch((error: unknown) => this.options.log(`could not stop the paused VM: ${messageOf(error)}`))
      return
    }
    if (this.state !== 'running' || !this.idlePausing || !this.clock.shouldPause()) return
    const idleSeconds = Math.round(this.clock.idleMs() / 1000)
    this.pause(`after ${idleSeconds} s idle (last activity: ${this.clock.lastActivity})`).catch((error: unknown) =>
      this.options.log(`could not pause: ${messageOf(error)}`),
    )
  }

  /** Paused for the whole stop window: the VM goes, the instance sleeps on (its ports, name and workspace kept). */
  private async stopIdle(): Promise<void> {
    await this.serially(async () => {
      if (this.state !== 'paused' || this.stopping) return
      const minutes = (this.now() - this.pausedAt) / 60_000
      this.stopping = 'idle'
      this.options.log(
        `stopped after ${minutes < 1 ? `${Math.round(minutes * 60)} s` : `${minutes.toFixed(1)} min`} paused, to free its memory; the next connection boots it`,
      )
      await this.vm.stop(10_000)
    })
  }

  private setState(state: LifeState): void {
    this.state = state
    this.options.onState?.(state, {boots: this.boots, restarts: this.restarts})
  }

  /** One transition at a time: a wake that arrives during a pause waits for it, then resumes. */
  private serially(action: () => Promise<void>): Promise<void> {
    const next = this.transition.then(action)
    this.transition = next.catch(() => undefined)
    return next
  }
}
