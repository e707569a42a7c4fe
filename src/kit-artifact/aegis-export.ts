/**
 * A kit in the format of Aegis (github.com/xfeldman/aegisvm), so that Aegis's daemon can run a kit
 * built with aegis-kit: Aegis's kit file (`kits/<name>.json`, its `internal/kit/kit.go` Manifest)
 * and, per profile, the body of `POST /v1/instances` (`createInstanceRequest` in
 * `internal/api/server.go`) and the bodies of `POST /v1/instances/{handle}/expose`
 * (`exposeRequest`). Only names of secrets are written, never values. docs/aegis-export.md maps
 * every field.
 */
import {mkdir} from 'node:fs/promises'
import path from 'node:path'
import {AegisError} from '../errors.js'
import {statIfExists, writeFileAtomically} from '../fs-util.js'
import type {Kit} from '../kit/kit.js'
import type {AegisKitManifest, Capabilities, Command, Profile} from '../kit/manifest.generated.js'
import {kitImageReference} from '../kit/pulled.js'
import {sizeToMiB} from '../kit/units.js'

/** Aegis's CapabilityToken claims a kit or an instance request may carry (`internal/lifecycle/token.go`). */
export interface AegisCapabilities {
  spawn: boolean
  spawn_depth: number
  max_children: number
  allowed_images?: string[]
  max_memory_mb: number
  max_vcpus: number
  allowed_secrets?: string[]
  max_expose_ports: number
}

/** Aegis's kit file, `kits/<name>.json` (`Manifest` in `internal/kit/kit.go`). */
export interface AegisKitFile {
  name: string
  version: string
  description: string
  usage?: string
  image: {base: string; inject: string[]}
  defaults: {command: string[]; capabilities?: AegisCapabilities}
}

/** The body of Aegis's `POST /v1/instances` (`createInstanceRequest` in `internal/api/server.go`). */
export interface AegisInstanceRequest {
  image_ref: string
  command: string[]
  env?: Record<string, string>
  secrets?: string[]
  handle: string
  workspace: string
  memory_mb?: number
  vcpus?: number
  idle_policy?: string
  capabilities?: AegisCapabilities
  kit: string
}

/** The body of Aegis's `POST /v1/instances/{id}/expose` (`exposeRequest` in `internal/api/server.go`). */
export interface AegisExposeRequest {
  port: number
  protocol: 'http' | 'tcp'
}

export interface AegisInstance {
  /** The profile it was made from (`default` for a kit without profiles). */
  profile: string
  request: AegisInstanceRequest
  /** Ports to expose once the instance exists; Aegis's create request has no field for them. */
  exposes: AegisExposeRequest[]
}

export interface AegisExport {
  kitFile: AegisKitFile
  instances: AegisInstance[]
  /** Manifest fields that decide how an instance runs and that Aegis cannot express (field paths). */
  leftOut: string[]
}

export interface AegisExportOptions {
  /** What Aegis pulls: a registry reference (default: the local store name, NAME:VERSION). */
  imageRef?: string
  /** The profile whose command and capabilities become the kit file's defaults. */
  profile?: string
}

/** A kit without profiles is exported as one instance of this name. */
export const DEFAULT_INSTANCE = 'default'

/** The kit as Aegis's kit file and instance requests. Reads nothing but the manifest (and where the store is). */
export function exportForAegis(kit: Kit, options: AegisExportOptions = {}): AegisExport {
  const {manifest} = kit
  const imageRef = options.imageRef ?? kitImageReference(kit)
  const profiles = Object.entries(manifest.profiles ?? {})
  if (options.profile !== undefined && manifest.profiles?.[options.profile] === undefined)
    throw new AegisError(`kit ${manifest.name} has no profile "${options.profile}"`, {
      hint: profiles.length > 0 ? `its profiles: ${profiles.map(([name]) => name).join(', ')}` : 'it has no profiles',
    })
  const chosen = options.profile === undefined ? undefined : manifest.profiles?.[options.profile]
  const kitFile: AegisKitFile = {
    name: manifest.name,
    version: manifest.version,
    description: manifest.description ?? '',
    usage: usageText(manifest),
    image: {base: imageRef, inject: []},
    defaults: {
      command: instanceCommand(manifest, chosen, options.profile ?? 'the image'),
      ...(chosen?.capabilities ? {capabilities: aegisCapabilities(chosen.capabilities, imageRef)} : {}),
    },
  }
  const instances =
    profiles.length > 0
      ? profiles.map(([name, profile]) => instanceFor(manifest, name, profile, imageRef))
      : [instanceFor(manifest, DEFAULT_INSTANCE, undefined, imageRef)]
  return {kitFile, instances, leftOut: leftOutFields(manifest)}
}

