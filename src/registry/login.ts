/**
 * `aegis-kit login`: check a username and password against the registry with a real
 * authenticated request (GET /v2/ through the same auth flow pushes use: Basic, or a Bearer
 * token from the registry's token service) before anything is stored.
 */
import {AegisError, isAegisError, messageOf} from '../errors.js'
import {RegistryClient} from './auth.js'
import {baseUrl, parseReference, type ReferenceOptions} from '../oci/reference.js'
import {RegistryError, errorFromResponse} from './registry-error.js'

export interface RegistryHost {
  /** As docker names it in config.json keys and references: `docker.io`, `127.0.0.1:5000`. */
  registry: string
  apiHost: string
  plainHttp: boolean
  insecure: boolean
}

/** `ghcr.io`, `https://ghcr.io/`, `127.0.0.1:5000` → the registry host (Docker Hub aliases become docker.io). */
export function parseRegistryHost(input: string, options: ReferenceOptions = {}): RegistryHost {
  const host = input
    .trim()
    .replace(/^[a-z][a-z0-9+.-]*:\/\//i, '')
    .replace(/\/.*$/, '')
  if (host === '' || !(/[.:]/.test(host) || host === 'localhost' || host.startsWith('['))) {
    throw new AegisError(`"${input}" is not a registry host`, {
      hint: "give the registry's host name, e.g. ghcr.io, docker.io or 127.0.0.1:5000",
    })
  }
  const reference = parseReference(`${host}/aegis-kit/login`, options)
  return {
    registry: reference.registry,
    apiHost: reference.apiHost,
    plainHttp: reference.plainHttp,
    insecure: reference.insecure,
  }
}

/**
 * Resolves when the registry accepts `username`/`password`; throws an AegisError naming the
 * registry and user (never the password) otherwise.
 */
export async function verifyLogin(
  host: RegistryHost,
  credential: {username: string; password: string},
  options: {client?: RegistryClient} = {},
): Promise<void> {
  const client = options.client ?? new RegistryClient({credentials: async () => credential, retry: {maxAttempts: 2}})
  const url = new URL(`${baseUrl(host)}/v2/`)
  const refused = () =>
    new AegisError(
      `Login to ${host.registry} failed: the registry refused the username or password for user ${credential.username}.`,
      {
        hint: 'Check the username and password (or token) and try again; nothing was stored.',
      },
    )
  let result: Awaited<ReturnType<typeof client.send>>
  try {
    result = await client.send({method: 'GET', url, insecure: host.insecure}, host.registry, [])
  } catch (error) {
    // A token service refusing the password answers 401 or 403.
    if (error instanceof RegistryError && (error.status === 401 || error.status === 403)) throw refused()
    if (isAegisError(error))
      throw new AegisError(`Login to ${host.registry} failed: ${error.message}`, {hint: error.hint, cause: error})
    throw new AegisError(`Login to ${host.registry} failed: ${messageOf(error)}`, {cause: error})
  }
  const {response} = result
  if (response.status === 200) {
    response.discard()
    return
  }
  if (response.status === 401 || response.status === 403) {
    response.discard()
    throw refused()
  }
  const error = await errorFromResponse('GET', result.url, response, {
    what: `Login to ${host.registry}`,
    attempts: result.attempts,
  })
  throw error
}
