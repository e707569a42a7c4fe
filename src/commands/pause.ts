import {Args} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {defaultDataDir} from '../paths.js'
import {InstanceRegistry} from '../runner/instances.js'
import type {LifeStatus} from '../runner/lifecycle.js'
import {callSupervisor, supervisorSocketOf} from '../runner/supervisor-api.js'

export default class Pause extends BaseCommand {
  static override summary = 'Pause a running instance: its vCPUs stop, its memory stays.'
  static override description =
    `The VM stops using CPU until it is resumed: by \`aegis-kit resume\`, by a connection to one
of its exposed ports (which is answered), or by a lease. Instances also pause by themselves after
their idle_timeout without activity (see docs/manifest.md, idle_policy).`

  static override examples = [{description: 'Pause openclaw', command: '<%= config.bin %> <%= command.id %> openclaw'}]
  static override enableJsonFlag = true
  static override args = {name: Args.string({description: 'Instance name (see aegis-kit ps).', required: true})}

  async run(): Promise<LifeStatus> {
    const {args} = await this.parse(Pause)
    const socket = await supervisorSocketOf(InstanceRegistry.forDataDir(defaultDataDir()), args.name)
    const status = await callSupervisor(socket, args.name, 'POST', '/v1/pause')
    this.log(`${args.name} is ${status.state}`)
    return status
  }
}
