import {BaseCommand} from '../../cli/base-command.js'
import {formatBytes} from '../../cli/format.js'
import {openStore} from '../../store/open.js'
import type {PruneResult} from '../../store/index.js'

export default class ImagesPrune extends BaseCommand {
  static override summary = 'Delete blobs no tag reaches, and files left by interrupted commands.'
  static override description = `Frees the disk space of removed images: deletes every blob in the store that no tag reaches
and the temp files of commands that were killed. Blobs of imports and pulls still running are
kept.`

  static override examples = [
    {description: 'Free the space of removed images', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'Prune and report what went as JSON', command: '<%= config.bin %> <%= command.id %> --json'},
  ]

  static override enableJsonFlag = true

  async run(): Promise<PruneResult> {
    await this.parse(ImagesPrune)
    const result = await openStore().prune()
    const parts = [`${result.blobs.length} blob${result.blobs.length === 1 ? '' : 's'}`]
    if (result.tempFiles.length > 0) parts.push(`${result.tempFiles.length} temp file${result.tempFiles.length === 1 ? '' : 's'}`)
    this.log(`Deleted ${parts.join(' and ')}, freed ${formatBytes(result.bytesFreed)}.`)
    return result
  }
}
