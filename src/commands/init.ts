import path from 'node:path'
import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {scaffoldKit} from '../kit/scaffold.js'

export default class Init extends BaseCommand {
  static override summary = 'Create a new kit directory that validates as written.'
  static override description =
    `Writes NAME/aegis-kit.yaml, two hooks (render_env, validate_config) and a tiny Node.js HTTP
server as the workload: every part of a kit, ready to edit. It passes \`aegis-kit validate\`.`

  static override examples = [
    {description: 'Create ./my-agent', command: '<%= config.bin %> <%= command.id %> my-agent'},
    {
      description: 'Create it in kits/my-agent',
      command: '<%= config.bin %> <%= command.id %> my-agent --dir kits/my-agent',
    },
  ]

  static override args = {
    name: Args.string({description: 'Kit name: lower-case letters, digits and dashes.', required: true}),
  }

  static override flags = {
    dir: Flags.string({description: 'Directory to create (default: ./NAME).'}),
  }

  static override enableJsonFlag = true

  async run(): Promise<{name: string; dir: string; files: string[]}> {
    const {args, flags} = await this.parse(Init)
    const dir = path.resolve(flags.dir ?? args.name)
    const files = await scaffoldKit(args.name, dir)
    const shown = path.relative(process.cwd(), dir) || '.'
    this.log(`created kit ${args.name} in ${shown}: ${files.join(', ')}`)
    this.log(`next: aegis-kit validate ${shown}`)
    return {name: args.name, dir, files}
  }
}
