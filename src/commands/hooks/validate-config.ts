import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {confirmTrust, trustFlag} from '../../cli/trust.js'
import {loadKit} from '../../kit/kit.js'
import {buildAppContext, readConfigFile, validateConfig} from '../../hooks/operations.js'

export default class HooksValidateConfig extends BaseCommand {
  static override summary = "Run the kit's validate_config hook on an app config file."
  static override description =
    `Runs validate_config(app_config, app) in a separate Node process on CONFIG (JSON or YAML), merged
over the kit's own config the way \`aegis-kit run --config\` merges it. Prints "ok" or each
problem with its path; exit 1 when there are problems.`

  static override examples = [
    {
      description: 'Check an OpenClaw config before running with it',
      command: '<%= config.bin %> <%= command.id %> openclaw ./openclaw.json',
    },
    {
      description: 'The same, for the bot profile, as JSON',
      command: '<%= config.bin %> <%= command.id %> openclaw ./openclaw.json --profile bot --json',
    },
  ]

  static override args = {
    kit: Args.string({description: 'Kit name, kit directory, or aegis-kit.yaml file.', required: true}),
    config: Args.string({description: 'App config file (JSON or YAML).', required: true}),
  }

  static override flags = {
    profile: Flags.string({description: 'Instance profile whose ports and resources the check uses.'}),
    trust: trustFlag,
  }

  static override enableJsonFlag = true

  async run(): Promise<unknown> {
    const {args, flags} = await this.parse(HooksValidateConfig)
    const kit = await loadKit(args.kit)
    await confirmTrust(kit, flags.trust)
    const config = await readConfigFile(args.config)
    const app = buildAppContext(kit, {profile: flags.profile, config})
    const result = await validateConfig(kit, app.config, app)
    if (this.jsonEnabled()) {
      this.logJson({config: args.config, ...result})
    } else if (result.ok) {
      this.log(`${args.config}: ok for kit ${kit.manifest.name}`)
    } else {
      for (const problem of result.problems)
        process.stderr.write(`${args.config}: ${problem.path || '(config)'}: ${problem.message}\n`)
    }
    if (!result.ok) this.exit(1)
    return undefined
  }
}
