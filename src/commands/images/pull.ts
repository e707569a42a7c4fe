import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {registryFlags} from '../../cli/flags.js'
import {formatBytes} from '../../cli/format.js'
import {createTransferReporter, progressMode} from '../../cli/progress.js'
import {pullFromRegistry, referrerCount, type TransferReport} from '../../cli/transfer.js'
import {openStore} from '../../store/open.js'

export default class ImagesPull extends BaseCommand {
  static override summary = 'Pull an image from a registry into the local store.'
  static override description =
    `Pulls REF, [registry/]repository[:tag][@digest] (Docker Hub names are normalised: alpine is
docker.io/library/alpine). From a multi-platform image only this machine's platform is pulled
unless --platform names another or "all". Every blob is verified against its digest before it
enters the store, and the image is tagged only once complete, as registry/repository:tag (or
--tag). Its referrers (an SBOM, signatures) come along; \`images inspect\` shows them. Blobs
already in the store are skipped, so an interrupted pull resumes when re-run.`

  static override examples = [
    {
      description: 'Pull from a local registry',
      command: '<%= config.bin %> <%= command.id %> 127.0.0.1:5000/openclaw:1.0.0',
    },
    {
      description: 'Pull the arm64 image of a multi-platform tag, as JSON',
      command: '<%= config.bin %> <%= command.id %> ghcr.io/acme/openclaw:1.0.0 --platform linux/arm64 --json',
    },
  ]

  static override args = {
    ref: Args.string({description: 'Image to pull: [registry/]repository[:tag][@sha256:<digest>].', required: true}),
  }

  static override flags = {
    ...registryFlags,
    platform: Flags.string({
      description: 'os/arch[/variant] to pull from a multi-platform image, or "all" (default: this machine\'s).',
    }),
    tag: Flags.string({char: 't', description: 'Store the image as NAME[:TAG] instead of its registry reference.'}),
    chunked: Flags.boolean({
      description: 'Accepted for symmetry with push; pulls always stream each blob whole.',
      hidden: true,
    }),
  }

  static override enableJsonFlag = true

  async run(): Promise<TransferReport> {
    const {args, flags} = await this.parse(ImagesPull)
    const reporter = createTransferReporter(process.stderr, progressMode(process.stderr, this.jsonEnabled()), 'pulled')
    let result: TransferReport
    try {
      result = await pullFromRegistry(
        openStore(),
        args.ref,
        {
          plainHttp: flags['plain-http'],
          insecure: flags.insecure,
          platform: flags.platform,
          localTag: flags.tag,
          notify: reporter.notice,
        },
        reporter.progress,
      )
    } finally {
      reporter.finish()
    }
    this.log(
      `Pulled ${result.remote} as ${result.local} [${result.transferred.length} pulled (${formatBytes(result.bytesTransferred)}), ${result.skipped.length} already in the store${referrerCount(result)}]`,
    )
    return result
  }
}
