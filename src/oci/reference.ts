/**
 * Image references: one grammar (distribution/reference's, as docker reads it) for both places
 * a reference is written.
 *
 * - A registry reference, `[registry/]repository[:tag][@digest]`, normalised the way docker does
 *   (`ubuntu` is `docker.io/library/ubuntu`), plus where to send API requests for it
 *   (`parseReference`).
 * - A name in the local store, `name[:tag]`, `name@sha256:<hex>` or a bare `sha256:<hex>`, kept
 *   as written and stored as the layout's `org.opencontainers.image.ref.name` annotation
 *   (`parseLocalReference`, `formatRefName`, `splitRefName`).
 */
import {AegisError} from '../errors.js'
import {isSha256Digest} from './digest.js'

/** A reference to an image in a registry. */
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

/** A reference to an image in the local store. */
export type LocalReference =
  | {kind: 'tag'; name: string; tag: string /** false when the tag was defaulted to `latest` */; explicitTag: boolean}
  | {kind: 'digest'; digest: string; name?: string}

export const DEFAULT_TAG = 'latest'

/** The standard annotation; the store writes the full `name:tag` into it (e.g. `openclaw:1.0.0`). */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name'

export const DOCKER_HUB = 'docker.io'
const DOCKER_HUB_API = 'registry-1.docker.io'
const DOCKER_HUB_ALIASES = new Set(['docker.io', 'index.docker.io', 'registry-1.docker.io'])

// The distribution/reference grammar: one path component, a tag, any digest, a registry host.
const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/
const TAG = /^\w[\w.-]{0,127}$/
const ANY_DIGEST = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$/
const HOST =
  /^(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*|\[[a-fA-F0-9:.]+\])(?::\d{1,5})?$/
const MAX_NAME_LENGTH = 255
/**
 * The image-layout spec's grammar for `org.opencontainers.image.ref.name`; skopeo and umoci
 * refuse `oci:DIR:REF` when REF does not match it, so every stored name:tag must.
 */
