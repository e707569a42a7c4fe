import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {AegisError} from '../errors.js'
import {parseDuration} from '../kit/units.js'
import {defaultDataDir} from '../paths.js'
import {InstanceRegistry} from '../runner/instances.js'
import {removeInstance, type Removed} from '../runner/remove.js'

export default class Rm extends BaseCommand {
  static override summary = 'Remove instances: their records, and their workspaces if asked.'
  static override description =
    `Removes each named instance's record, so that \`ps --all\` no longer lists it and its name is
free. A running instance is an error unless --force, which stops it first as \`stop\` does. The
workspace is kept (a new \`run --name NAME\` finds it again) unless --workspace, which deletes it
and the secrets generated for it; a workspace given with \`run --workspace\` is never deleted.
Instances it spawned through its guest API go with it (stopped first with --force).`

  static override examples = [
    {description: 'Forget an exited instance', command: '<%= config.bin %> <%= command.id %> openclaw'},
    {
      description: 'Stop it if it runs, and delete its workspace too',
      command: '<%= config.bin %> <%= command.id %> --force --workspace openclaw',
    },
  ]

  static override strict = false
  static override enableJsonFlag = true

  static override args = {
    name: Args.string({description: 'Instance name (see aegis-kit ps --all). Several may be given.', required: true}),
  }

  static override flags = {
    force: Flags.boolean({char: 'f', description: 'Stop a running instance first.'}),
    workspace: Flags.boolean({description: "Also delete the instance's workspace (one aegis-kit made)."}),
    timeout: Flags.string({
      description: 'With --force: how long to wait for a clean stop before killing the instance.',
      default: '30s',
    }),
  }

  async run(): Promise<{removed: Removed[]}> {
    const {argv, flags} = await this.parse(Rm)
    const stopTimeoutMs = parseDuration(flags.timeout)
    if (stopTimeoutMs === undefined)
      throw new AegisError(`--timeout ${flags.timeout} is not a duration`, {hint: 'e.g. 30s or 2m'})
    const dataDir = defaultDataDir()
    const registry = InstanceRegistry.forDataDir(dataDir)
    const removed: Removed[] = []
    for (const name of argv as string[]) {
      const done = await removeInstance(registry, dataDir, name, {
        force: flags.force,
        workspace: flags.workspace,
        stopTimeoutMs,
      })
      removed.push(done)
      this.log(
        `removed ${name}${done.stopped ? ' (stopped first)' : ''}${done.children.length > 0 ? `, and its child instances ${done.children.join(', ')}` : ''}${done.workspaceRemoved ? `, and its workspace ${done.workspaceRemoved}` : ''}`,
      )
    }
    return {removed}
  }
}