function instanceFor(
  manifest: AegisKitManifest,
  name: string,
  profile: Profile | undefined,
  imageRef: string,
): AegisInstance {
  const handle = `${manifest.name}-${name}`
  const env = {...manifest.image?.env, ...profile?.env}
  const secrets = profile?.secrets ?? (manifest.secrets?.required ?? []).map((secret) => secret.name)
  const memory = profile?.memory_mb ?? (manifest.resources?.memory ? sizeToMiB(manifest.resources.memory) : undefined)
  const vcpus =
    profile?.vcpus ?? (manifest.resources?.cpu === undefined ? undefined : Math.ceil(manifest.resources.cpu))
  const idlePolicy = profile?.idle_policy ?? manifest.policies?.idle_policy
  const request: AegisInstanceRequest = {
    image_ref: imageRef,
    command: instanceCommand(manifest, profile, `profile ${name}`),
    ...(Object.keys(env).length > 0 ? {env} : {}),
    ...(secrets.length > 0 ? {secrets: [...secrets]} : {}),
    handle,
    workspace: handle,
    ...(memory !== undefined ? {memory_mb: memory} : {}),
    ...(vcpus !== undefined ? {vcpus} : {}),
    ...(idlePolicy !== undefined ? {idle_policy: idlePolicy} : {}),
    ...(profile?.capabilities ? {capabilities: aegisCapabilities(profile.capabilities, imageRef)} : {}),
    kit: manifest.name,
  }
  const ports =
    profile === undefined ? (manifest.routing?.expose ?? []).map((entry) => entry.port) : (profile.exposes ?? [])
  return {profile: name, request, exposes: ports.map((port) => ({port, protocol: exposeProtocol(manifest, port)}))}
}

/** The argv Aegis runs: the profile's command, else the image's entrypoint and command (as `run` does). */
function instanceCommand(manifest: AegisKitManifest, profile: Profile | undefined, what: string): string[] {
  const command =
    profile?.command !== undefined
      ? argv(profile.command)
      : [...argv(manifest.image?.entrypoint), ...argv(manifest.image?.command)]
  if (command.length === 0)
    throw new AegisError(`kit ${manifest.name}: no command for ${what} (Aegis needs one)`, {
      hint: "set image.command (or the profile's command) in aegis-kit.yaml",
    })
  return command
}

function argv(command: Command | undefined): string[] {
  if (command === undefined) return []
  return typeof command === 'string' ? ['/bin/sh', '-c', command] : [...command]
}

/**
 * aegis-kit's claims as Aegis's. Aegis reads an empty allowed_images as "any image", aegis-kit's
 * absent one as "none but the kit's own": the kit's image is always listed. Claims aegis-kit has
 * and Aegis has not (allowed_kits, allowed_profiles, ttl) are in leftOutFields.
 */
export function aegisCapabilities(capabilities: Capabilities, imageRef: string): AegisCapabilities {
  const spawn = capabilities.spawn ?? false
  const images = [imageRef, ...(capabilities.allowed_images ?? []).filter((image) => image !== imageRef)]
  const secrets = capabilities.allowed_secrets ?? []
  return {
    spawn,
    spawn_depth: capabilities.spawn_depth ?? (spawn ? 1 : 0),
    max_children: capabilities.max_children ?? 0,
    ...(spawn ? {allowed_images: images} : {}),
    max_memory_mb: capabilities.max_memory_mb ?? 0,
    max_vcpus: capabilities.max_vcpus ?? 0,
    ...(secrets.length > 0 ? {allowed_secrets: [...secrets]} : {}),
    max_expose_ports: capabilities.max_expose_ports ?? 0,
  }
}

/** Aegis proxies `http` (WebSocket upgrades included) or raw `tcp`; TLS passes through as tcp. */
function exposeProtocol(manifest: AegisKitManifest, port: number): 'http' | 'tcp' {
  const declared = manifest.routing?.expose?.find((entry) => entry.port === port)?.protocol ?? 'http'
  return declared === 'http' || declared === 'ws' ? 'http' : 'tcp'
}

