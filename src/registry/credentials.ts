/**
 * Registry credentials the way docker keeps them: `config.json` in `$DOCKER_CONFIG` or
 * `~/.docker`, looked up as `credHelpers[host]`, then `credsStore`, then `auths[host]`;
 * helpers are `docker-credential-<name> get|store|erase` programs talking JSON on stdin/stdout.
 */
import {randomBytes} from 'node:crypto'
import {mkdir, readFile, rename, writeFile} from 'node:fs/promises'
import {homedir} from 'node:os'
import {dirname, join} from 'node:path'
import {AegisError, messageOf} from '../errors.js'
import {DOCKER_HUB} from '../oci/reference.js'

export interface Credential {
  username?: string
  password?: string
  /** A refresh token (docker's `identitytoken`), exchanged at the token endpoint with OAuth2. */
  identityToken?: string
  /** A bearer token sent as is (docker's `registrytoken`). */
  registryToken?: string
}

/** Where credentials for a registry host come from. */
export type CredentialSource = (registry: string) => Promise<Credential | undefined>

interface AuthEntry {
  auth?: string
  username?: string
  password?: string
  identitytoken?: string
  registrytoken?: string
}

interface DockerConfig {
  auths?: Record<string, AuthEntry>
  credHelpers?: Record<string, string>
  credsStore?: string
  [other: string]: unknown
}

const HUB_KEY = 'https://index.docker.io/v1/'
const TOKEN_USERNAME = '<token>'

export class DockerCredentials {
  private readonly env: NodeJS.ProcessEnv

  constructor(options: {env?: NodeJS.ProcessEnv} = {}) {
    this.env = options.env ?? process.env
  }

  get configPath(): string {
    const dir = this.env.DOCKER_CONFIG || join(this.env.HOME || homedir(), '.docker')
    return join(dir, 'config.json')
  }

  /** A CredentialSource bound to this config. */
  readonly source: CredentialSource = (registry) => this.get(registry)

  async get(registry: string): Promise<Credential | undefined> {
    const config = await this.readConfig()
    const key = configKey(registry)
    const helper = findEntry(config.credHelpers, registry) ?? config.credsStore
    if (helper) {
      const fromHelper = await this.helperGet(helper, key)
      if (fromHelper) return fromHelper
    }
    const entry = findEntry(config.auths, registry)
    return entry ? credentialFromEntry(entry, this.configPath, key) : undefined
  }

  /** Saves a username and password like `docker login`: into the helper when one is set, else `auths[host].auth`. */
  async store(registry: string, credential: {username: string; password: string}): Promise<void> {
    const config = await this.readConfig()
    const key = configKey(registry)
    const helper = config.credHelpers?.[key] ?? config.credsStore
    config.auths ??= {}
    if (helper) {
      await this.runHelper(
        helper,
        'store',
        JSON.stringify({ServerURL: key, Username: credential.username, Secret: credential.password}),
      )
      config.auths[key] = {}
    } else {
      config.auths[key] = {auth: Buffer.from(`${credential.username}:${credential.password}`).toString('base64')}
    }
    await this.writeConfig(config)
  }

  /** Forgets the credentials for a registry like `docker logout`. True when there were any. */
  async erase(registry: string): Promise<boolean> {
    const config = await this.readConfig()
    const key = configKey(registry)
    const helper = config.credHelpers?.[key] ?? config.credsStore
    let erased = false
    if (helper) {
      const result = await this.runHelper(helper, 'erase', key, {allowFailure: true})
      erased = result.ok
    }
    if (config.auths && key in config.auths) {
      delete config.auths[key]
      erased = true
      await this.writeConfig(config)
    }
    return erased
  }

  /** The helpers the config names (`credsStore` and every `credHelpers` entry), each once. */
  async helperNames(): Promise<string[]> {
    const config = await this.readConfig()
    return [
      ...new Set(
        [config.credsStore, ...Object.values(config.credHelpers ?? {})].filter(
          (name): name is string => typeof name === 'string' && name !== '',
        ),
      ),
    ]
  }

  private async readConfig(): Promise<DockerConfig> {
    let text: string
    try {
      text = await readFile(this.configPath, 'utf8')
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return {}
      throw new AegisError(`Cannot read ${this.configPath}: ${messageOf(error)}`)
    }
    try {
      const parsed: unknown = JSON.parse(text)
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new Error('not a JSON object')
      return parsed as DockerConfig
    } catch (error) {
      throw new AegisError(`${this.configPath} is not valid JSON: ${messageOf(error)}`, {
        hint: 'Fix or remove the file; it holds docker registry credentials.',
      })
    }
  }

