/**
 * A real registry for tests: Debian's `docker-registry` (CNCF distribution 2.8) on 127.0.0.1,
 * a free port and a temp storage dir, with no auth, htpasswd Basic auth, or token auth backed by
 * a token issuer written here (JWTs signed with a key whose self-signed cert the registry trusts);
 * plain HTTP, or HTTPS with a self-signed certificate for 127.0.0.1 (`tls: true`).
 *
 *   const registry = await startRegistry({auth: 'basic'})
 *   ... registry.host, registry.credentials ...
 *   await registry.stop()
 */
import {execFileSync, spawn, type ChildProcess} from 'node:child_process'
import {createPrivateKey, randomBytes, sign, X509Certificate, type KeyObject} from 'node:crypto'
import {createWriteStream} from 'node:fs'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {createServer, type IncomingMessage, type Server, type ServerResponse} from 'node:http'
import {get as httpsGet} from 'node:https'
import {createServer as createNetServer} from 'node:net'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

export type RegistryAuth = 'none' | 'basic' | 'token'

export interface TokenRequestRecord {
  method: string
  grantType?: string
  scopes: string[]
  /** Whether the request carried Basic credentials. */
  basic: boolean
  status: number
}

export interface TestRegistry {
  /** `127.0.0.1:<port>`, what image references use. */
  host: string
  /** `http://127.0.0.1:<port>`, or https:// with `tls`. */
  url: string
  port: number
  /** The registry's filesystem storage root (`docker/registry/v2/...` inside). */
  storageDir: string
  auth: RegistryAuth
  /** The one user of basic and token registries. */
  credentials?: {username: string; password: string}
  /** Token registries: the issuer's URL and every request it answered. */
  tokenServer?: {url: string; requests: TokenRequestRecord[]}
  /** Path of one blob's data file on disk (to tamper with it). */
  blobPath(digest: string): string
  /** The registry's log so far (stdout and stderr). */
  logs(): Promise<string>
  /** Kills the registry process (storage stays). */
  kill(): Promise<void>
  /** Starts it again on the same port with the same storage. */
  restart(): Promise<void>
  /** Stops everything and removes the temp dir. */
  stop(): Promise<void>
}

const USERNAME = 'aegis-tester'
// Characters that need care in Basic auth, JSON and URLs, so leaks and encoding bugs show up.
const PASSWORD = `pw:${randomBytes(6).toString('hex')}!@%+"/`
const SERVICE = 'aegis-test-registry'
const ISSUER = 'aegis-test-issuer'