const OCI_REF_NAME = /^[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*(?:\/[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*)*$/

const REMOTE_HINT = 'Write it as [registry/]repository[:tag][@sha256:<digest>], e.g. ghcr.io/acme/kit:1.0'
const LOCAL_HINT = 'use NAME[:TAG] or a digest, e.g. openclaw:1.0.0 or sha256:<64 hex digits>'

/** A reference taken apart, every part checked, nothing normalised. */
interface ReferenceParts {
  /** The registry host, when the first path component names one. */
  domain?: string
  /** The repository path after the domain. */
  path: string
  tag?: string
  digest?: string
}

/**
 * Splits `[domain/]path[:tag][@digest]` and checks each part, calling `fail` with what is wrong
 * in words. The first component is a domain when docker would read it as one: it has a `.` or
 * `:`, is `localhost` or an IPv6 literal, or has capitals (which no repository path may).
 */
function splitReference(input: string, fail: (problem: string) => never): ReferenceParts {
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
    if (!isSha256Digest(digest)) fail(`"${digest}" is not a sha256 digest (expected 64 lowercase hex characters)`)
  }

  let tag: string | undefined
  const lastSlash = rest.lastIndexOf('/')
  const lastColon = rest.lastIndexOf(':')
  // A colon after the last slash separates a tag; one before it is a registry port.
  if (lastColon > lastSlash) {
    tag = rest.slice(lastColon + 1)
    rest = rest.slice(0, lastColon)
    if (!TAG.test(tag))
      fail(`tag "${tag}" is invalid (letters, digits, _ . - only, at most 128, not starting with . or -)`)
  }
  if (rest === '') fail('the repository name is missing')

  let domain: string | undefined
  let path = rest
  const slash = rest.indexOf('/')
  if (slash !== -1) {
    const first = rest.slice(0, slash)
    if (
      first.includes('.') ||
      first.includes(':') ||
      first === 'localhost' ||
      first.startsWith('[') ||
      first !== first.toLowerCase()
    ) {
      domain = first
      path = rest.slice(slash + 1)
    }
  }
  if (domain !== undefined && !HOST.test(domain)) fail(`"${domain}" is not a valid registry host`)
  if (path === '') fail('the repository name is missing')
  if (path !== path.toLowerCase()) fail(`repository names must be lowercase (got "${path}")`)
  for (const component of path.split('/')) {
    if (!PATH_COMPONENT.test(component)) {
      fail(
        `"${component}" is not a valid repository path component (lowercase letters, digits and single . _ __ - separators)`,
      )
    }
  }
  return {domain, path, tag, digest}
}

/** A registry reference, Docker Hub's short names normalised (`alpine` → `docker.io/library/alpine`). */
export function parseReference(input: string, options: ReferenceOptions = {}): Reference {
  const fail = (problem: string): never => {
    throw new AegisError(`Invalid image reference "${input}": ${problem}.`, {hint: REMOTE_HINT})
  }
  const {domain, path, tag, digest} = splitReference(input, fail)
  let registry = domain ?? DOCKER_HUB
  let repository = path
  if (DOCKER_HUB_ALIASES.has(registry.toLowerCase())) {
    registry = DOCKER_HUB
    if (!repository.includes('/')) repository = `library/${repository}`
  }
  if (registry.length + 1 + repository.length > MAX_NAME_LENGTH)
    fail(`the name is longer than ${MAX_NAME_LENGTH} characters`)

  const apiHost = registry === DOCKER_HUB ? DOCKER_HUB_API : registry
  const plainHttp = Boolean(options.plainHttp) || (isLoopbackHost(apiHost) && !options.insecure)
  return {registry, apiHost, repository, tag, digest, plainHttp, insecure: Boolean(options.insecure) && !plainHttp}
}

/**
 * A name in the local store: `name[:tag]` (`latest` when left out), `name@sha256:<hex>` or a bare
 * `sha256:<hex>`. Names are kept as written (no Docker Hub normalisation): `alpine` and
 * `docker.io/library/alpine` are two names here, as in an OCI layout.
 */
export function parseLocalReference(reference: string): LocalReference {
  if (isSha256Digest(reference)) return {kind: 'digest', digest: reference}
  const fail = (problem: string): never => {
    throw new AegisError(`invalid image reference "${reference}": ${problem}`, {hint: LOCAL_HINT})
  }
  const {domain, path, tag, digest} = splitReference(reference, fail)
  const name = domain === undefined ? path : `${domain}/${path}`
  if (name.length > MAX_NAME_LENGTH) fail(`the name is longer than ${MAX_NAME_LENGTH} characters`)
  if (digest !== undefined) {
    // The store looks an image up by one or the other; a tag beside a digest would be ignored.
    if (tag !== undefined) fail('it has both a tag and a digest; give one of them')
    return {kind: 'digest', digest, name}
  }
  const storedTag = tag ?? DEFAULT_TAG
  if (!OCI_REF_NAME.test(formatRefName(name, storedTag))) {
    throw new AegisError(`image reference "${reference}" cannot be stored in an OCI layout`, {
      hint: 'start the tag with a letter or digit and avoid doubled separators such as "__"',
    })
  }
  return {kind: 'tag', name, tag: storedTag, explicitTag: tag !== undefined}
}

/** A local reference that can be assigned (a tag), not a digest. */
export function parseTagReference(reference: string): {name: string; tag: string; explicitTag: boolean} {
  const parsed = parseLocalReference(reference)
  if (parsed.kind !== 'tag') {
    throw new AegisError(`"${reference}" is a digest; a tag is needed here`, {
      hint: 'use NAME[:TAG], e.g. openclaw:1.0.0',
    })
  }
  return parsed
}

/** The `org.opencontainers.image.ref.name` value the store writes: the full `name:tag`. */
export function formatRefName(name: string, tag: string): string {
  return `${name}:${tag}`
}

/** Reads a ref.name back into name and tag; a bare value (as umoci writes) is a tag with no name. */
export function splitRefName(refName: string): {name: string; tag: string} {
  const colon = refName.lastIndexOf(':')
  // A colon before the last slash belongs to a registry port (localhost:5000/app), not a tag.
  if (colon === -1 || colon < refName.lastIndexOf('/')) return {name: '', tag: refName}
  return {name: refName.slice(0, colon), tag: refName.slice(colon + 1)}
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
  return ref.digest ?? ref.tag ?? DEFAULT_TAG
}

/** The canonical string, e.g. `docker.io/library/alpine:3.20@sha256:…`. */
export function formatReference(ref: Pick<Reference, 'registry' | 'repository' | 'tag' | 'digest'>): string {
  return `${ref.registry}/${ref.repository}${ref.tag ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`
}
