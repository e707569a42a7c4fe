import {Args} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {validateKit} from '../kit/kit.js'
import {formatProblem} from '../kit/problems.js'
import {formatUnhonouredFieldWarning, type UnhonouredFieldWarning} from '../kit/unhonoured.js'

function printWarnings(warnings: UnhonouredFieldWarning[]): void {
  for (const warning of warnings) process.stderr.write(`${formatUnhonouredFieldWarning(warning)}\n`)
}

export default class Validate extends BaseCommand {
  static override summary = 'Check a kit manifest (aegis-kit.yaml) and the files it names.'
  static override description =
    `Checks the manifest against the aegis-kit JSON Schema (schemas/aegis-kit.schema.json) and
the rules a schema cannot express: exposed ports unique, secret names usable as environment
variables, sizes that parse, hook files present, profiles using only declared secrets.
Each problem names file:line:column, the field, what was expected, and a hint. Exit 1 on any problem.
Fields the manifest sets that aegis-kit accepts but does not act on yet (docs/manifest.md marks
them) are warnings: located the same way, printed on stderr, never a failure.

KIT is a kit name (looked up in ./kits and in the kits bundled with aegis-kit), a kit directory,
or a manifest file; the default is the current directory.`

  static override examples = [
    {description: 'Validate the bundled OpenClaw kit', command: '<%= config.bin %> <%= command.id %> openclaw'},
    {description: 'Validate the kit in the current directory', command: '<%= config.bin %> <%= command.id %>'},
    {
      description: 'Validate a manifest file and get the result as JSON',
      command: '<%= config.bin %> <%= command.id %> ./my-kit/aegis-kit.yaml --json',
    },
  ]

  static override args = {
    kit: Args.string({
      description: 'Kit name, kit directory, or aegis-kit.yaml file (default: current directory).',
      required: false,
    }),
  }

  static override enableJsonFlag = true

  async run(): Promise<{
    valid: boolean
    file: string
    name?: string
    version?: string
    problems: object[]
    warnings: object[]
  }> {
    const {args} = await this.parse(Validate)
    const result = await validateKit(args.kit)
    const file = result.location.displayFile
    const {warnings} = result
    if (result.manifest) {
      if (!this.jsonEnabled()) printWarnings(warnings)
      this.log(`${file}: valid kit ${result.manifest.name} ${result.manifest.version}`)
      return {valid: true, file, name: result.manifest.name, version: result.manifest.version, problems: [], warnings}
    }
    if (this.jsonEnabled()) {
      this.logJson({valid: false, file, problems: result.problems, warnings})
    } else {
      // Problems first: they are why the kit is refused.
      for (const problem of result.problems) process.stderr.write(`${formatProblem(problem)}\n`)
      printWarnings(warnings)
      process.stderr.write(`${file}: ${result.problems.length} problem${result.problems.length === 1 ? '' : 's'}\n`)
    }
    this.exit(1)
    return {valid: false, file, problems: result.problems, warnings}
  }
}
