/**
 * The three hook calls as the rest of aegis-kit uses them: build the app context for a kit
 * (profile, resources, merged config), run the hook, and hand back a checked, typed result.
 */
import path from 'node:path'
import {parse as parseYaml} from 'yaml'
import {AegisError, messageOf} from '../errors.js'
import type {Kit} from '../kit/kit.js'
import {readRegularFile} from '../local-file.js'
import {printable} from '../printable.js'
import {closest} from '../kit/suggest.js'
import {sizeToMiB} from '../kit/units.js'
import type {AppContext, RenderedFile, RenderEnvResult, ValidateConfigResult} from './contract.js'
import {runHook} from './run-hook.js'

export interface AppOptions {
  profile?: string
  instance?: string
  /** The user's config, merged over the kit's `config`. */
  config?: Record<string, unknown>
  /** Guest ports published on the host's 127.0.0.1 by the runner. */
  published?: Array<{guestPort: number; hostPort: number}>
}

export function buildAppContext(kit: Kit, options: AppOptions = {}): AppContext {
  const {manifest} = kit
  const profiles = manifest.profiles ?? {}
  if (options.profile !== undefined && !(options.profile in profiles)) {
    const names = Object.keys(profiles)
    const suggestion = closest(options.profile, names)
    throw new AegisError(`kit ${manifest.name} has no profile "${options.profile}"`, {
      hint: suggestion
        ? `did you mean "${suggestion}"?`
        : names.length > 0
          ? `profiles: ${names.join(', ')}`
          : 'this kit defines no profiles',
    })
  }
  const profile = options.profile === undefined ? undefined : profiles[options.profile]
  const memory = profile?.memory_mb ?? (manifest.resources?.memory ? sizeToMiB(manifest.resources.memory) : undefined)
  const vcpus =
    profile?.vcpus ?? (manifest.resources?.cpu === undefined ? undefined : Math.ceil(manifest.resources.cpu))
  return {
    name: manifest.name,
    version: manifest.version,
    profile: options.profile ?? null,
    instance: options.instance ?? null,
    config: mergeConfig(manifest.config ?? {}, options.config ?? {}),
    resources: {memory_mb: memory ?? null, vcpus: vcpus ?? null},
    expose: profile?.exposes ?? (manifest.routing?.expose ?? []).map((entry) => entry.port),
    published: (options.published ?? []).map((m) => ({port: m.guestPort, host: '127.0.0.1', host_port: m.hostPort})),
    workspace: '/workspace',
    image: manifest.image
      ? {node: manifest.image.node, npm: manifest.image.npm ? {packages: manifest.image.npm.packages} : undefined}
      : null,
  }
}

export async function renderEnv(kit: Kit, app: AppContext, secrets: Record<string, string>): Promise<RenderEnvResult> {
  const secretValues = Object.values(secrets)
  const {result} = await runHook<{
    env?: Record<string, string>
    files?: RenderedFile[]
    warnings?: string[]
    urls?: RenderEnvResult['urls']
  }>(kit, 'render_env', [app, secrets], {secretValues})
  const files = (result.files ?? []).map((file) => {
    // A file that carries a secret value is treated as secret whatever the hook said.
    const carriesSecret = secretValues.some((value) => value.length >= 4 && file.content.includes(value))
    const secret = Boolean(file.secret) || carriesSecret
    return {...file, secret, mode: file.mode ?? (secret ? 0o600 : 0o644)}
  })
  return {
    env: result.env ?? {},
    files,
    warnings: (result.warnings ?? []).map((warning) => printable(warning)),
    urls: result.urls ?? [],
  }
}

export async function validateConfig(
  kit: Kit,
  config: Record<string, unknown>,
  app: AppContext,
): Promise<ValidateConfigResult> {
  const {result} = await runHook<ValidateConfigResult>(kit, 'validate_config', [config, app])
  // Problems are printed one per line by whoever shows them: a hook's text must not steer the
  // terminal. The contract checks only that message is a string; a missing path means the whole config.
  const problems = (result.problems ?? []).map((problem) => ({
    ...problem,
    path: printable(String(problem.path ?? '')),
    message: printable(problem.message),
  }))
  return {ok: result.ok, problems}
}

export async function onPublish(
  kit: Kit,
  app: AppContext,
  release: Record<string, unknown>,
  artifacts: unknown[],
): Promise<unknown> {
  const {result} = await runHook<unknown>(kit, 'on_publish', [app, release, artifacts])
  return result
}

/** App configs are small JSON or YAML documents; anything larger is not one. */
const MAX_CONFIG_BYTES = 16 * 1024 * 1024

/** Reads an app config file (JSON or YAML: JSON is YAML) into an object. */
export async function readConfigFile(file: string): Promise<Record<string, unknown>> {
  const text = (await readRegularFile(file, {what: 'config', maxBytes: MAX_CONFIG_BYTES})).toString('utf8')
  let data: unknown
  try {
    data = parseYaml(text, {maxAliasCount: 50, prettyErrors: false})
  } catch (error) {
    throw new AegisError(`${path.basename(file)}: not valid JSON or YAML: ${messageOf(error).split('\n')[0]}`, {
      hint: 'fix the syntax at that position',
    })
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new AegisError(`${file}: the config must be a mapping (a JSON object)`)
  }
  return data as Record<string, unknown>
}

/** Objects merge recursively; lists and scalars replace. */
export function mergeConfig(base: Record<string, unknown>, overlay: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {...base}
  for (const [key, value] of Object.entries(overlay)) {
    const current = out[key]
    const bothObjects = [current, value].every((v) => typeof v === 'object' && v !== null && !Array.isArray(v))
    out[key] = bothObjects ? mergeConfig(current as Record<string, unknown>, value as Record<string, unknown>) : value
  }
  return out
}
