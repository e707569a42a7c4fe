import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {parseDuration} from '../kit/units.js'
import {AegisError} from '../errors.js'
import {InstanceRegistry, stopInstance, type InstanceEntry} from '../runner/instances.js'
import {defaultDataDir} from '../paths.js'

export default class Stop extends BaseCommand {
  static override summary = 'Stop running kit instances.'
  static override description =
    `Stops each named instance the way Ctrl-C stops \`aegis-kit run\`: SIGTERM to the workload, a
grace period (10 s), then power off; no qemu, gvproxy or virtiofsd is left behind. Stopping an
instance that is not running is not an error.`

  static override examples = [
    {
      description: 'Stop the instance started with run openclaw --detach',
      command: '<%= config.bin %> <%= command.id %> openclaw',
    },
  ]

  static override strict = false
  static override enableJsonFlag = true

  static override args = {
    name: Args.string({description: 'Instance name (see aegis-kit ps). Several may be given.', required: true}),
  }

  static override flags = {
    timeout: Flags.string({
      description: 'How long to wait for a clean stop before killing the instance.',
      default: '30s',
    }),
  }

  async run(): Promise<{stopped: InstanceEntry[]}> {
    const {argv, flags} = await this.parse(Stop)
    const timeoutMs = parseDuration(flags.timeout)
    if (timeoutMs === undefined)
      throw new AegisError(`--timeout ${flags.timeout} is not a duration`, {hint: 'e.g. 30s or 2m'})
    const registry = InstanceRegistry.forDataDir(defaultDataDir())
    const stopped: InstanceEntry[] = []
    for (const name of argv as string[]) {
      const before = await registry.get(name)
      const after = await stopInstance(registry, name, timeoutMs)
      stopped.push(after)
      if (!before.alive) this.log(`${name} is not running`)
      else this.log(after.message ?? `stopped ${name}`)
    }
    return {stopped}
  }
}
