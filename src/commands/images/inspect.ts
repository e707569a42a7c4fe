import {Args} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {formatBytes, shortDigest} from '../../cli/format.js'
import {openStore} from '../../store/open.js'
import type {InspectResult, Referrer} from '../../store/index.js'

export default class ImagesInspect extends BaseCommand {
  static override summary = 'Show an image in the local store: digests, platforms, config and layers.'
  static override description =
    `REF is NAME[:TAG] (the tag defaults to latest), sha256:<digest>, or NAME@sha256:<digest>.
Prints the tags pointing at the image, and for each platform its manifest digest, config
(entrypoint, command, environment, working directory), layers and referrers (the SBOM \`build\`
makes, and what a pull brought along). --json prints the whole inspection, including the parsed
manifests and configs.`

  static override examples = [
    {description: 'Inspect a tag', command: '<%= config.bin %> <%= command.id %> openclaw:1.0.0'},
    {description: 'Inspect by digest, as JSON', command: '<%= config.bin %> <%= command.id %> sha256:3f1c… --json'},
  ]

  static override args = {
    ref: Args.string({
      description: 'Image reference: NAME[:TAG], sha256:<digest> or NAME@sha256:<digest>.',
      required: true,
    }),
  }

  static override enableJsonFlag = true

  async run(): Promise<InspectResult> {
    const {args} = await this.parse(ImagesInspect)
    const result = await openStore().inspect(args.ref)
    if (this.jsonEnabled()) return result
    this.log(`Digest:     ${result.descriptor.digest}`)
    this.log(`Media type: ${result.descriptor.mediaType}`)
    this.log(`Tags:       ${result.tags.join(', ') || '(none)'}`)
    this.log(`Size:       ${formatBytes(result.size)} (${result.size} bytes)`)
    const referrerLine = (referrer: Referrer) =>
      `${shortDigest(referrer.digest)}  ${referrer.artifactType ?? referrer.mediaType}`
    const ofIndex =
      result.kind === 'index'
        ? result.referrers.filter((referrer) => referrer.subject === result.descriptor.digest)
        : []
    for (const referrer of ofIndex) this.log(`Referrer:   ${referrerLine(referrer)}`)
    for (const image of result.images) {
      const config = image.config?.config
      this.log('')
      this.log(`${image.platform ?? 'no platform'}  manifest ${image.digest}`)
      this.log(`  config      ${shortDigest(image.configDigest)}  ${image.configMediaType}`)
      if (image.config?.created) this.log(`  created     ${image.config.created}`)
      if (config?.Entrypoint) this.log(`  entrypoint  ${JSON.stringify(config.Entrypoint)}`)
      if (config?.Cmd) this.log(`  cmd         ${JSON.stringify(config.Cmd)}`)
      if (config?.WorkingDir) this.log(`  workdir     ${config.WorkingDir}`)
      if (config?.User) this.log(`  user        ${config.User}`)
      for (const env of config?.Env ?? []) this.log(`  env         ${env}`)
      this.log(
        `  layers      ${image.layers.length}, ${formatBytes(image.layers.reduce((sum, layer) => sum + layer.size, 0))}`,
      )
      for (const layer of image.layers)
        this.log(`    ${shortDigest(layer.digest)}  ${formatBytes(layer.size).padStart(8)}  ${layer.mediaType}`)
      for (const referrer of result.referrers.filter((r) => r.subject === image.digest))
        this.log(`  referrer    ${referrerLine(referrer)}`)
    }
    return result
  }
}