  private async writeConfig(config: DockerConfig): Promise<void> {
    await mkdir(dirname(this.configPath), {recursive: true, mode: 0o700})
    const temp = `${this.configPath}.${randomBytes(6).toString('hex')}.tmp`
    await writeFile(temp, `${JSON.stringify(config, null, '\t')}\n`, {mode: 0o600})
    await rename(temp, this.configPath)
  }

  private async helperGet(helper: string, key: string): Promise<Credential | undefined> {
    const result = await this.runHelper(helper, 'get', key, {allowFailure: true})
    if (!result.ok) {
      if (/not found|no credentials/i.test(result.output)) return undefined
      throw new AegisError(`The credential helper docker-credential-${helper} failed to look up ${key}.`, {
        hint: `Run \`echo ${key} | docker-credential-${helper} get\` to see why.`,
      })
    }
    let parsed: {Username?: unknown; Secret?: unknown}
    try {
      parsed = JSON.parse(result.output) as typeof parsed
    } catch {
      throw new AegisError(
        `The credential helper docker-credential-${helper} printed something that is not JSON for ${key}.`,
      )
    }
    const username = typeof parsed.Username === 'string' ? parsed.Username : undefined
    const secret = typeof parsed.Secret === 'string' ? parsed.Secret : undefined
    if (!secret) return undefined
    return username === TOKEN_USERNAME ? {identityToken: secret} : {username, password: secret}
  }

  /** Runs a helper; its output is never put in an error because it may hold the secret. */
  private async runHelper(
    helper: string,
    action: 'get' | 'store' | 'erase',
    input: string,
    options: {allowFailure?: boolean} = {},
  ) {
    const program = `docker-credential-${helper}`
    // Loaded here, not at the top: most commands never run a helper.
    const {execFileText} = await import('../exec.js')
    // Ours plus this client's environment: a helper may need our PATH or HOME.
    const result = await execFileText(program, [action], {
      input,
      env: {...process.env, ...this.env},
      timeoutMs: 30_000,
    }).catch((error: unknown) => {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        throw new AegisError(`The credential helper ${program} named in ${this.configPath} is not installed.`, {
          hint: `Install ${program} or remove it from ${this.configPath}; run \`aegis-kit doctor\` to check the rest.`,
        })
      }
      return undefined // It could not start otherwise (not executable, say): a failure like any other.
    })
    const ok = result !== undefined && !result.timedOut && result.exitCode === 0
    if (!ok && !options.allowFailure) {
      throw new AegisError(
        `The credential helper ${program} failed to ${action} credentials (exit code ${result?.exitCode ?? 'none'}).`,
      )
    }
    return {ok, output: (result?.stdout ?? '').trim()}
  }
}

/** The key docker uses for a registry in config.json: the host, or the legacy URL for Docker Hub. */
export function configKey(registry: string): string {
  return registry === DOCKER_HUB || registry === 'index.docker.io' || registry === 'registry-1.docker.io'
    ? HUB_KEY
    : registry
}

/** Entries may be keyed `host`, `https://host` or `https://host/v1/`: compare by host. */
function findEntry<T>(entries: Record<string, T> | undefined, registry: string): T | undefined {
  if (!entries) return undefined
  const key = configKey(registry)
  if (key in entries) return entries[key]
  const wanted = hostOfKey(key)
  for (const [name, value] of Object.entries(entries)) {
    if (hostOfKey(name) === wanted) return value
  }
  return undefined
}

function hostOfKey(key: string): string {
  return key
    .replace(/^[a-z]+:\/\//i, '')
    .replace(/\/.*$/, '')
    .toLowerCase()
}

function credentialFromEntry(entry: AuthEntry, configPath: string, key: string): Credential | undefined {
  const credential: Credential = {}
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, 'base64').toString('utf8')
    const colon = decoded.indexOf(':')
    if (colon === -1) throw new AegisError(`The "auth" for ${key} in ${configPath} is not base64 of user:password.`)
    credential.username = decoded.slice(0, colon)
    credential.password = decoded.slice(colon + 1)
  } else if (entry.username && entry.password) {
    credential.username = entry.username
    credential.password = entry.password
  }
  if (entry.identitytoken) credential.identityToken = entry.identitytoken
  if (entry.registrytoken) credential.registryToken = entry.registrytoken
  return Object.keys(credential).length > 0 ? credential : undefined
}
