/**
 * Where aegis-kit's own files are: the package root holds `kits/`, `schemas/` and `images/`; the
 * user's data directory holds the store, caches and instances. Light on purpose: commands that
 * only need a path (ps, logs, stop) import this, not the store.
 */
import {homedir} from 'node:os'
import {dirname, isAbsolute, join, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

// This file is dist/paths.js or src/paths.ts: the package root is one up.
export const bundledKitsDir = fileURLToPath(new URL('../kits/', import.meta.url))

/**
 * `$AEGIS_KIT_HOME/store` when AEGIS_KIT_HOME is set, else the platform's per-user data directory:
 * `$XDG_DATA_HOME/aegis-kit/store` (XDG only counts when absolute, as the spec says),
 * `~/.local/share/aegis-kit/store`, or `~/Library/Application Support/aegis-kit/store` on macOS.
 */
export function defaultStoreRoot(
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
  home: string = homedir(),
): string {
  const kitHome = env.AEGIS_KIT_HOME
  if (kitHome) return resolve(kitHome, 'store')
  if (platform === 'darwin') return join(home, 'Library', 'Application Support', 'aegis-kit', 'store')
  if (platform === 'win32') return join(env.LOCALAPPDATA || join(home, 'AppData', 'Local'), 'aegis-kit', 'store')
  const dataHome =
    env.XDG_DATA_HOME && isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : join(home, '.local', 'share')
  return join(dataHome, 'aegis-kit', 'store')
}

/** aegis-kit's data directory, the store's parent: build cache, unpacked roots, instances, workspaces. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return dirname(defaultStoreRoot(env))
}
