/**
 * The hook contract: what each hook receives and must return. A hook is a function exported by
 * a JavaScript module in the kit (named like the hook, or camelCase, or the default export).
 */
export const HOOK_NAMES = ['render_env', 'validate_config', 'on_publish'] as const
export type HookName = (typeof HOOK_NAMES)[number]

/** What a kit's hooks know about the instance being prepared. */
export interface AppContext {
  name: string
  version: string
  profile: string | null
  instance: string | null
  /** The kit's `config`, with the user's config merged over it. */
  config: Record<string, unknown>
  resources: {memory_mb: number | null; vcpus: number | null}
  /** Ports the instance exposes. */
  expose: number[]
  /**
   * Where those ports are published on the host when the instance is being started (`run
   * --expose HOST:GUEST`); empty when nothing is published (e.g. `aegis-kit hooks render-env`).
   * A web UI that checks its Origin header needs the host side.
   */
  published: Array<{port: number; host: string; host_port: number}>
  workspace: string
  image: {node?: string; npm?: {packages: string[]}} | null
}

export interface RenderedFile {
  /** Absolute path inside the instance. */
  path: string
  content: string
  /** File mode (default 0644, or 0600 for secret files). */
  mode?: number
  /** Holds secret material: written only to tmpfs-backed or 0600 files, never into an image. */
  secret?: boolean
}

/** A rendered file after the runner settled its mode and secrecy. */
export interface ResolvedFile extends RenderedFile {
  mode: number
  secret: boolean
}

export interface RenderEnvResult {
  env: Record<string, string>
  files: ResolvedFile[]
  warnings: string[]
  urls: Array<{port: number; path: string; label: string; token_env?: string}>
}

export interface ConfigProblem {
  path: string
  message: string
}

export interface ValidateConfigResult {
  ok: boolean
  problems: ConfigProblem[]
}

/** Checks a hook's result; returns what is wrong with it, or nothing. */
export function contractViolation(hook: HookName, result: unknown): string | undefined {
  const isObject = (value: unknown): value is Record<string, unknown> =>
    typeof value === 'object' && value !== null && !Array.isArray(value)
  if (!isObject(result)) return `must return an object, got ${Array.isArray(result) ? 'a list' : typeof result}`
  if (hook === 'render_env') {
    if (!isObject(result.env))
      return 'must return {env: {NAME: "value"}, files: [...]}; env is missing or not an object'
    for (const [name, value] of Object.entries(result.env)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name)) return `env: "${name}" is not a usable environment variable name`
      if (typeof value !== 'string') return `env.${name} must be a string, got ${typeof value}`
    }
    if (result.files !== undefined) {
      if (!Array.isArray(result.files)) return 'files must be a list'
      for (const [index, file] of result.files.entries()) {
        if (!isObject(file) || typeof file.path !== 'string' || !file.path.startsWith('/'))
          return `files[${index}].path must be an absolute path`
        if (file.path.split('/').includes('..')) return `files[${index}].path must not contain ".."`
        if (typeof file.content !== 'string') return `files[${index}].content must be a string`
        if (
          file.mode !== undefined &&
          (!Number.isInteger(file.mode) || (file.mode as number) < 0 || (file.mode as number) > 0o7777)
        )
          return `files[${index}].mode must be a file mode such as 0o600`
      }
    }
    if (
      result.warnings !== undefined &&
      !(Array.isArray(result.warnings) && result.warnings.every((w) => typeof w === 'string'))
    )
      return 'warnings must be a list of strings'
    return undefined
  }
  if (hook === 'validate_config') {
    if (typeof result.ok !== 'boolean') return 'must return {ok: true|false, problems: [...]}; ok is missing'
    if (
      result.problems !== undefined &&
      !(Array.isArray(result.problems) && result.problems.every((p) => isObject(p) && typeof p.message === 'string'))
    ) {
      return 'problems must be a list of {path, message}'
    }
    if (result.ok === false && !(Array.isArray(result.problems) && result.problems.length > 0))
      return 'returned ok: false without any problems'
    return undefined
  }
  return undefined
}
