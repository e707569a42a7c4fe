import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {registryFlags} from '../../cli/flags.js'
import {formatBytes} from '../../cli/format.js'
import {createTransferReporter, progressMode} from '../../cli/progress.js'
import {pushToRegistry, referrerCount, type TransferReport} from '../../cli/transfer.js'
import {openStore} from '../../store/open.js'

export default class ImagesPush extends BaseCommand {
  static override summary = 'Push an image from the local store to a registry.'
  static override description =
    `Pushes REF (NAME[:TAG] or a digest in the local store) to DEST, [registry/]repository[:tag].
Without a tag, DEST gets the local tag; without DEST, REF's own name must start with a registry.
Blobs the registry already has are skipped (a re-push of an unchanged image is one request), blobs
in other repositories of the registry are mounted, the rest are uploaded several at a time. The
image's referrers (the SBOM \`build\` stores) go along, listed in the registry's sha256-<digest> tag
when it has no referrers API. The tag is set last, so it never points at an incomplete image.
Credentials come from \`aegis-kit login\` / docker's config.json. localhost and 127.0.0.1 are plain
HTTP unless --insecure.`

  static override examples = [
    {
      description: 'Push to a local registry',
      command: '<%= config.bin %> <%= command.id %> openclaw:1.0.0 127.0.0.1:5000/openclaw',
    },
    {
      description: 'Push to GHCR under another tag, as JSON',
      command: '<%= config.bin %> <%= command.id %> openclaw:1.0.0 ghcr.io/acme/openclaw:stable --json',
    },
  ]

  static override args = {
    ref: Args.string({
      description: 'Image in the local store: NAME[:TAG], sha256:<digest> or NAME@sha256:<digest>.',
      required: true,
    }),
    dest: Args.string({description: 'Where to: [registry/]repository[:tag].', required: false}),
  }

  static override flags = {
    ...registryFlags,
    chunked: Flags.boolean({description: 'Upload blobs in chunks (PATCH) instead of one request per blob.'}),
  }

  static override enableJsonFlag = true

  async run(): Promise<TransferReport> {
    const {args, flags} = await this.parse(ImagesPush)
    const reporter = createTransferReporter(process.stderr, progressMode(process.stderr, this.jsonEnabled()), 'pushed')
    let result: TransferReport
    try {
      result = await pushToRegistry(
        openStore(),
        args.ref,
        args.dest,
        {plainHttp: flags['plain-http'], insecure: flags.insecure, chunked: flags.chunked, notify: reporter.notice},
        reporter.progress,
      )
    } finally {
      reporter.finish()
    }
    const counts = `${result.transferred.length} pushed (${formatBytes(result.bytesTransferred)}), ${result.skipped.length} already there${result.mounted.length > 0 ? `, ${result.mounted.length} mounted` : ''}${referrerCount(result)}`
    this.log(`Pushed ${args.ref} to ${result.remote} [${counts}]`)
    return result
  }
}
