import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {followLog} from '../runner/logs.js'
import {InstanceRegistry} from '../runner/instances.js'
import {defaultDataDir} from '../paths.js'

export default class Logs extends BaseCommand {
  static override summary = "Print a detached instance's output."
  static override description =
    `Prints what the instance started with \`aegis-kit run --detach\` has written: aegis-kit's
progress lines and the workload's console, secrets masked. With --follow, keeps printing new
output until the instance exits or you press Ctrl-C.`

  static override examples = [
    {description: 'The whole log', command: '<%= config.bin %> <%= command.id %> openclaw'},
    {
      description: 'The last 20 lines, then follow',
      command: '<%= config.bin %> <%= command.id %> openclaw --tail 20 -f',
    },
  ]

  static override args = {
    name: Args.string({description: 'Instance name (see aegis-kit ps).', required: true}),
  }

  static override flags = {
    follow: Flags.boolean({char: 'f', description: 'Keep printing new output until the instance exits.'}),
    tail: Flags.integer({description: 'Start with only the last N lines.', min: 0}),
  }

  async run(): Promise<void> {
    const {args, flags} = await this.parse(Logs)
    const registry = InstanceRegistry.forDataDir(defaultDataDir())
    const controller = new AbortController()
    const stop = () => controller.abort()
    process.once('SIGINT', stop)
    try {
      await followLog(registry, args.name, {
        follow: flags.follow,
        tail: flags.tail,
        signal: controller.signal,
        write: (text) => process.stdout.write(text),
      })
    } finally {
      process.off('SIGINT', stop)
    }
  }
}