export async function startRegistry(options: {auth?: RegistryAuth; tls?: boolean} = {}): Promise<TestRegistry> {
  const auth = options.auth ?? 'none'
  const dir = await mkdtemp(join(tmpdir(), 'aegis-registry-'))
  const storageDir = join(dir, 'storage')
  const port = await freePort()
  const credentials = auth === 'none' ? undefined : {username: USERNAME, password: PASSWORD}
  let authConfig = ''
  let tokenServer: Awaited<ReturnType<typeof startTokenIssuer>> | undefined

  if (auth === 'basic') {
    await writeFile(join(dir, 'htpasswd'), `${USERNAME}:${bcrypt(PASSWORD)}\n`)
    authConfig = `auth:\n  htpasswd:\n    realm: aegis-test\n    path: ${join(dir, 'htpasswd')}\n`
  } else if (auth === 'token') {
    selfSignedCertificate(join(dir, 'token.key'), join(dir, 'token.crt'), {subject: 'aegis-test-token-issuer'})
    tokenServer = await startTokenIssuer(
      createPrivateKey(await readFile(join(dir, 'token.key'))),
      new X509Certificate(await readFile(join(dir, 'token.crt'))),
      {username: USERNAME, password: PASSWORD},
    )
    authConfig = [
      'auth:',
      '  token:',
      `    realm: ${tokenServer.url}/token`,
      `    service: ${SERVICE}`,
      `    issuer: ${ISSUER}`,
      `    rootcertbundle: ${join(dir, 'token.crt')}`,
      '',
    ].join('\n')
  }

  let tlsConfig = ''
  if (options.tls) {
    selfSignedCertificate(join(dir, 'tls.key'), join(dir, 'tls.crt'), {subject: '127.0.0.1', ip: '127.0.0.1'})
    tlsConfig = `  tls:\n    certificate: ${join(dir, 'tls.crt')}\n    key: ${join(dir, 'tls.key')}\n`
  }

  const configPath = join(dir, 'config.yml')
  await writeFile(
    configPath,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      '  accesslog:',
      '    disabled: true',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storageDir}`,
      '  delete:',
      '    enabled: true',
      '  maintenance:',
      '    uploadpurging:',
      '      enabled: false',
      'http:',
      `  addr: 127.0.0.1:${port}`,
      tlsConfig,
      authConfig,
    ].join('\n'),
  )

  const logPath = join(dir, 'registry.log')
  let child: ChildProcess | undefined
  const url = `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`

  const launch = async () => {
    const log = createWriteStream(logPath, {flags: 'a'})
    child = spawn('docker-registry', ['serve', configPath], {stdio: ['ignore', 'pipe', 'pipe']})
    child.stdout?.pipe(log)
    child.stderr?.pipe(log)
    const deadline = Date.now() + 20_000
    for (;;) {
      if (child.exitCode !== null) throw new Error(`docker-registry exited: ${await readFile(logPath, 'utf8')}`)
      try {
        const status = await ping(`${url}/v2/`)
        if (status === 200 || status === 401) return
      } catch {
        // Not listening yet.
      }
      if (Date.now() > deadline) throw new Error(`docker-registry did not start: ${await readFile(logPath, 'utf8')}`)
      await sleep(50)
    }
  }

  const kill = async () => {
    const running = child
    child = undefined
    if (!running || running.exitCode !== null) return
    const exited = new Promise((resolve) => running.once('exit', resolve))
    running.kill('SIGKILL')
    await exited
  }

  await launch()
  return {
    host: `127.0.0.1:${port}`,
    url,
    port,
    storageDir,
    auth,
    credentials,
    tokenServer: tokenServer && {url: tokenServer.url, requests: tokenServer.requests},
    blobPath: (digest) => {
      const hex = digest.replace(/^sha256:/, '')
      return join(storageDir, 'docker/registry/v2/blobs/sha256', hex.slice(0, 2), hex, 'data')
    },
    logs: () => readFile(logPath, 'utf8'),
    kill,
    restart: async () => {
      await kill()
      await launch()
    },
    stop: async () => {
      await kill()
      await tokenServer?.close()
      await rm(dir, {recursive: true, force: true})
    },
  }
}

/** The status of GET `url`; HTTPS without checking the (self-signed) certificate. */
async function ping(url: string): Promise<number> {
  if (url.startsWith('http:')) {
    const response = await fetch(url)
    await response.body?.cancel()
    return response.status
  }
  return new Promise((resolve, reject) => {
    httpsGet(url, {rejectUnauthorized: false}, (response) => {
      response.resume()
      resolve(response.statusCode ?? 0)
    }).on('error', reject)
  })
}

/**
 * Writes an EC P-256 key and a self-signed certificate for it (valid two days) with openssl:
 * `subject` is its CN; `ip`, when given, its subjectAltName, for a TLS server on that address.
 */
export function selfSignedCertificate(keyPath: string, certPath: string, name: {subject: string; ip?: string}): void {
  const altName = name.ip === undefined ? [] : ['-addext', `subjectAltName=IP:${name.ip}`]
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      keyPath,
      '-out',
      certPath,
      '-days',
      '2',
      '-subj',
      `/CN=${name.subject}`,
      ...altName,
    ],
    {stdio: 'ignore'},
  )
}

export async function freePort(): Promise<number> {
  const server = createNetServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  await new Promise((resolve) => server.close(resolve))
  if (address === null || typeof address === 'string') throw new Error('no port')
  return address.port
}

/** A bcrypt hash for htpasswd: apache2-utils' htpasswd when installed, else Python's crypt (glibc/libxcrypt). */
function bcrypt(password: string): string {
  try {
    return execFileSync('htpasswd', ['-nbB', 'u', password], {encoding: 'utf8'}).trim().split(':')[1]!
  } catch {
    const script = 'import crypt,sys; print(crypt.crypt(sys.argv[1], crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))'
    const hash = execFileSync('python3', ['-W', 'ignore', '-c', script, password], {encoding: 'utf8'}).trim()
    if (!hash.startsWith('$2')) throw new Error('could not make a bcrypt hash: install apache2-utils (htpasswd)')
    return hash
  }
}

/** The token service distribution's token auth talks to (docker's token spec plus OAuth2 refresh). */
async function startTokenIssuer(key: KeyObject, cert: X509Certificate, user: {username: string; password: string}) {
  const requests: TokenRequestRecord[] = []
  const refreshTokens = new Map<string, string>()

  const issue = (subject: string, scopes: string[]) => {
    const now = Math.floor(Date.now() / 1000)
    const access = scopes.flatMap((scope) => {
      const [type, ...rest] = scope.split(':')
      const actions = rest.pop()?.split(',') ?? []
      return type ? [{type, name: rest.join(':'), actions}] : []
    })
    const header = {alg: 'ES256', typ: 'JWT', x5c: [cert.raw.toString('base64')]}
    const claims = {
      iss: ISSUER,
      sub: subject,
      aud: SERVICE,
      exp: now + 300,
      nbf: now - 10,
      iat: now,
      jti: randomBytes(8).toString('hex'),
      access,
    }
    const signingInput = `${base64url(JSON.stringify(header))}.${base64url(JSON.stringify(claims))}`
    const signature = sign('sha256', Buffer.from(signingInput), {key, dsaEncoding: 'ieee-p1363'})
    return `${signingInput}.${base64url(signature)}`
  }

  const handle = async (request: IncomingMessage, response: ServerResponse) => {
    const url = new URL(request.url ?? '/', 'http://localhost')
    const chunks: Buffer[] = []
    for await (const chunk of request) chunks.push(chunk as Buffer)
    const form = new URLSearchParams(Buffer.concat(chunks).toString('utf8'))
    const authorization = request.headers.authorization ?? ''
    const basic = authorization.startsWith('Basic ')
    const record: TokenRequestRecord = {method: request.method ?? '', scopes: [], basic, status: 200}
    requests.push(record)
    const reply = (status: number, body: unknown) => {
      record.status = status
      response.writeHead(status, {'content-type': 'application/json'}).end(JSON.stringify(body))
    }

    let subject: string | undefined
    let offerRefresh = false
    if (request.method === 'GET') {
      record.scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' '))
      if (basic) {
        const decoded = Buffer.from(authorization.slice(6), 'base64').toString('utf8')
        if (decoded !== `${user.username}:${user.password}`)
          return reply(401, {errors: [{code: 'UNAUTHORIZED', message: 'invalid username or password'}]})
        subject = user.username
        offerRefresh = url.searchParams.get('offline_token') === 'true'
      }
    } else if (request.method === 'POST') {
      record.grantType = form.get('grant_type') ?? undefined
      record.scopes = (form.get('scope') ?? '').split(' ').filter(Boolean)
      if (record.grantType === 'refresh_token') {
        subject = refreshTokens.get(form.get('refresh_token') ?? '')
        if (!subject) return reply(401, {error: 'invalid_grant', error_description: 'unknown refresh token'})
      } else if (record.grantType === 'password') {
        if (form.get('username') !== user.username || form.get('password') !== user.password) {
          return reply(401, {error: 'invalid_grant', error_description: 'invalid username or password'})
        }
        subject = user.username
        offerRefresh = form.get('access_type') === 'offline'
      } else {
        return reply(400, {error: 'unsupported_grant_type'})
      }
    } else {
      return reply(405, {error: 'method not allowed'})
    }
    // Anonymous callers get a token with no access, as public registries do for private repos.
    const token = issue(subject ?? '', subject ? record.scopes : [])
    const body: Record<string, unknown> = {access_token: token, expires_in: 300, issued_at: new Date().toISOString()}
    if (offerRefresh && subject) {
      const refresh = randomBytes(16).toString('hex')
      refreshTokens.set(refresh, subject)
      body.refresh_token = refresh
    }
    reply(200, body)
  }

  const server: Server = createServer((request, response) => {
    handle(request, response).catch(() => response.writeHead(500).end())
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return {
    url: `http://127.0.0.1:${address.port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

function base64url(data: string | Buffer): string {
  return Buffer.from(data).toString('base64url')
}
