import {Args, Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {registryFlags} from '../cli/flags.js'
import {readPassword} from '../cli/password.js'
import {DockerCredentials, parseRegistryHost, verifyLogin} from '../registry/index.js'

export default class Login extends BaseCommand {
  static override summary = 'Log in to a registry: check the credentials, then store them the way docker does.'
  static override description =
    `Reads the password (or token) from standard input, checks it against the registry with an
authenticated request (Basic, or the registry's token service), and only then stores it in
docker's config.json ($DOCKER_CONFIG, else ~/.docker), through the credential helper when one
is configured. docker, podman, skopeo and aegis-kit then share the login. The password is never
printed, not even in errors.`

  static override examples = [
    {
      description: 'Log in to GHCR with a token from a file',
      command: '<%= config.bin %> <%= command.id %> ghcr.io -u octocat --password-stdin < token.txt',
    },
    {
      description: 'Log in to a local registry',
      command: 'echo "$PASSWORD" | <%= config.bin %> <%= command.id %> 127.0.0.1:5000 -u admin --password-stdin',
    },
  ]

  static override args = {
    registry: Args.string({description: 'Registry host, e.g. ghcr.io, docker.io or 127.0.0.1:5000.', required: true}),
  }

  static override flags = {
    ...registryFlags,
    username: Flags.string({char: 'u', description: 'User name.', required: true}),
    'password-stdin': Flags.boolean({description: 'Read the password or token from standard input.'}),
  }

  static override enableJsonFlag = true

  async run(): Promise<{registry: string; username: string; configPath: string}> {
    const {args, flags} = await this.parse(Login)
    const host = parseRegistryHost(args.registry, {plainHttp: flags['plain-http'], insecure: flags.insecure})
    const password = await readPassword(process.stdin, flags['password-stdin'])
    await verifyLogin(host, {username: flags.username, password})
    const credentials = new DockerCredentials()
    await credentials.store(host.registry, {username: flags.username, password})
    this.log(`Logged in to ${host.registry} as ${flags.username} (stored in ${credentials.configPath})`)
    return {registry: host.registry, username: flags.username, configPath: credentials.configPath}
  }
}
