import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {registryFlags} from '../cli/flags.js'
import {formatBytes} from '../cli/format.js'
import {createTransferReporter, progressMode} from '../cli/progress.js'
import {referrerCount} from '../cli/transfer.js'
import {loadKit} from '../kit/kit.js'
import {publishKit} from '../kit-artifact/index.js'
import {RemoteRepository, formatPlatform} from '../registry/index.js'
import {PASSWORD_ENV, loadSigningKey, signRemote} from '../signing/index.js'
import {openStore} from '../store/open.js'

export interface PushKitReport {
  kit: string
  version: string
  /** The remote reference with the digest of the published root. */
  remote: string
  digest: string
  mediaType: string
  kitArtifact: string
  /** The local image published with the kit, or null for the kit alone. */
  image: string | null
  platforms: string[]
  report: unknown
  transferred: string[]
  skipped: string[]
  mounted: string[]
  bytesTransferred: number
  /** Digests of the referrers (the image's SBOM) pushed along or already there. */
  referrers: string[]
  /** The signature manifest stored as a referrer of the published root (--sign), or null. */
  signature: string | null
}

export default class Push extends BaseCommand {
  static override summary = 'Publish a kit, with its image when built, to a registry.'
  static override description =
    `Packs KIT (its manifest, hooks and files) into a reproducible layer and publishes it as an OCI
artifact (artifactType application/vnd.aegis.kit.v1) at REF, [registry/]repository[:tag] (the tag
defaults to the kit's version). When the local store has the kit's image (NAME:VERSION; for a
pulled kit NAME:VERSION-<digest12>; or --image), REF resolves to an OCI index holding the image's
manifests and the kit artifact, so one reference carries both (with the image's referrers, e.g.
its SBOM); otherwise to the kit artifact alone. The kit's on_publish hook runs first (never for a
pulled kit: someone else's code); its report is printed and attached to the artifact.
The same kit pushed twice gives the same digests. Blobs go first and manifests last, so a failed
push leaves no tag: re-run to resume. With --sign KEY, the published root (the index, or the kit
artifact) is then signed as \`aegis-kit sign\` does it (KEY's password, if any, in ${PASSWORD_ENV}).`

  static override examples = [
    {
      description: 'Publish the hello kit (and its image, when built) to a local registry',
      command: '<%= config.bin %> <%= command.id %> hello 127.0.0.1:5000/kits/hello',
    },
    {
      description: 'Publish a kit directory under a tag, as JSON',
      command: '<%= config.bin %> <%= command.id %> ./my-kit ghcr.io/acme/my-kit:stable --json',
    },
  ]

  static override args = {
    kit: Args.string({description: 'Kit name, kit directory, or aegis-kit.yaml file.', required: true}),
    ref: Args.string({description: "Where to: [registry/]repository[:tag] (tag: the kit's version).", required: true}),
  }

  static override flags = {
    ...registryFlags,
    image: Flags.string({
      description: 'Image in the local store to publish with the kit (default: NAME:VERSION when built).',
      exclusive: ['kit-only'],
    }),
    'kit-only': Flags.boolean({description: 'Publish the kit alone, even when its image is built.'}),
    chunked: Flags.boolean({description: 'Upload blobs in chunks (PATCH) instead of one request per blob.'}),
    sign: Flags.string({
      description: `Sign what is published with this private key: cosign.key (password in ${PASSWORD_ENV}) or a PEM ECDSA P-256 key.`,
    }),
  }

  static override enableJsonFlag = true

  async run(): Promise<PushKitReport> {
    const {args, flags} = await this.parse(Push)
    const kit = await loadKit(args.kit)
    // Read (and decrypt) the key first: a wrong password should stop the push before it starts.
    const signingKey = flags.sign === undefined ? undefined : await loadSigningKey(flags.sign)
    const reporter = createTransferReporter(process.stderr, progressMode(process.stderr, this.jsonEnabled()), 'pushed')
    const repository = new RemoteRepository(args.ref, {
      plainHttp: flags['plain-http'],
      insecure: flags.insecure,
      uploadMode: flags.chunked ? 'chunked' : 'auto',
      notify: reporter.notice,
    })
    let result: Awaited<ReturnType<typeof publishKit>>
    try {
      result = await publishKit(openStore(), kit, repository, {
        image: flags['kit-only'] ? false : flags.image,
        progress: reporter.progress,
      })
    } finally {
      reporter.finish()
    }
    const platforms = (result.image?.manifests ?? []).flatMap((image) =>
      image.platform ? [formatPlatform(image.platform)] : [],
    )
    const {copy} = result
    const signed = signingKey && (await signRemote(repository, signingKey, result.root))
    const report: PushKitReport = {
      kit: kit.manifest.name,
      version: kit.manifest.version,
      remote: `${result.reference}@${result.root.digest}`,
      digest: result.root.digest,
      mediaType: result.root.mediaType,
      kitArtifact: result.kitArtifact.digest,
      image: result.image?.reference ?? null,
      platforms,
      report: result.report ?? null,
      transferred: copy.copied,
      skipped: copy.skipped,
      mounted: copy.mounted,
      bytesTransferred: copy.bytesTransferred,
      referrers: copy.referrers.map((referrer) => referrer.digest),
      signature: signed?.signature.digest ?? null,
    }
    if (result.report !== undefined) this.log(`on_publish report:\n${JSON.stringify(result.report, null, 2)}`)
    if (result.onPublishSkipped)
      process.stderr.write(
        `aegis-kit: on_publish of kit ${kit.manifest.name} ${kit.manifest.version} was not run: it is a pulled kit (someone else's code), pushed without a report\n`,
      )
    const what = result.image ? `with image ${result.image.reference} (${platforms.join(', ')})` : 'alone (no image)'
    const counts = `${copy.copied.length} pushed (${formatBytes(copy.bytesTransferred)}), ${copy.skipped.length} already there${copy.mounted.length > 0 ? `, ${copy.mounted.length} mounted` : ''}${referrerCount({referrers: report.referrers})}`
    this.log(`Pushed kit ${kit.manifest.name} ${kit.manifest.version} ${what} to ${report.remote} [${counts}]`)
    if (signed) this.log(`Signed ${signed.reference}: signature ${signed.signature.digest}`)
    return report
  }
}
