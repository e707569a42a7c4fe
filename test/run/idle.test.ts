// The idle rules on their own, with a clock the test drives: what counts as activity under
// `networking.long_lived_connections` (the VM test is in lifecycle.test.ts).
import {describe, expect, it} from 'vitest'
import type {AegisKitManifest} from '../../src/kit/manifest.generated.js'
import {IdleClock, idleRulesOf} from '../../src/runner/idle.js'

const manifest = (networking?: AegisKitManifest['networking']): AegisKitManifest => ({
  name: 'k',
  version: '1.0.0',
  policies: {idle_timeout: '5s'},
  ...(networking ? {networking} : {}),
})

/** A clock fed a baseline and then a sample with one silent open connection, 6 s later. */
function afterSilentConnection(rules: ReturnType<typeof idleRulesOf>): IdleClock {
  let now = 1_000_000
  const clock = new IdleClock(rules, () => now)
  clock.heartbeat({tcpEstablished: 1, cpuMs: 100, netBytes: 2000, atMs: now})
  now += 6000
  clock.heartbeat({tcpEstablished: 1, cpuMs: 100, netBytes: 2000, atMs: now})
  return clock
}

describe('idle rules', () => {
  it('an open connection keeps an instance awake unless the kit says long_lived_connections: false', () => {
    expect(idleRulesOf(manifest(), undefined).connectionsKeepAwake).toBe(true)
    expect(idleRulesOf(manifest({long_lived_connections: true}), undefined).connectionsKeepAwake).toBe(true)
    expect(idleRulesOf(manifest({long_lived_connections: false}), undefined).connectionsKeepAwake).toBe(false)

    const keeping = afterSilentConnection(idleRulesOf(manifest(), undefined))
    expect(keeping.shouldPause()).toBe(false)
    expect(keeping.lastActivity).toBe('1 open connection(s) in the guest')

    const brief = afterSilentConnection(idleRulesOf(manifest({long_lived_connections: false}), undefined))
    expect(brief.shouldPause()).toBe(true)
    expect(brief.lastActivity).toBe('start')
  })
})
