/**
 * Secret values for an instance or a hook run: taken from the caller's environment
 * (`--secret NAME` or `--secret NAME=SOURCE_VAR`), generated when the kit says so, checked
 * against what the kit (and profile) declare, and masked in everything aegis-kit prints.
 */
import {randomBytes} from 'node:crypto'
import {AegisError} from '../errors.js'
import type {Kit} from './kit.js'
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
    throw new AegisError(`--secret ${flag.includes('=') ? flag.split('=')[0] + '=…' : flag}: expected NAME or NAME=SOURCE_ENV`, {
      hint: 'secret values are never given on the command line: export the value and name the variable, e.g. --secret ANTHROPIC_API_KEY or --secret ANTHROPIC_API_KEY=MY_KEY_VAR',
    })
  }
  return {name: match[1], sourceEnv: match[2] ?? match[1]}
}

/**
 * The values a run receives: the requested ones (from `env`), plus a fresh random value for
 * every generated secret. Only secrets the kit declares (and the profile lists) are allowed.
 */
export function resolveSecrets(kit: Kit, requests: SecretRequest[], options: {env?: NodeJS.ProcessEnv; profile?: string} = {}): Record<string, string> {
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
        hint: suggestion ? `did you mean ${suggestion}?` : names.length > 0 ? `declared secrets: ${names.join(', ')}` : 'the kit declares no secrets',
      })
    }
    if (!allowed.includes(request.name)) {
      throw new AegisError(`profile ${options.profile} does not receive secret ${request.name}`, {hint: `profile ${options.profile} receives: ${allowed.join(', ') || 'no secrets'}`})
    }
    const value = env[request.sourceEnv]
    if (value === undefined || value === '') {
      throw new AegisError(`--secret ${request.name}: $${request.sourceEnv} is not set in your environment`, {
        hint: `export ${request.sourceEnv}=… first (the value is read from the environment so it never appears on a command line)`,
      })
    }
    values[request.name] = value
  }

  const missing: string[] = []
  for (const secret of declared) {
    if (!allowed.includes(secret.name) || secret.name in values) continue
    if (secret.generated) values[secret.name] = randomBytes(32).toString('hex')
    else if (!secret.optional) missing.push(secret.name)
  }
  if (missing.length > 0) {
    throw new AegisError(`kit ${kit.manifest.name} needs secret${missing.length > 1 ? 's' : ''} ${missing.join(', ')}`, {
      hint: `export ${missing[0]}=… and pass ${missing.map((name) => `--secret ${name}`).join(' ')}`,
    })
  }
  return values
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
