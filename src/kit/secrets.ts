/**
 * Secret values for an instance or a hook run: taken from the caller's environment
 * (`--secret NAME` or `--secret NAME=SOURCE_VAR`), generated when the kit says so, checked
 * against what the kit (and profile) declare, and masked in everything aegis-kit prints.
 */
import {randomBytes} from 'node:crypto'
import {AegisError} from '../errors.js'
import type {Kit} from './kit.js'
import type {Secret} from './manifest.generated.js'
import {closest} from './suggest.js'

export interface SecretRequest {
  /** The name the kit declares. */
  name: string
  /** The caller's environment variable holding the value (default: the same name). */
  sourceEnv: string
}

/** `NAME` or `NAME=SOURCE_ENV`, as given to `--secret`. */
export function parseSecretFlag(flag: string): SecretRequest {
  const match = /^([A-Za-z_][A-Za-z0-9_]*)(?:=([A-Za-z_][A-Za-z0-9_]*))?$/.exec(flag)
  if (!match) {
    throw new AegisError(
      `--secret ${flag.includes('=') ? flag.split('=')[0] + '=…' : flag}: expected NAME or NAME=SOURCE_ENV`,
      {
        hint: 'secret values are never given on the command line: export the value and name the variable, e.g. --secret ANTHROPIC_API_KEY or --secret ANTHROPIC_API_KEY=MY_KEY_VAR',
      },
    )
  }
  return {name: match[1], sourceEnv: match[2] ?? match[1]}
}

/** Generated values kept for a workspace or a session (src/runner/kept-secrets.ts). */
export interface KeptSecretStore {
  /** The value kept for secret `name`; on first use, `generate()`'s, then kept. */
  valueFor(name: string, generate: () => string): string
}

export interface ResolveOptions {
  env?: NodeJS.ProcessEnv
  profile?: string
  /** Where `per_workspace` values are kept; without one (e.g. `hooks render-env`) they are fresh. */
  workspace?: KeptSecretStore
  /** Where `per_session` values are kept, when the instance is in a session (`run --session`). */
  session?: KeptSecretStore
  onWarning?: (message: string) => void
}

/**
 * The values a run receives: the requested ones (from `env`), plus a value for every generated
 * secret, per its scope. Only secrets the kit declares (and the profile lists) are allowed.
 */
export function resolveSecrets(
  kit: Kit,
  requests: SecretRequest[],
  options: ResolveOptions = {},
): Record<string, string> {
  const env = options.env ?? process.env
  const declared = kit.manifest.secrets?.required ?? []
  const names = declared.map((secret) => secret.name)
  const profile = options.profile === undefined ? undefined : kit.manifest.profiles?.[options.profile]
  const allowed = profile?.secrets ?? names
  const values: Record<string, string> = {}

  for (const request of requests) {
    if (!names.includes(request.name)) {
      const suggestion = closest(request.name, names)
      throw new AegisError(`kit ${kit.manifest.name} does not declare a secret ${request.name}`, {
        hint: suggestion
          ? `did you mean ${suggestion}?`
          : names.length > 0
            ? `declared secrets: ${names.join(', ')}`
            : 'the kit declares no secrets',
      })
    }
    if (!allowed.includes(request.name)) {
      throw new AegisError(`profile ${options.profile} does not receive secret ${request.name}`, {
        hint: `profile ${options.profile} receives: ${allowed.join(', ') || 'no secrets'}`,
      })
    }
    const value = env[request.sourceEnv]
    if (value === undefined || value === '') {
      throw new AegisError(`--secret ${request.name}: $${request.sourceEnv} is not set in your environment`, {
        hint: `export ${request.sourceEnv}=… first (the value is read from the environment so it never appears on a command line)`,
      })
    }
    values[request.name] = value
  }

  const missing: typeof declared = []
  for (const secret of declared) {
    if (!allowed.includes(secret.name) || secret.name in values) continue
    if (secret.generated) values[secret.name] = generatedValue(secret, options)
    else if (!secret.optional) missing.push(secret)
  }
  if (missing.length > 0) {
    // The kit's description of a secret tells the user which value to fetch.
    const named = missing.map((secret) => (secret.description ? `${secret.name} (${secret.description})` : secret.name))
    throw new AegisError(`kit ${kit.manifest.name} needs secret${missing.length > 1 ? 's' : ''} ${named.join(', ')}`, {
      hint: `export ${missing[0].name}=… and pass ${missing.map((secret) => `--secret ${secret.name}`).join(' ')}`,
    })
  }
  return values
}

/**
 * `per_workspace`: kept with the workspace; `per_session`: kept for the session (`run --session`),
 * and new each boot, with a warning, for an instance in none; `per_instance` (also when no scope
 * is given): new each boot.
 */
function generatedValue(secret: Secret, options: ResolveOptions): string {
  const generate = () => randomBytes(32).toString('hex')
  if (secret.scope === 'per_workspace' && options.workspace) return options.workspace.valueFor(secret.name, generate)
  if (secret.scope === 'per_session') {
    if (options.session) return options.session.valueFor(secret.name, generate)
    options.onWarning?.(
      `secret ${secret.name} is per_session, but this instance is in no session (run --session NAME): it gets a new value each boot`,
    )
  }
  return generate()
}

/** Replaces every secret value (and its JSON-escaped form) in `text` with `****`. */
export function maskSecrets(text: string, secretValues: Iterable<string>): string {
  let out = text
  const forms = new Set<string>()
  for (const value of secretValues) {
    // Very short values would mask innocent text; aegis-kit-generated and real keys are long.
    if (value.length < 4) continue
    forms.add(value)
    forms.add(JSON.stringify(value).slice(1, -1))
  }
  for (const form of [...forms].sort((a, b) => b.length - a.length)) out = out.split(form).join('****')
  return out
}
