/**
 * Kits in another platform's format: `export KIT --format aegis` writes Aegis's kit file and instance
 * requests (src/kit-artifact/aegis-export.ts, docs/aegis-export.md).
 */
import path from 'node:path'
import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {loadKit} from '../kit/kit.js'
import {exportForAegis, formatLeftOutWarning, writeAegisExport} from '../kit-artifact/index.js'

export interface ExportReport {
  kit: string
  version: string
  format: 'aegis'
  /** The files written, absolute paths, sorted. */
  files: string[]
  /** Manifest fields Aegis has no equivalent for, left out (also printed as one warning line). */
  leftOut: string[]
}

export default class Export extends BaseCommand {
  static override summary = "Write a kit in another platform's format (Aegis's kit file and instance requests)."
  static override description =
    `Writes KIT in the format of Aegis (github.com/xfeldman/aegisvm) under DIR: kits/NAME.json, Aegis's kit
file (image.base is the kit's image, image.inject is empty: the image is pre-baked), and per profile
instances/PROFILE.json, the body of Aegis's POST /v1/instances, with instances/PROFILE.expose.json, the
bodies of POST /v1/instances/{handle}/expose for its ports (Aegis's create request has no field for them).
Secrets appear by name only, never by value. Aegis pulls the image itself, so it needs a reference it can
pull: push the kit first (\`aegis-kit push\`) and pass that registry reference as --image-ref; the default
is the local store name NAME:VERSION, which only aegis-kit knows. Manifest fields Aegis has no equivalent
for (aegis-kit's extra capability claims, hooks, health checks, ...) are left out and named in one warning
line on stderr; docs/aegis-export.md maps every field. Existing files are kept unless --force.`

  static override examples = [
    {
      description: 'Export the OpenClaw kit, pushed before, for Aegis',
      command:
        '<%= config.bin %> <%= command.id %> openclaw --format aegis -o ./aegis --image-ref ghcr.io/acme/openclaw:2026.9.6',
    },
    {
      description: "Make the bot profile's command and capabilities the kit file's defaults",
      command: '<%= config.bin %> <%= command.id %> openclaw --format aegis -o ./aegis --profile bot',
    },
  ]

  static override args = {
    kit: Args.string({description: 'Kit name, kit directory, or aegis-kit.yaml file.', required: true}),
  }

  static override flags = {
    format: Flags.string({description: 'Format to write.', options: ['aegis'], required: true}),
    output: Flags.string({char: 'o', description: 'Directory to write into (default: the current directory).'}),
    'image-ref': Flags.string({
      description:
        'Image reference Aegis pulls (default: the local store name NAME:VERSION; pass the pushed reference).',
    }),
    profile: Flags.string({
      description: "Profile whose command and capabilities become the kit file's defaults (default: none).",
    }),
    force: Flags.boolean({description: 'Replace files that are already there.'}),
  }

  static override enableJsonFlag = true

  async run(): Promise<ExportReport> {
    const {args, flags} = await this.parse(Export)
    const kit = await loadKit(args.kit)
    const exported = exportForAegis(kit, {imageRef: flags['image-ref'], profile: flags.profile})
    const files = await writeAegisExport(exported, path.resolve(flags.output ?? '.'), {force: flags.force})
    const warning = formatLeftOutWarning(exported)
    if (warning !== undefined) process.stderr.write(`${warning}\n`)
    for (const file of files) this.log(file)
    return {
      kit: kit.manifest.name,
      version: kit.manifest.version,
      format: 'aegis',
      files,
      leftOut: exported.leftOut,
    }
  }
}
