/**
 * The registry client's pure parts: references, challenges, scopes, Retry-After, URL redaction,
 * docker config credentials (with a real helper script). No registry needed.
 */
import {chmod, mkdir, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {afterAll, beforeAll, describe, expect, it} from 'vitest'
import {AegisError} from '../../src/errors.js'
import {mergeScopes, parseChallenges} from '../../src/registry/auth.js'
import {DockerCredentials} from '../../src/registry/credentials.js'
import {parseReference} from '../../src/oci/reference.js'
import {describeErrorBody, redactUrl} from '../../src/registry/registry-error.js'
import {isTransientError, parseRetryAfter} from '../../src/registry/retry.js'

const DIGEST = `sha256:${'a'.repeat(64)}`

describe('parseReference', () => {
  it('normalises Docker Hub names and sends API calls to registry-1.docker.io over HTTPS', () => {
    expect(parseReference('alpine')).toEqual({
      registry: 'docker.io',
      apiHost: 'registry-1.docker.io',
      repository: 'library/alpine',
      tag: undefined,
      digest: undefined,
      plainHttp: false,
      insecure: false,
    })
    expect(parseReference('index.docker.io/acme/kit:1.0')).toMatchObject({
      registry: 'docker.io',
      repository: 'acme/kit',
      tag: '1.0',
    })
    expect(parseReference('docker.io/ubuntu@' + DIGEST)).toMatchObject({repository: 'library/ubuntu', digest: DIGEST})
  })

  it('reads registries with ports, tags and digests together', () => {
    expect(parseReference(`ghcr.io/acme/tools/kit:v1.2-rc.1@${DIGEST}`)).toMatchObject({
      registry: 'ghcr.io',
      apiHost: 'ghcr.io',
      repository: 'acme/tools/kit',
      tag: 'v1.2-rc.1',
      digest: DIGEST,
      plainHttp: false,
    })
    expect(parseReference('registry.example.com:5000/a/b')).toMatchObject({
      registry: 'registry.example.com:5000',
      repository: 'a/b',
      tag: undefined,
    })
  })

  it('uses plain HTTP for loopback hosts and when asked, HTTPS otherwise; --insecure tries HTTPS without checks first', () => {
    expect(parseReference('localhost:5000/kit:1').plainHttp).toBe(true)
    expect(parseReference('localhost/kit').plainHttp).toBe(true)
    expect(parseReference('127.0.0.1:41234/kit').plainHttp).toBe(true)
    expect(parseReference('[::1]:5000/kit')).toMatchObject({registry: '[::1]:5000', plainHttp: true})
    expect(parseReference('10.0.0.5:5000/kit').plainHttp).toBe(false)
    expect(parseReference('10.0.0.5:5000/kit', {plainHttp: true}).plainHttp).toBe(true)
    expect(parseReference('myregistry.local/kit', {insecure: true})).toMatchObject({plainHttp: false, insecure: true})
    expect(parseReference('127.0.0.1:5000/kit', {insecure: true})).toMatchObject({plainHttp: false, insecure: true})
    expect(parseReference('127.0.0.1:5000/kit', {insecure: true, plainHttp: true})).toMatchObject({
      plainHttp: true,
      insecure: false,
    })
  })

  it.each([
    ['', /empty/],
    ['Acme/Kit', /"Acme" is not a valid registry host|lowercase/],
    ['ghcr.io/Acme/kit', /lowercase/],
    ['ghcr.io/acme/kit:', /tag "" is invalid/],
    ['ghcr.io/acme/kit:-bad', /tag "-bad" is invalid/],
    ['ghcr.io/acme/kit@sha256:abc', /not a sha256 digest/],
    ['ghcr.io/acme/kit@md5:' + 'a'.repeat(32), /algorithm "md5" is not supported/],
    ['ghcr.io/acme//kit', /"" is not a valid repository path component/],
    ['ghcr.io/acme/kit__-x', /not a valid repository path component/],
    ['ghcr.io/', /repository name is missing/],
    ['a b', /whitespace/],
  ])('rejects %j saying what is wrong', (input, problem) => {
    expect(() => parseReference(input)).toThrow(AegisError)
    expect(() => parseReference(input)).toThrow(problem)
  })
})

describe('challenges and scopes', () => {
  it('parses Bearer challenges with quoted, escaped and comma-holding values', () => {
    const header =
      'Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull,push",error="insufficient_scope"'
    expect(parseChallenges(header)).toEqual([
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.example.com/token',
          service: 'registry.example.com',
          scope: 'repository:a/b:pull,push',
          error: 'insufficient_scope',
        },
      },
    ])
    expect(parseChallenges('Basic realm="say \\"hi\\"", Bearer realm=https://x/token')).toEqual([
      {scheme: 'basic', params: {realm: 'say "hi"'}},
      {scheme: 'bearer', params: {realm: 'https://x/token'}},
    ])
  })

  it('merges scopes per resource with sorted actions', () => {
    expect(mergeScopes(['repository:a:push', 'repository:b:pull'], ['repository:a:pull', 'repository:a:push'])).toEqual(
      ['repository:a:pull,push', 'repository:b:pull'],
    )
  })
})

