import {Args} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {defaultDataDir} from '../paths.js'
import {InstanceRegistry} from '../runner/instances.js'
import type {LifeStatus} from '../runner/lifecycle.js'
import {callSupervisor, supervisorSocketOf} from '../runner/supervisor-api.js'

export default class Resume extends BaseCommand {
  static override summary = 'Resume a paused instance.'
  static override description =
    `Its vCPUs run again where they stopped (a connection to an exposed port does the same by
itself). The idle clock starts again from now.`

  static override examples = [{description: 'Resume openclaw', command: '<%= config.bin %> <%= command.id %> openclaw'}]
  static override enableJsonFlag = true
  static override args = {name: Args.string({description: 'Instance name (see aegis-kit ps).', required: true})}

  async run(): Promise<LifeStatus> {
    const {args} = await this.parse(Resume)
    const socket = await supervisorSocketOf(InstanceRegistry.forDataDir(defaultDataDir()), args.name)
    const status = await callSupervisor(socket, args.name, 'POST', '/v1/resume')
    this.log(`${args.name} is ${status.state}`)
    return status
  }
}
