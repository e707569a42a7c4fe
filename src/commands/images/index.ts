import {Flags} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {formatAge, formatBytes, renderTable, shortDigest} from '../../cli/format.js'
import {openStore} from '../../store/open.js'
import type {StoreEntry} from '../../store/index.js'
import {isReferrersTag} from '../../oci/artifact.js'

export default class Images extends BaseCommand {
  static override summary = 'List the images in the local store.'
  static override description =
    `Lists every tag in the local image store: name, tag, digest, size (every distinct blob the tag
reaches, all platforms), platforms and when the image was created. The store is an OCI image
layout under your data directory, or under $AEGIS_KIT_HOME/store when AEGIS_KIT_HOME is set.`

  static override examples = [
    {description: 'List the images', command: '<%= config.bin %> <%= command.id %>'},
    {
      description: 'List them as JSON, with full digests and sizes in bytes',
      command: '<%= config.bin %> <%= command.id %> --json',
    },
  ]

  static override enableJsonFlag = true

  static override flags = {
    all: Flags.boolean({
      char: 'a',
      description: 'Also list referrers (SBOMs and other artifacts about an image, tagged sha256-<digest>).',
    }),
  }

  async run(): Promise<{images: StoreEntry[]}> {
    const {flags} = await this.parse(Images)
    // Referrers (SBOMs) are about an image, not images of their own: shown with --all.
    const images = (await openStore().list()).filter((entry) => flags.all || !isReferrersTag(entry.tag))
    if (this.jsonEnabled()) return {images}
    if (images.length === 0) {
      this.log('No images in the store. Add one with `aegis-kit images import` or `aegis-kit images pull`.')
      return {images}
    }
    this.log(
      renderTable(
        ['NAME', 'TAG', 'DIGEST', 'SIZE', 'PLATFORMS', 'CREATED'],
        images.map((image) => [
          image.name || '<none>',
          image.tag,
          shortDigest(image.digest),
          formatBytes(image.size),
          image.platforms.join(',') || '-',
          formatAge(image.created),
        ]),
      ),
    )
    return {images}
  }
}
