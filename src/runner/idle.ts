/**
 * When an instance is idle, with Aegis's rules (so a kit sleeps and wakes the same on both): the
 * guest harness samples activity every ~5 s (established TCP connections, the workload's CPU
 * time, network bytes); any connection, any CPU time or more than 512 bytes of traffic since the
 * last sample is activity, and so is a connection arriving on an exposed port. After
 * `idle_timeout` (default 60 s) without activity the instance pauses; after a further stop window
 * (default 5 min) paused, its VM stops to free the memory. `idle_policy: leases_only` ignores
 * the sampled activity: only leases and inbound connections keep it awake. A held lease keeps it
 * awake under either policy; `always_on` never pauses. A kit that says
 * `networking.long_lived_connections: false` holds no connection it needs kept alive: an open but
 * silent connection then does not count, so a browser's keep-alive connection does not keep the
 * instance awake (bytes on it wake the instance again: src/runner/port-relay.ts).
 */
import type {HeartbeatSample} from '../guest/index.js'
import type {AegisKitManifest, Profile} from '../kit/manifest.generated.js'
import {parseDuration} from '../kit/units.js'

export interface IdleRules {
  /** `default`: sampled activity counts; `leases_only`: only leases and inbound connections do. */
  mode: 'default' | 'leases_only'
  idleTimeoutMs: number
  /** Paused this long, the VM stops; the next connection boots it again. */
  stopAfterMs: number
  alwaysOn: boolean
  /** An established TCP connection in the guest counts as activity (`networking.long_lived_connections`, default true). */
  connectionsKeepAwake: boolean
}

export const DEFAULT_IDLE_TIMEOUT_MS = 60_000
export const DEFAULT_STOP_AFTER_MS = 5 * 60_000
/** Traffic below this per sample is background noise (ARP, keepalives): Aegis's threshold. */
export const NET_BYTES_THRESHOLD = 512

/** How often the guest samples activity: Aegis's 5 s, or often enough for a short idle_timeout. */
export function heartbeatIntervalMs(rules: IdleRules): number {
  return Math.max(1000, Math.min(5000, Math.floor(rules.idleTimeoutMs / 2)))
}

/** The profile's word first, then the kit's policies, then Aegis's defaults. */
export function idleRulesOf(
  manifest: AegisKitManifest,
  profile: Profile | undefined,
  stopAfterMs = DEFAULT_STOP_AFTER_MS,
): IdleRules {
  const timeout = profile?.idle_timeout ?? manifest.policies?.idle_timeout
  return {
    mode: profile?.idle_policy ?? manifest.policies?.idle_policy ?? 'default',
    // validate has checked that a duration parses.
    idleTimeoutMs: (timeout === undefined ? undefined : parseDuration(timeout)) ?? DEFAULT_IDLE_TIMEOUT_MS,
    stopAfterMs,
    alwaysOn: profile?.always_on ?? false,
    connectionsKeepAwake: manifest.networking?.long_lived_connections ?? true,
  }
}

export interface Lease {
  id: string
  /** Who asked: `host` (aegis-kit keepalive) or `guest` (the workload, through the guest API). */
  holder: 'host' | 'guest'
  reason?: string
  expiresAt: number
}

/**
 * The idle clock of one instance. Fed heartbeats, inbound connections and leases; asked whether
 * it should be paused now. Time comes from `now()` so tests can drive it.
 */
export class IdleClock {
  private lastActiveAt: number
  private previous: HeartbeatSample | undefined
  private readonly leases = new Map<string, Lease>()
  /** What last counted as activity, for the log ("a connection to :8080"). */
  lastActivity = 'start'

  constructor(
    readonly policy: IdleRules,
    private readonly now: () => number = Date.now,
  ) {
    this.lastActiveAt = now()
  }

  /** A heartbeat; the first after a boot or resume is only the baseline of the next deltas. */
  heartbeat(sample: HeartbeatSample): void {
    const previous = this.previous
    this.previous = sample
    if (!previous || this.policy.mode === 'leases_only') return
    const cpuMs = sample.cpuMs - previous.cpuMs
    const netBytes = sample.netBytes - previous.netBytes
    if (sample.tcpEstablished > 0 && this.policy.connectionsKeepAwake)
      this.active(`${sample.tcpEstablished} open connection(s) in the guest`)
    else if (cpuMs > 0) this.active(`${cpuMs} ms of workload CPU`)
    else if (netBytes > NET_BYTES_THRESHOLD) this.active(`${netBytes} bytes of network traffic`)
  }

  /** The VM was paused or stopped: counters restart or stand still, so the next sample is a new baseline. */
  resetBaseline(): void {
    this.previous = undefined
  }

  active(what: string): void {
    this.lastActiveAt = this.now()
    this.lastActivity = what
  }

  keepalive(lease: Omit<Lease, 'expiresAt'> & {ttlMs: number}): Lease {
    const {ttlMs, ...rest} = lease
    const held: Lease = {...rest, expiresAt: this.now() + ttlMs}
    this.leases.set(held.id, held)
    return held
  }

  /** Ends a lease: the idle timeout runs from now, as Aegis does. */
  release(id: string): boolean {
    const had = this.leases.delete(id)
    if (had) this.active(`lease ${id} released`)
    return had
  }

  /** Live leases; expired ones are dropped, and their end counts as the last activity. */
  liveLeases(): Lease[] {
    const now = this.now()
    for (const [id, lease] of this.leases) {
      if (lease.expiresAt > now) continue
      this.leases.delete(id)
      if (lease.expiresAt > this.lastActiveAt) {
        this.lastActiveAt = lease.expiresAt
        this.lastActivity = `lease ${id} expired`
      }
    }
    return [...this.leases.values()]
  }

  idleMs(): number {
    return this.liveLeases().length > 0 ? 0 : Math.max(0, this.now() - this.lastActiveAt)
  }

  shouldPause(): boolean {
    return !this.policy.alwaysOn && this.idleMs() >= this.policy.idleTimeoutMs
  }
}