describe('retry and error details', () => {
  it('reads Retry-After as seconds or an HTTP date', () => {
    const now = Date.parse('Wed, 21 Oct 2015 07:28:00 GMT')
    expect(parseRetryAfter('3', now)).toBe(3000)
    expect(parseRetryAfter('Wed, 21 Oct 2015 07:28:05 GMT', now)).toBe(5000)
    expect(parseRetryAfter('Wed, 21 Oct 2015 07:27:00 GMT', now)).toBe(0)
    expect(parseRetryAfter('soon', now)).toBeUndefined()
    expect(parseRetryAfter(null, now)).toBeUndefined()
  })

  it('treats dropped connections as transient and our own errors as final', () => {
    const reset = Object.assign(new Error('read ECONNRESET'), {code: 'ECONNRESET'})
    expect(isTransientError(new Error('GET failed', {cause: reset}))).toBe(true)
    expect(isTransientError(new Error('socket hang up'))).toBe(true)
    expect(isTransientError(new AegisError('Content sha256:x failed verification', {cause: reset}))).toBe(false)
    expect(isTransientError(new Error('ENOENT'))).toBe(false)
  })

  it('hides credentials and upload state in URLs', () => {
    expect(redactUrl('https://user:pw@r.example/v2/a/blobs/uploads/x?_state=SECRET&digest=sha256:1')).toBe(
      'https://r.example/v2/a/blobs/uploads/x?_state=%E2%80%A6&digest=sha256%3A1',
    )
  })

  it('reads distribution and OAuth2 error bodies', () => {
    expect(
      describeErrorBody('{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry","detail":"x"}]}'),
    ).toEqual({code: 'BLOB_UNKNOWN', text: 'BLOB_UNKNOWN: blob unknown to registry'})
    expect(describeErrorBody('{"error":"invalid_grant","error_description":"expired"}')).toEqual({
      code: 'invalid_grant',
      text: 'invalid_grant: expired',
    })
    expect(describeErrorBody('<html>')).toEqual({})
  })
})

