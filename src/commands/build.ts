import path from 'node:path'
import {Args, Flags} from '@oclif/core'
import {buildKit, type BuildEvent} from '../builder/build.js'
import {isHostPlatform} from '../oci/platform.js'
import {describeSourceDate} from '../builder/source-date.js'
import {BaseCommand} from '../cli/base-command.js'
import {confirmTrust, trustFlag} from '../cli/trust.js'
import {messageOf} from '../errors.js'
import {createStepLines, type StepLines} from '../cli/steps.js'
import {formatBytes, shortDigest} from '../cli/format.js'
import {loadKit} from '../kit/kit.js'
import {formatUnhonouredFieldWarning} from '../kit/unhonoured.js'
import {defaultStoreRoot} from '../paths.js'
import {openStore} from '../store/open.js'

export default class Build extends BaseCommand {
  static override summary =
    "Bake a kit's image (its software pre-installed) into the local store, without a Docker daemon."
  static override description =
    `Builds the kit's image recipe (image: in aegis-kit.yaml) into reproducible OCI layers, one per
concern: the base (a Debian root from Debian's archive, or an image reference), the Node.js
runtime, the npm packages (installed now, not on first boot), the kit's files, and the aegis
runtime layer. Each layer is cached by a hash of its inputs: a rebuild with nothing changed
reuses every layer, and changing one kit file rebuilds only its layer. Nothing depends on when
the build runs, so two clean builds give the same digests: file times in the layers are 0, and
the image's created time is the kit's own: its last commit when the kit is in a git checkout
with nothing uncommitted (aegis-kit.lock.json aside), else its newest file's modification time.
SOURCE_DATE_EPOCH, when set, is both (as ko and apko). An SPDX SBOM of the Debian and npm
packages is stored with the image (as a referrer).
What the base resolved to (each Debian package's exact version, or a registry base's digest) is
recorded in aegis-kit.lock.json beside the manifest on the first build, and later builds install
exactly that; --update-lock resolves the base again and rewrites the lock.
Several platforms (--platform linux/amd64,linux/arm64, or image.platforms) give an OCI image
index with one image per platform.
The image is tagged NAME:VERSION in the store (see \`aegis-kit images\`); a pulled kit's image is
tagged NAME:VERSION-<digest12>, so it never replaces the image of your own kit of that name.
A kit pulled from a registry is built only once you trust it (--trust, or yes when asked on a
terminal; remembered per kit): its build runs its npm packages' install scripts on this machine.`

  static override examples = [
    {description: 'Build the OpenClaw kit', command: '<%= config.bin %> <%= command.id %> openclaw'},
    {
      description: 'Rebuild everything, tag it dev, report JSON',
      command: '<%= config.bin %> <%= command.id %> openclaw --no-cache --tag dev --json',
    },
    {
      description: 'The tiny hello kit with zstd layers',
      command: '<%= config.bin %> <%= command.id %> hello --compression zstd',
    },
    {
      description: 'One image for amd64 and one for arm64, under one index',
      command: '<%= config.bin %> <%= command.id %> hello --platform linux/amd64,linux/arm64',
    },
    {
      description: "Take the Debian archive's current packages and rewrite the lock",
      command: '<%= config.bin %> <%= command.id %> openclaw --update-lock',
    },
  ]

  static override args = {
    kit: Args.string({
      description: 'Kit name, kit directory, or aegis-kit.yaml file (default: current directory).',
      required: false,
    }),
  }

  static override flags = {
    tag: Flags.string({
      char: 't',
      description:
        'Tag in the store (default: the kit version; for a pulled kit VERSION-<digest12>, so it never replaces your own NAME:VERSION).',
    }),
    'no-cache': Flags.boolean({description: 'Rebuild every layer instead of reusing cached ones.'}),
    platform: Flags.string({
      description:
        "Platforms, comma-separated: linux/amd64, linux/arm64 (default: the kit's image.platforms, else this machine's).",
    }),
    locked: Flags.boolean({
      description:
        'Fail when the base cannot be built as aegis-kit.lock.json says (a locked Debian version left the archive), instead of updating the lock. For CI and releases.',
      exclusive: ['update-lock'],
    }),
    'update-lock': Flags.boolean({
      description:
        "Resolve the base again (current Debian package versions, the tag's current digest) and rewrite aegis-kit.lock.json.",
    }),
    compression: Flags.string({description: 'Layer compression.', options: ['gzip', 'zstd'], default: 'gzip'}),
    verbose: Flags.boolean({
      description:
        "Show the build tools' own output (mmdebstrap, npm) as it comes. Without it a terminal shows one live line per step, and a failed step's last lines.",
    }),
    trust: trustFlag,
  }

