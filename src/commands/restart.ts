import {Args} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {defaultDataDir} from '../paths.js'
import {InstanceRegistry} from '../runner/instances.js'
import type {LifeStatus} from '../runner/lifecycle.js'
import {callSupervisor, supervisorSocketOf} from '../runner/supervisor-api.js'

export default class Restart extends BaseCommand {
  static override summary = 'Restart an instance: its workload stops, a new VM boots.'
  static override description =
    `The workload gets SIGTERM and 10 s to end, as with \`stop\`; then a new VM boots with the same
name, ports and workspace (memory and the writable layer are new). Returns once the kit's
healthcheck answers. Connections that arrive meanwhile wait for it.`

  static override examples = [
    {description: 'Restart openclaw', command: '<%= config.bin %> <%= command.id %> openclaw'},
  ]

  static override enableJsonFlag = true
  static override args = {name: Args.string({description: 'Instance name (see aegis-kit ps).', required: true})}

  async run(): Promise<LifeStatus> {
    const {args} = await this.parse(Restart)
    const socket = await supervisorSocketOf(InstanceRegistry.forDataDir(defaultDataDir()), args.name)
    // A boot under software emulation takes minutes for a Node workload.
    const status = await callSupervisor(socket, args.name, 'POST', '/v1/restart', undefined, 600_000)
    this.log(`${args.name} restarted (${status.restarts} restart${status.restarts === 1 ? '' : 's'} so far)`)
    return status
  }
}
