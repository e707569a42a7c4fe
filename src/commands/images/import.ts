import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../../cli/base-command.js'
import {shortDigest} from '../../cli/format.js'
import {importSource, openStore} from '../../store/open.js'
import type {ImportedImage} from '../../store/index.js'

export default class ImagesImport extends BaseCommand {
  static override summary = 'Copy images from an OCI layout directory or an OCI archive into the local store.'
  static override description = `SOURCE is oci-layout:DIR[:TAG] (a directory such as umoci, skopeo or buildah write) or
oci-archive:FILE[:TAG] (a tar of one, plain or gzip'd). Without TAG, every tagged image in it is
imported. A tag stored as NAME:TAG keeps its name; a bare tag (what umoci writes) takes the
directory or file name, unless --tag gives NAME[:TAG]. Every blob is verified against its digest;
a failed import leaves no tag behind.`

  static override examples = [
    {
      description: 'Import the image umoci made in ./layout under tag 1.0',
      command: '<%= config.bin %> <%= command.id %> oci-layout:./layout:1.0',
    },
    {
      description: 'Import an OCI archive as myapp:dev',
      command: '<%= config.bin %> <%= command.id %> oci-archive:./myapp.tar --tag myapp:dev',
    },
  ]

  static override args = {
    source: Args.string({description: 'oci-layout:DIR[:TAG] or oci-archive:FILE[:TAG].', required: true}),
  }

  static override flags = {
    tag: Flags.string({char: 't', description: 'Store the image as NAME[:TAG] (only when one image is imported).'}),
  }

  static override enableJsonFlag = true

  async run(): Promise<{imported: ImportedImage[]}> {
    const {args, flags} = await this.parse(ImagesImport)
    const imported = await importSource(openStore(), args.source, flags.tag ? {as: flags.tag} : {})
    for (const image of imported) this.log(`Imported ${image.name}:${image.tag} (${shortDigest(image.digest)})`)
    return {imported}
  }
}
