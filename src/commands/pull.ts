import type {KeyObject} from 'node:crypto'
import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {registryFlags} from '../cli/flags.js'
import {formatBytes} from '../cli/format.js'
import {createTransferReporter, progressMode} from '../cli/progress.js'
import {defaultLocalReference, referrerCount} from '../cli/transfer.js'
import {pullKit, type PullKitResult} from '../kit-artifact/index.js'
import type {Descriptor} from '../oci/types.js'
import type {KitVerification} from '../kit/trust.js'
import {RemoteRepository, formatPlatform} from '../registry/index.js'
import {keyHint, loadVerificationKey, verifySignatures} from '../signing/index.js'
import {parseLocalReference} from '../oci/reference.js'
import {openStore} from '../store/open.js'

export interface PullKitReport {
  kit: string
  version: string
  /** The unpacked kit: what `validate` and `hooks` use for REF. */
  dir: string
  remote: string
  local: string
  digest: string
  mediaType: string
  kitArtifact: string
  platforms: string[]
  report: unknown
  transferred: string[]
  skipped: string[]
  bytesTransferred: number
  /** Digests of the referrers (the image's SBOM) pulled along or already in the store. */
  referrers: string[]
  /** Short names (NAME:VERSION) that name another kit and were left on it. */
  keptShortNames: string[]
  /** The signature check of the pull (--verify), or null. */
  verified: KitVerification | null
  /** Whether its code (hooks, image) may run without asking: its signature was verified, it is the user's own, or the user said so before. */
  trusted: boolean
}

export default class Pull extends BaseCommand {
  static override summary = 'Pull a published kit (and its image) into the local store.'
  static override description =
    `Pulls REF, [registry/]repository[:tag][@digest], published with \`aegis-kit push\`: the kit
artifact and, unless --kit-only, the image published with it (every platform). Every blob is
verified against its digest; the kit layer is unpacked under the store (refusing absolute paths,
".." and links) into <store>/kits/NAME/VERSION-DIGEST before anything is tagged. Afterwards REF
(as typed, as registry/repository:tag, and as NAME:VERSION) works as KIT in \`validate\` and
\`hooks ...\`, except that a short name (NAME:VERSION) that already names another kit keeps it.
With --verify PUB, what REF resolves to must carry a signature that verifies with PUB (a Sigstore
bundle, as \`aegis-kit sign\`, \`push --sign\` and \`cosign sign\` store it) before anything is
written to the store.`

  static override examples = [
    {
      description: 'Pull a kit, then render its environment',
      command:
        '<%= config.bin %> <%= command.id %> 127.0.0.1:5000/kits/hello:0.1.0 && <%= config.bin %> hooks render-env 127.0.0.1:5000/kits/hello:0.1.0',
    },
    {
      description: 'Only the kit, as JSON',
      command: '<%= config.bin %> <%= command.id %> ghcr.io/acme/my-kit:stable --kit-only --json',
    },
  ]

  static override args = {
    ref: Args.string({description: 'Kit to pull: [registry/]repository[:tag][@sha256:<digest>].', required: true}),
  }

  static override flags = {
    ...registryFlags,
    'kit-only': Flags.boolean({description: 'Pull only the kit artifact, not the image published with it.'}),
    tag: Flags.string({char: 't', description: 'Store it as NAME[:TAG] instead of its registry reference.'}),
    verify: Flags.string({
      description:
        'Public key (PEM, e.g. cosign.pub) the kit must be signed with: checked before anything is downloaded into the store.',
    }),
  }

  static override enableJsonFlag = true

  async run(): Promise<PullKitReport> {
    const {args, flags} = await this.parse(Pull)
    const reporter = createTransferReporter(process.stderr, progressMode(process.stderr, this.jsonEnabled()), 'pulled')
    const repository = new RemoteRepository(args.ref, {
      plainHttp: flags['plain-http'],
      insecure: flags.insecure,
      notify: reporter.notice,
    })
    const localReference = flags.tag ?? defaultLocalReference(repository.reference)
    parseLocalReference(localReference) // Fail before any download if the name cannot be stored.
    const publicKey = flags.verify === undefined ? undefined : await loadVerificationKey(flags.verify)
    let result: PullKitResult
    try {
      result = await pullKit(openStore(), repository, {
        localReference,
        aliases: [args.ref],
        kitOnly: flags['kit-only'],
        verify: publicKey && signatureCheck(repository, publicKey),
        progress: reporter.progress,
      })
    } finally {
      reporter.finish()
    }
    const report = pullReport(result, localReference)
    this.logPulled(result, report)
    return report
  }

  /** What was pulled, the short names left on other kits (on stderr), and whether its code may run unasked. */
  private logPulled({copy, kit, reference}: PullKitResult, report: PullKitReport): void {
    if (kit.report !== undefined) this.log(`on_publish report:\n${JSON.stringify(kit.report, null, 2)}`)
    // A --tag (or typed reference) that is itself a kept short name leaves only the directory.
    const usable = kit.keptShortNames.some((short) => short.reference === report.local) ? kit.dir : report.local
    for (const short of kit.keptShortNames) {
      // Still on stderr under --json: a script that goes on to use the short name should be told.
      process.stderr.write(
        `aegis-kit: ${short.reference} still names the kit ${short.origin} (${short.dir}), not this one: use ${usable} for this one\n`,
      )
    }
    const {platforms, referrers} = report
    const counts = `${copy.copied.length} pulled (${formatBytes(copy.bytesTransferred)}), ${copy.skipped.length} already in the store${referrerCount({referrers})}`
    this.log(
      `Pulled kit ${kit.name} ${kit.version}${platforms.length > 0 ? ` with image (${platforms.join(', ')})` : ''} from ${reference} as ${report.local} into ${kit.dir} [${counts}]`,
    )
    if (!report.trusted)
      this.log('Not verified: `hooks` and `run` ask before running its code (or take --trust), once for this kit.')
  }
}

/** What the reference resolved to must carry a signature by the key, before the copy starts. */
function signatureCheck(
  repository: RemoteRepository,
  publicKey: KeyObject,
): (root: Descriptor) => Promise<KitVerification> {
  return async (root) => {
    await verifySignatures(repository, root, publicKey)
    return {keyFingerprint: keyHint(publicKey)}
  }
}

/** The pull as `--json` reports it. */
function pullReport(result: PullKitResult, localReference: string): PullKitReport {
  const {copy, kit} = result
  const source = kit.record?.sources.at(-1)
  return {
    kit: kit.name,
    version: kit.version,
    dir: kit.dir,
    remote: result.reference,
    local: localReference,
    digest: result.root.digest,
    mediaType: result.root.mediaType,
    kitArtifact: result.kitArtifact.digest,
    platforms: result.images.flatMap((image) => (image.platform ? [formatPlatform(image.platform)] : [])),
    report: kit.report ?? null,
    transferred: copy.copied,
    skipped: copy.skipped,
    bytesTransferred: copy.bytesTransferred,
    referrers: copy.referrers.map((referrer) => referrer.digest),
    keptShortNames: kit.keptShortNames.map((short) => short.reference),
    verified: source?.via === 'pull' ? (source.verified ?? null) : null,
    trusted: kit.record?.trusted !== undefined,
  }
}
