import {Args} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {DockerCredentials, parseRegistryHost} from '../registry/index.js'

export default class Logout extends BaseCommand {
  static override summary = 'Forget the stored credentials for a registry.'
  static override description =
    `Removes the registry's entry from docker's config.json ($DOCKER_CONFIG, else ~/.docker), and
from the credential helper when one is configured, as \`docker logout\` does.`

  static override examples = [{description: 'Log out of GHCR', command: '<%= config.bin %> <%= command.id %> ghcr.io'}]

  static override args = {
    registry: Args.string({description: 'Registry host, e.g. ghcr.io, docker.io or 127.0.0.1:5000.', required: true}),
  }

  static override enableJsonFlag = true

  async run(): Promise<{registry: string; removed: boolean}> {
    const {args} = await this.parse(Logout)
    const {registry} = parseRegistryHost(args.registry)
    const removed = await new DockerCredentials().erase(registry)
    this.log(removed ? `Removed the credentials for ${registry}` : `Not logged in to ${registry}; nothing to remove`)
    return {registry, removed}
  }
}
