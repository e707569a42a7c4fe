// Shared by the OpenClaw kit's hooks: how OpenClaw's settings map onto an Aegis instance.

/** Where OpenClaw keeps its state inside the instance: the workspace, so it survives restarts. */
export const STATE_DIR = '/workspace/.openclaw'
/** OPENCLAW_CONFIG_PATH points straight at the file: no OPENCLAW_HOME double nesting (seed 003 #10). */
export const CONFIG_PATH = `${STATE_DIR}/openclaw.json`
export const GATEWAY_PORT = 18789
/** Seed 002's agent roles, where a config gives agents one. */
export const AGENT_ROLES = ['architect', 'coder', 'reviewer', 'tester', 'browser']
/** Provider secrets OpenClaw reads from the environment. */
export const PROVIDER_KEYS = {ANTHROPIC_API_KEY: 'anthropic', OPENAI_API_KEY: 'openai', GEMINI_API_KEY: 'google'}

/** An OpenClaw SecretRef: the config names the variable, the value stays in the environment. */
export function envRef(name) {
  return {source: 'env', provider: 'default', id: name}
}

export function isPlainObject(value) {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

/** Objects merge recursively; arrays and scalars replace (the semantics of `openclaw config patch`). */
export function deepMerge(base, overlay) {
  if (!isPlainObject(base) || !isPlainObject(overlay)) return overlay === undefined ? base : overlay
  const out = {...base}
  for (const [key, value] of Object.entries(overlay)) out[key] = deepMerge(base[key], value)
  return out
}
