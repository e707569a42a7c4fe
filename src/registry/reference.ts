/**
 * Image references: `[registry/]repository[:tag][@digest]`, normalised the way docker does
 * (`ubuntu` is `docker.io/library/ubuntu`), plus where to send API requests for them.
 */
import {AegisError} from '../errors.js'

export interface Reference {
  /** The registry as written in names: `docker.io`, `ghcr.io`, `127.0.0.1:5000`. */
  registry: string
  /** host[:port] that API requests go to (`registry-1.docker.io` for Docker Hub). */
  apiHost: string
  repository: string
  tag?: string
  digest?: string
  /** Talk HTTP instead of HTTPS (loopback registries, or asked for). */
  plainHttp: boolean
  /** HTTPS without certificate checks, falling back to plain HTTP when the registry has no TLS. */
  insecure: boolean
}

export interface ReferenceOptions {
  /** Use plain HTTP for this registry. */
  plainHttp?: boolean
  /**
   * Accept an insecure registry, as docker's `insecure-registries` and skopeo's
   * `--tls-verify=false` do: HTTPS without verifying the certificate, and plain HTTP when the
   * registry does not speak TLS. Also for loopback hosts, which otherwise get plain HTTP directly.
   */
  insecure?: boolean
}

export const DOCKER_HUB = 'docker.io'
const DOCKER_HUB_API = 'registry-1.docker.io'
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io'])

// distribution/reference grammar, one path component and a tag.
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/
const TAG = /^\w[\w.-]{0,127}$/
const SHA256_DIGEST = /^sha256:[a-f0-9]{64}$/
const ANY_DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/
const HOST = /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:.]+\])(?::\d{1,5})?$/

export function parseReference(input: string, options: ReferenceOptions = {}): Reference {
  const fail = (problem: string): never => {
    throw new AegisError(`Invalid image reference "${input}": ${problem}.`, {
      hint: 'Write it as [registry/]repository[:tag][@sha256:<digest>], e.g. ghcr.io/acme/kit:1.0',
    })
  }
  if (input.trim() === '') fail('it is empty')
  if (/\s/.test(input)) fail('it contains whitespace')

  let rest = input
  let digest: string | undefined
  const at = rest.indexOf('@')
  if (at !== -1) {
    digest = rest.slice(at + 1)
    rest = rest.slice(0, at)
    if (!ANY_DIGEST.test(digest)) fail(`"${digest}" is not a digest (expected sha256:<64 hex characters>)`)
    if (!digest.startsWith('sha256:')) fail(`digest algorithm "${digest.split(':')[0]}" is not supported (only sha256)`)
    if (!SHA256_DIGEST.test(digest)) fail(`"${digest}" is not a sha256 digest (expected 64 lowercase hex characters)`)
  }

  let tag: string | undefined
  const lastSlash = rest.lastIndexOf('/')
  const lastColon = rest.lastIndexOf(':')
  // A colon after the last slash separates a tag; one before it is a registry port.
  if (lastColon > lastSlash) {
    tag = rest.slice(lastColon + 1)
    rest = rest.slice(0, lastColon)
    if (!TAG.test(tag)) fail(`tag "${tag}" is invalid (letters, digits, _ . - only, at most 128, not starting with . or -)`)
  }
  if (rest === '') fail('the repository name is missing')

  let registry = DOCKER_HUB
  let repository = rest
  const slash = rest.indexOf('/')
  if (slash !== -1) {
    const first = rest.slice(0, slash)
    if (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('[') || first !== first.toLowerCase()) {
      registry = first
      repository = rest.slice(slash + 1)
    }
  }
  if (!HOST.test(registry)) fail(`"${registry}" is not a valid registry host`)
  if (DOCKER_HUB_ALIASES.has(registry.toLowerCase())) {
    registry = DOCKER_HUB
    if (!repository.includes('/')) repository = `library/${repository}`
  }
  if (repository === '') fail('the repository name is missing')
  if (repository !== repository.toLowerCase()) fail(`repository names must be lowercase (got "${repository}")`)
  for (const component of repository.split('/')) {
    if (!PATH_COMPONENT.test(component)) {
      fail(`"${component}" is not a valid repository path component (lowercase letters, digits and single . _ __ - separators)`)
    }
  }
  if (registry.length + 1 + repository.length > 255) fail('the name is longer than 255 characters')

  const apiHost = registry === DOCKER_HUB ? DOCKER_HUB_API : registry
  const plainHttp = Boolean(options.plainHttp) || (isLoopbackHost(apiHost) && !options.insecure)
  return {registry, apiHost, repository, tag, digest, plainHttp, insecure: Boolean(options.insecure) && !plainHttp}
}

/** True for localhost, 127.0.0.0/8 and ::1, with or without a port: these default to HTTP. */
export function isLoopbackHost(host: string): boolean {
  const hostname = host.startsWith('[') ? host.slice(1, host.indexOf(']')) : host.replace(/:\d+$/, '')
  return hostname === 'localhost' || hostname === '::1' || /^127\.\d+\.\d+\.\d+$/.test(hostname)
}

/** `http(s)://apiHost` with no trailing slash. */
export function baseUrl(ref: Pick<Reference, 'apiHost' | 'plainHttp'>): string {
  return `${ref.plainHttp ? 'http' : 'https'}://${ref.apiHost}`
}

/** The tag or digest a manifest request names: the digest when both are given. */
export function manifestReference(ref: Reference): string {
  return ref.digest ?? ref.tag ?? 'latest'
}

/** The canonical string, e.g. `docker.io/library/alpine:3.20@sha256:…`. */
export function formatReference(ref: Pick<Reference, 'registry' | 'repository' | 'tag' | 'digest'>): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`
}

export function isDigest(value: string): boolean {
  return SHA256_DIGEST.test(value)
}
