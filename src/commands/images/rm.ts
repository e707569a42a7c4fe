import {Args} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {shortDigest} from '../../cli/format.js'
import {openStore} from '../../store/open.js'
import type {RemovedTag} from '../../store/index.js'

export default class ImagesRm extends BaseCommand {
  static override summary = 'Remove tags from the local store (run `images prune` to free the space).'
  static override description =
    `REF is NAME[:TAG] (the tag defaults to latest), or a digest to remove every tag pointing at it.
Only the tags go: blobs stay until \`aegis-kit images prune\`, so removing is instant and images
sharing layers are untouched. Several REFs may be given.`

  static override examples = [
    {
      description: 'Remove a tag, then free the disk space',
      command: '<%= config.bin %> <%= command.id %> openclaw:1.0.0 && <%= config.bin %> images prune',
    },
    {description: 'Remove every tag of a digest', command: '<%= config.bin %> <%= command.id %> sha256:3f1c…'},
  ]

  static override strict = false

  static override args = {
    ref: Args.string({
      description: 'Image reference: NAME[:TAG], sha256:<digest> or NAME@sha256:<digest>.',
      required: true,
    }),
  }

  static override enableJsonFlag = true

  async run(): Promise<{removed: RemovedTag[]}> {
    const {argv} = await this.parse(ImagesRm)
    const store = openStore()
    const removed: RemovedTag[] = []
    for (const ref of argv as string[]) {
      const gone = await store.remove(ref)
      removed.push(...gone)
      for (const tag of gone)
        this.log(`Untagged ${tag.name ? `${tag.name}:` : ''}${tag.tag} (${shortDigest(tag.digest)})`)
    }
    return {removed}
  }
}
