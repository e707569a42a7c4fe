import path from 'node:path'
import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {AegisError} from '../../errors.js'
import {shortDigest} from '../../cli/format.js'
import {openStore} from '../../store/open.js'

export default class ImagesExport extends BaseCommand {
  static override summary = 'Write an image from the local store to an OCI archive or a docker-archive.'
  static override description =
    `--format oci-archive writes a tar of an OCI layout holding the image (all its platforms),
reproducibly: the same image gives the same bytes. --format docker-archive writes the
\`docker save\` format that \`docker load\`, \`podman load\` and skopeo read; it holds one platform,
this machine's unless --platform picks another. The file appears only when complete.`

  static override examples = [
    {
      description: 'Export for docker load',
      command: '<%= config.bin %> <%= command.id %> openclaw:1.0.0 --format docker-archive -o openclaw.tar',
    },
    {
      description: 'Export as an OCI archive',
      command: '<%= config.bin %> <%= command.id %> openclaw:1.0.0 --format oci-archive -o openclaw.oci.tar',
    },
  ]

  static override args = {
    ref: Args.string({
      description: 'Image reference: NAME[:TAG], sha256:<digest> or NAME@sha256:<digest>.',
      required: true,
    }),
  }

  static override flags = {
    format: Flags.string({
      description: 'Archive format.',
      options: ['oci-archive', 'docker-archive'],
      default: 'oci-archive',
    }),
    output: Flags.string({char: 'o', description: 'File to write.', required: true}),
    platform: Flags.string({
      description: 'docker-archive only: os/arch[/variant] to export from a multi-platform image.',
    }),
  }

  static override enableJsonFlag = true

  async run(): Promise<{reference: string; format: string; file: string; digest: string}> {
    const {args, flags} = await this.parse(ImagesExport)
    if (flags.platform && flags.format !== 'docker-archive') {
      throw new AegisError('--platform only applies to --format docker-archive', {
        hint: 'an oci-archive keeps every platform of the image',
      })
    }
    const store = openStore()
    const file = path.resolve(flags.output)
    const desc =
      flags.format === 'docker-archive'
        ? await store.exportDockerArchive(args.ref, file, flags.platform ? {platform: flags.platform} : {})
        : await store.exportOciArchive(args.ref, file)
    this.log(`Wrote ${args.ref} (${shortDigest(desc.digest)}) to ${flags.output} as ${flags.format}`)
    return {reference: args.ref, format: flags.format, file, digest: desc.digest}
  }
}