describe('DockerCredentials', () => {
  let dir: string
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'aegis-creds-'))
  })
  afterAll(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  it('stores and erases like docker login/logout: base64 user:pass in auths, other fields kept', async () => {
    const config = join(dir, 'plain')
    await mkdir(config)
    await writeFile(
      join(config, 'config.json'),
      JSON.stringify({experimental: 'enabled', auths: {'other.example': {auth: 'eDp5'}}}),
    )
    const credentials = new DockerCredentials({env: {DOCKER_CONFIG: config}})
    await credentials.store('registry.example:5000', {username: 'me', password: 'p:ss'})
    const written = JSON.parse(await readFile(join(config, 'config.json'), 'utf8')) as {
      experimental: string
      auths: Record<string, {auth: string}>
    }
    expect(written.experimental).toBe('enabled')
    expect(written.auths['registry.example:5000']).toEqual({auth: Buffer.from('me:p:ss').toString('base64')})
    expect(await credentials.get('registry.example:5000')).toEqual({username: 'me', password: 'p:ss'})
    expect(await credentials.get('other.example')).toEqual({username: 'x', password: 'y'})
    expect(await credentials.erase('registry.example:5000')).toBe(true)
    expect(await credentials.get('registry.example:5000')).toBeUndefined()
    expect(await credentials.erase('registry.example:5000')).toBe(false)
  })

  it('keys Docker Hub as https://index.docker.io/v1/ and finds entries written as URLs', async () => {
    const config = join(dir, 'hub')
    await mkdir(config)
    const auth = Buffer.from('hubuser:hubpass').toString('base64')
    await writeFile(
      join(config, 'config.json'),
      JSON.stringify({
        auths: {'https://index.docker.io/v1/': {auth}, 'https://ghcr.io': {auth, identitytoken: 'refresh-me'}},
      }),
    )
    const credentials = new DockerCredentials({env: {DOCKER_CONFIG: config}})
    expect(await credentials.get('docker.io')).toEqual({username: 'hubuser', password: 'hubpass'})
    expect(await credentials.get('ghcr.io')).toEqual({
      username: 'hubuser',
      password: 'hubpass',
      identityToken: 'refresh-me',
    })
    expect(await credentials.get('quay.io')).toBeUndefined()
  })

  it('uses credsStore for store/get/erase, leaving an empty auths entry like docker', async () => {
    const config = join(dir, 'store')
    const bin = join(dir, 'bin')
    await mkdir(config)
    await mkdir(bin)
    const vault = join(dir, 'vault.json')
    // A file-backed credential helper speaking the docker-credential protocol.
    await writeFile(
      join(bin, 'docker-credential-filevault'),
      [
        '#!/bin/sh',
        'input=$(cat)',
        `case "$1" in`,
        `  store) printf '%s' "$input" > ${vault} ;;`,
        `  get) [ -f ${vault} ] && grep -q "\\"ServerURL\\":\\"$input\\"" ${vault} && cat ${vault} || { echo "credentials not found in native keychain"; exit 1; } ;;`,
        `  erase) rm -f ${vault} ;;`,
        'esac',
        '',
      ].join('\n'),
    )
    await chmod(join(bin, 'docker-credential-filevault'), 0o755)
    await writeFile(join(config, 'config.json'), JSON.stringify({credsStore: 'filevault'}))
    const credentials = new DockerCredentials({env: {DOCKER_CONFIG: config, PATH: `${bin}:${process.env.PATH}`}})
    await credentials.store('r.example', {username: 'u', password: 'top-secret'})
    expect(JSON.parse(await readFile(vault, 'utf8'))).toEqual({
      ServerURL: 'r.example',
      Username: 'u',
      Secret: 'top-secret',
    })
    const configText = await readFile(join(config, 'config.json'), 'utf8')
    expect(configText).not.toContain('top-secret')
    expect(JSON.parse(configText)).toEqual({credsStore: 'filevault', auths: {'r.example': {}}})
    expect(await credentials.get('r.example')).toEqual({username: 'u', password: 'top-secret'})
    expect(await credentials.get('elsewhere.example')).toBeUndefined()
    expect(await credentials.erase('r.example')).toBe(true)
    expect(await credentials.get('r.example')).toBeUndefined()
  })

  it('says which helper is missing', async () => {
    const config = join(dir, 'missing')
    await mkdir(config)
    await writeFile(join(config, 'config.json'), JSON.stringify({credHelpers: {'r.example': 'nosuchhelper'}}))
    await expect(
      new DockerCredentials({env: {DOCKER_CONFIG: config, PATH: '/nonexistent'}}).get('r.example'),
    ).rejects.toThrow(/docker-credential-nosuchhelper .* is not installed/)
  })
})