const EXTRA_CLAIMS = ['allowed_kits', 'allowed_profiles', 'ttl'] as const

/** Fields set in the manifest that change how an instance runs and have no place in Aegis's shapes. */
export function leftOutFields(manifest: AegisKitManifest): string[] {
  const fields: string[] = []
  for (const [name, profile] of Object.entries(manifest.profiles ?? {})) {
    for (const claim of EXTRA_CLAIMS)
      if (profile.capabilities?.[claim] !== undefined) fields.push(`profiles.${name}.capabilities.${claim}`)
    if (profile.idle_timeout !== undefined) fields.push(`profiles.${name}.idle_timeout`)
    if (profile.always_on === true) fields.push(`profiles.${name}.always_on`)
  }
  if (manifest.policies?.idle_timeout !== undefined) fields.push('policies.idle_timeout')
  if (manifest.hooks?.render_env !== undefined) fields.push('hooks.render_env')
  if (manifest.healthcheck !== undefined) fields.push('healthcheck')
  if (manifest.networking?.egress === 'deny') fields.push('networking.egress')
  if ((manifest.networking?.internal_hosts ?? []).length > 0) fields.push('networking.internal_hosts')
  for (const secret of manifest.secrets?.required ?? [])
    if (secret.generated === true) fields.push(`secrets.required[${secret.name}].generated`)
  return fields
}

/** The one warning line naming what the export left out, or undefined when nothing was. */
export function formatLeftOutWarning(exported: AegisExport): string | undefined {
  if (exported.leftOut.length === 0) return undefined
  return `warning: left out of the Aegis export, Aegis has no equivalent (docs/aegis-export.md): ${exported.leftOut.join(', ')}`
}

function usageText(manifest: AegisKitManifest): string {
  const lines = [
    `Exported by aegis-kit from kit ${manifest.name} ${manifest.version}; its image is pre-baked (image.inject is empty).`,
  ]
  const profiles = Object.entries(manifest.profiles ?? {})
  if (profiles.length > 0) {
    lines.push('Profiles (instances/<profile>.json is the POST /v1/instances body):')
    for (const [name, profile] of profiles)
      lines.push(`- ${name}${profile.description ? `: ${profile.description}` : ''}`)
  }
  const secrets = manifest.secrets?.required ?? []
  if (secrets.length > 0)
    lines.push(
      `Secrets (set in Aegis's secret store, by name): ${secrets.map((secret) => `${secret.name}${secret.optional ? ' (optional)' : ''}`).join(', ')}`,
    )
  return lines.join('\n')
}

/** JSON with object keys sorted at every level, two-space indented, with a trailing newline. */
export function stableJson(value: unknown): string {
  return `${JSON.stringify(sortKeys(value), null, 2)}\n`
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys)
  if (typeof value === 'object' && value !== null)
    return Object.fromEntries(
      Object.entries(value)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([key, inner]) => [key, sortKeys(inner)]),
    )
  return value
}

/** The files of an export, relative to the output directory, with their contents. */
export function aegisExportFiles(exported: AegisExport): Array<{file: string; content: string}> {
  const files = [{file: `kits/${exported.kitFile.name}.json`, content: stableJson(exported.kitFile)}]
  for (const instance of exported.instances) {
    files.push({file: `instances/${instance.profile}.json`, content: stableJson(instance.request)})
    if (instance.exposes.length > 0)
      files.push({file: `instances/${instance.profile}.expose.json`, content: stableJson(instance.exposes)})
  }
  return files.sort((a, b) => (a.file < b.file ? -1 : a.file > b.file ? 1 : 0))
}

/**
 * Writes the export under `dir`, each file atomically. Refuses, before writing anything, when a
 * file is already there, unless `force`. Returns the paths written.
 */
export async function writeAegisExport(
  exported: AegisExport,
  dir: string,
  options: {force?: boolean} = {},
): Promise<string[]> {
  const files = aegisExportFiles(exported).map(({file, content}) => ({target: path.join(dir, file), content}))
  if (!options.force) {
    for (const {target} of files) {
      const existing = await statIfExists(target)
      if (existing !== undefined)
        throw new AegisError(`${target} already exists`, {
          hint: 'pass --force to replace it, or choose another directory with -o',
        })
    }
  }
  for (const {target, content} of files) {
    await mkdir(path.dirname(target), {recursive: true})
    await writeFileAtomically(target, content)
  }
  return files.map(({target}) => target)
}
