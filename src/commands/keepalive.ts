import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {AegisError} from '../errors.js'
import {parseDuration} from '../kit/units.js'
import {defaultDataDir} from '../paths.js'
import {InstanceRegistry} from '../runner/instances.js'
import {MAX_LEASE_MS} from '../runner/json-http.js'
import type {LifeStatus} from '../runner/lifecycle.js'
import {callSupervisor, supervisorSocketOf} from '../runner/supervisor-api.js'

export default class Keepalive extends BaseCommand {
  static override summary = 'Keep an instance awake for a while (a host lease), or end the lease.'
  static override description =
    `While a lease is held the instance is not paused for idleness, whatever its idle_policy; a
paused instance is woken. The host holds one lease per instance: each call replaces it. The
guest's own lease (POST /v1/self/keepalive) is separate. When the lease ends, the idle timeout
runs from then.`

  static override examples = [
    {
      description: 'Keep openclaw awake for 10 minutes',
      command: '<%= config.bin %> <%= command.id %> openclaw --ttl 10m --reason "long import"',
    },
    {description: 'End the lease', command: '<%= config.bin %> <%= command.id %> openclaw --release'},
  ]

  static override enableJsonFlag = true
  static override args = {name: Args.string({description: 'Instance name (see aegis-kit ps).', required: true})}
  static override flags = {
    ttl: Flags.string({description: 'How long the lease lasts (e.g. 90s, 10m, 2h).', default: '10m'}),
    reason: Flags.string({description: 'Why, for the instance log and ps.'}),
    release: Flags.boolean({description: 'End the host lease now.', exclusive: ['reason']}),
  }

  async run(): Promise<LifeStatus> {
    const {args, flags} = await this.parse(Keepalive)
    const ttlMs = parseDuration(flags.ttl)
    if (!flags.release && (ttlMs === undefined || ttlMs <= 0 || ttlMs > MAX_LEASE_MS))
      throw new AegisError(`--ttl ${flags.ttl} is not a duration of up to a day`, {hint: 'e.g. 90s, 10m or 2h'})
    const socket = await supervisorSocketOf(InstanceRegistry.forDataDir(defaultDataDir()), args.name)
    const status = flags.release
      ? await callSupervisor(socket, args.name, 'DELETE', '/v1/keepalive')
      : await callSupervisor(socket, args.name, 'POST', '/v1/keepalive', {ttl_ms: ttlMs, reason: flags.reason})
    this.log(
      !flags.release
        ? `${args.name} is kept awake for ${flags.ttl}`
        : status.rules.idlePausing
          ? `${args.name}: lease released; it pauses after ${Math.round(status.rules.idleTimeoutMs / 1000)} s without activity`
          : `${args.name}: lease released`,
    )
    return status
  }
}
