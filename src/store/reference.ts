/**
 * Image references the store understands: `name:tag`, `name` (meaning `name:latest`),
 * `sha256:<hex>` and `name@sha256:<hex>`. Names follow the distribution grammar
 * (`[host[:port]/]path/components`), tags the Docker tag grammar.
 */
import {AegisError} from '../errors.js'
import {isSha256Digest} from './digest.js'

export type ImageReference =
  | {kind: 'tag'; name: string; tag: string; /** false when the tag was defaulted to `latest` */ explicitTag: boolean}
  | {kind: 'digest'; digest: string; name?: string}

export const DEFAULT_TAG = 'latest'

/** The standard annotation; the store writes the full `name:tag` into it (e.g. `openclaw:1.0.0`). */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name'

const PATH_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/
const DOMAIN = /^(?:localhost|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::[0-9]+)?$/
const TAG = /^[\w][\w.-]{0,127}$/
/**
 * The image-layout spec's grammar for `org.opencontainers.image.ref.name`; skopeo and umoci
 * refuse `oci:DIR:REF` when REF does not match it, so every stored name:tag must.
 */
const OCI_REF_NAME = /^[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*(?:\/[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*)*$/

const REFERENCE_HINT = 'use NAME[:TAG] or a digest, e.g. openclaw:1.0.0 or sha256:<64 hex digits>'

export function parseReference(reference: string): ImageReference {
  if (isSha256Digest(reference)) return {kind: 'digest', digest: reference}
  const at = reference.indexOf('@')
  if (at !== -1) {
    const name = reference.slice(0, at)
    const digest = reference.slice(at + 1)
    if (!isSha256Digest(digest) || !isValidName(name)) throw invalidReference(reference)
    return {kind: 'digest', digest, name}
  }
  const split = splitNameAndTag(reference)
  if (!split || !isValidName(split.name) || (split.tag !== undefined && !TAG.test(split.tag))) throw invalidReference(reference)
  const tag = split.tag ?? DEFAULT_TAG
  if (!OCI_REF_NAME.test(`${split.name}:${tag}`)) {
    throw new AegisError(`image reference "${reference}" cannot be stored in an OCI layout`, {
      hint: 'start the tag with a letter or digit and avoid doubled separators such as "__"',
    })
  }
  return {kind: 'tag', name: split.name, tag, explicitTag: split.tag !== undefined}
}

/** A reference that can be assigned (a tag), not a digest. */
export function parseTagReference(reference: string): {name: string; tag: string; explicitTag: boolean} {
  const parsed = parseReference(reference)
  if (parsed.kind !== 'tag') {
    throw new AegisError(`"${reference}" is a digest; a tag is needed here`, {hint: 'use NAME[:TAG], e.g. openclaw:1.0.0'})
  }
  return parsed
}

/** The `org.opencontainers.image.ref.name` value the store writes: the full `name:tag`. */
export function formatRefName(name: string, tag: string): string {
  return `${name}:${tag}`
}

/** Reads a ref.name back into name and tag; a bare value (as umoci writes) is a tag with no name. */
export function splitRefName(refName: string): {name: string; tag: string} {
  const split = splitNameAndTag(refName)
  if (split?.tag === undefined) return {name: '', tag: refName}
  return {name: split.name, tag: split.tag}
}

function splitNameAndTag(reference: string): {name: string; tag?: string} | undefined {
  if (reference.length === 0 || reference.length > 255 + 129) return undefined
  const colon = reference.lastIndexOf(':')
  // A colon before the last slash belongs to a registry port (localhost:5000/app), not a tag.
  if (colon === -1 || colon < reference.lastIndexOf('/')) return {name: reference}
  return {name: reference.slice(0, colon), tag: reference.slice(colon + 1)}
}

function isValidName(name: string): boolean {
  if (name.length === 0 || name.length > 255) return false
  const components = name.split('/')
  const first = components[0] ?? ''
  const hasDomain = components.length > 1 && (first.includes('.') || first.includes(':') || first === 'localhost')
  if (hasDomain && !DOMAIN.test(first)) return false
  return components.slice(hasDomain ? 1 : 0).every((component) => PATH_COMPONENT.test(component))
}

function invalidReference(reference: string): AegisError {
  return new AegisError(`invalid image reference "${reference}"`, {hint: REFERENCE_HINT})
}
