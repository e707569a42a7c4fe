import {mkdir, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {confirmTrust, trustFlag} from '../../cli/trust.js'
import {loadKit} from '../../kit/kit.js'
import {maskSecrets, parseSecretFlag, resolveSecrets} from '../../kit/secrets.js'
import {buildAppContext, readConfigFile, renderEnv} from '../../hooks/operations.js'
import {checkConfigOrThrow} from '../../hooks/check-config.js'
import {printable} from '../../printable.js'

export default class HooksRenderEnv extends BaseCommand {
  static override summary = "Run the kit's render_env hook: the environment and files an instance gets."
  static override description =
    `Runs render_env(app, secrets) in a separate Node process, the way \`aegis-kit run\` does before
booting, and prints the environment and files it renders. Secret values are read from your
environment (--secret NAME, or --secret NAME=OTHER_VAR) and are masked in everything printed;
secrets the kit marks as generated get fresh random values. --output writes the rendered files
(with real values, secret files mode 0600) under a directory, at their paths inside the instance.`

  static override examples = [
    {
      description: 'Render OpenClaw with an Anthropic key from your environment',
      command: 'ANTHROPIC_API_KEY=sk-ant-… <%= config.bin %> <%= command.id %> openclaw --secret ANTHROPIC_API_KEY',
    },
    {
      description: 'Render the bot profile, key taken from another variable, as JSON',
      command: '<%= config.bin %> <%= command.id %> openclaw --profile bot --secret ANTHROPIC_API_KEY=MY_KEY --json',
    },
    {
      description: 'Write the rendered files under ./rendered',
      command: '<%= config.bin %> <%= command.id %> openclaw --output ./rendered',
    },
  ]

  static override args = {
    kit: Args.string({description: 'Kit name, kit directory, or aegis-kit.yaml file.', required: true}),
  }

  static override flags = {
    secret: Flags.string({
      description: 'Pass a declared secret: NAME (value from $NAME) or NAME=SOURCE_ENV. Repeatable.',
      multiple: true,
      default: [],
    }),
    profile: Flags.string({description: 'Instance profile (e.g. bot, work).'}),
    config: Flags.string({description: "App config file (JSON or YAML) merged over the kit's config."}),
    instance: Flags.string({description: 'Instance name passed to the hook.'}),
    output: Flags.string({char: 'o', description: 'Write the rendered files under this directory.'}),
    trust: trustFlag,
  }

  static override enableJsonFlag = true

  async run(): Promise<unknown> {
    const {args, flags} = await this.parse(HooksRenderEnv)
    const kit = await loadKit(args.kit)
    await confirmTrust(kit, flags.trust)
    const userConfig = flags.config ? await readConfigFile(flags.config) : undefined
    const app = buildAppContext(kit, {profile: flags.profile, instance: flags.instance, config: userConfig})
    const secrets = resolveSecrets(kit, flags.secret.map(parseSecretFlag), {profile: flags.profile})
    const secretValues = Object.values(secrets)
    if (userConfig) await checkConfigOrThrow(kit, app)
    const rendered = await renderEnv(kit, app, secrets)

    if (flags.output) {
      for (const file of rendered.files) {
        const target = path.join(path.resolve(flags.output), file.path)
        await mkdir(path.dirname(target), {recursive: true, mode: 0o700})
        await writeFile(target, file.content, {mode: file.mode})
      }
    }

    const masked = {
      kit: kit.manifest.name,
      profile: flags.profile ?? null,
      env: Object.fromEntries(
        Object.entries(rendered.env).map(([name, value]) => [name, maskSecrets(value, secretValues)]),
      ),
      files: rendered.files.map((file) => ({
        path: file.path,
        mode: `0${file.mode.toString(8)}`,
        secret: file.secret,
        size: Buffer.byteLength(file.content),
        content: maskSecrets(file.content, secretValues),
      })),
      warnings: rendered.warnings.map((warning) => maskSecrets(warning, secretValues)),
      urls: rendered.urls,
    }
    if (this.jsonEnabled()) return masked

    this.log(`render_env for ${kit.manifest.name}${flags.profile ? ` (profile ${flags.profile})` : ''}:`)
    this.log('environment:')
    // Names, values and paths are the hook's text: shown with their control characters escaped.
    for (const [name, value] of Object.entries(masked.env)) this.log(`  ${printable(name)}=${printable(value)}`)
    this.log(masked.files.length > 0 ? 'files:' : 'files: none')
    for (const file of masked.files)
      this.log(
        `  ${printable(file.path)}  ${file.mode}  ${file.size} bytes${file.secret ? '  (secret)' : ''}${flags.output ? `  → ${printable(path.join(flags.output, file.path))}` : ''}`,
      )
    for (const warning of masked.warnings) this.warn(warning)
    return masked
  }
}
