import path from 'node:path'
import {BaseCommand} from '../../cli/base-command.js'
import {formatBytes} from '../../cli/format.js'
import {scratchRoot} from '../../builder/build.js'
import {openStore} from '../../store/open.js'
import {sweepStaleTempDirs} from '../../store/owned-temp.js'
import {defaultStoreRoot} from '../../paths.js'
import type {PruneResult} from '../../store/index.js'

export default class ImagesPrune extends BaseCommand {
  static override summary = 'Delete blobs no tag reaches, and files left by interrupted commands.'
  static override description =
    `Frees the disk space of removed images: deletes every blob in the store that no tag reaches,
the temp files of commands that were killed, and the scratch directories of killed builds and kit
unpacks. Blobs of imports and pulls still running, and the directories of running commands, are
kept; so is a killed command's directory with something mounted under it (with a warning).`

  static override examples = [
    {description: 'Free the space of removed images', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'Prune and report what went as JSON', command: '<%= config.bin %> <%= command.id %> --json'},
  ]

  static override enableJsonFlag = true

  async run(): Promise<PruneResult> {
    await this.parse(ImagesPrune)
    const storeRoot = defaultStoreRoot()
    const result = await openStore(storeRoot).prune()
    // The build cache sits beside the store (as `build` places it).
    const scratch = await sweepStaleTempDirs(scratchRoot(path.join(path.dirname(storeRoot), 'cache')))
    result.tempDirs.push(...scratch.removed)
    result.kept.push(...scratch.kept)
    result.bytesFreed += scratch.removed.reduce((sum, dir) => sum + dir.size, 0)
    for (const kept of result.kept)
      process.stderr.write(`warning: kept ${kept.path} of a killed command: ${kept.reason}\n`)
    const parts = [`${result.blobs.length} blob${result.blobs.length === 1 ? '' : 's'}`]
    if (result.tempFiles.length > 0)
      parts.push(`${result.tempFiles.length} temp file${result.tempFiles.length === 1 ? '' : 's'}`)
    if (result.tempDirs.length > 0)
      parts.push(`${result.tempDirs.length} temp director${result.tempDirs.length === 1 ? 'y' : 'ies'}`)
    this.log(`Deleted ${parts.join(' and ')}, freed ${formatBytes(result.bytesFreed)}.`)
    return result
  }
}