  static override enableJsonFlag = true

  async run(): Promise<unknown> {
    const {args, flags} = await this.parse(Build)
    const kit = await loadKit(args.kit)
    // A pulled kit's build runs its npm packages' install scripts (allow_scripts) on this machine.
    await confirmTrust(kit, flags.trust)
    for (const warning of kit.warnings) process.stderr.write(`${formatUnhonouredFieldWarning(warning)}\n`)
    const storeRoot = defaultStoreRoot()
    const store = openStore(storeRoot)
    const quiet = this.jsonEnabled()
    const controller = new AbortController()
    const onSignal = () => controller.abort()
    process.once('SIGINT', onSignal)
    process.once('SIGTERM', onSignal)
    const epochText = process.env.SOURCE_DATE_EPOCH
    const steps = !quiet && process.stderr.isTTY ? createStepLines(process.stderr, {verbose: flags.verbose}) : undefined
    try {
      const result = await buildKit(kit, {
        store,
        cacheDir: path.join(path.dirname(storeRoot), 'cache'),
        tag: flags.tag,
        noCache: flags['no-cache'],
        updateLock: flags['update-lock'],
        locked: flags.locked,
        compression: flags.compression as 'gzip' | 'zstd',
        platforms: flags.platform
          ?.split(',')
          .map((p) => p.trim())
          .filter((p) => p !== ''),
        sourceDateEpoch: epochText && /^\d+$/.test(epochText) ? Number(epochText) : undefined,
        signal: controller.signal,
        onEvent: quiet ? undefined : (event) => (steps ? reportLive(event, steps) : report(event, flags.verbose)),
      })
      steps?.finish()
      if (!quiet) {
        const cached = result.platforms.flatMap((p) => p.layers).filter((l) => l.cached).length
        const total = result.platforms.flatMap((p) => p.layers).length
        if (result.lockWritten) this.log(`wrote ${result.lockWritten}`)
        this.log(
          `built ${result.reference} ${shortDigest(result.digest)} (${formatBytes(result.size)}, ${cached}/${total} layers cached, ${(result.ms / 1000).toFixed(1)}s), created ${describeSourceDate(result.created, result.createdFrom)}`,
        )
      }
      return result
    } catch (error) {
      steps?.fail(messageOf(error))
      throw error
    } finally {
      steps?.finish()
      process.off('SIGINT', onSignal)
      process.off('SIGTERM', onSignal)
    }
  }
}

/** Plain lines, one or two per step: logs and CI. */
function report(event: BuildEvent, verbose: boolean): void {
  if (event.type === 'step') process.stderr.write(`${event.step}${platformNote(event)}: ${event.detail}\n`)
  else if (event.type === 'layer') process.stderr.write(`  ${describeLayer(event)}\n`)
  else if (event.type === 'warning') process.stderr.write(`warning${platformNote(event)}: ${event.message}\n`)
  else if (verbose) process.stderr.write(`  ${event.line}\n`)
}

/** On a terminal: a live line while a step works, then its one-line result. */
function reportLive(event: BuildEvent, steps: StepLines): void {
  if (event.type === 'step') steps.start(`${event.step}${platformNote(event)}: ${event.detail}`)
  else if (event.type === 'layer') steps.done(describeLayer(event))
  else if (event.type === 'warning') steps.note(`warning${platformNote(event)}: ${event.message}`)
  else steps.output(event.line)
}

function platformNote(event: BuildEvent): string {
  return isHostPlatform(event.platform) ? '' : ` [${event.platform}]`
}

function describeLayer(event: Extract<BuildEvent, {type: 'layer'}>): string {
  const how = event.cached ? 'cached' : `built in ${(event.ms / 1000).toFixed(1)}s`
  return `layer ${shortDigest(event.digest)} ${formatBytes(event.size)} (${formatBytes(event.uncompressedSize)} unpacked), ${how}`
}
