/**
 * Where the store lives and where each file sits inside it. The CLI resolves the root once
 * (`defaultStoreRoot()` or a flag) and passes it to `LocalStore`.
 */
import {homedir} from 'node:os'
import {dirname, isAbsolute, join, resolve} from 'node:path'

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
  const dataHome = env.XDG_DATA_HOME && isAbsolute(env.XDG_DATA_HOME) ? env.XDG_DATA_HOME : join(home, '.local', 'share')
  return join(dataHome, 'aegis-kit', 'store')
}

/** aegis-kit's data directory, the store's parent: build cache, unpacked roots, instances, workspaces. */
export function defaultDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return dirname(defaultStoreRoot(env))
}

/**
 * How error messages name a store, e.g. "no image x:1 in the store (AEGIS_KIT_HOME=/srv/kits)":
 * by AEGIS_KIT_HOME when that is where it came from, else by its path.
 */
export function describeStore(root: string, env: NodeJS.ProcessEnv = process.env): string {
  const kitHome = env.AEGIS_KIT_HOME
  if (kitHome && resolve(kitHome, 'store') === resolve(root)) return `store (AEGIS_KIT_HOME=${kitHome})`
  return `store at ${root}`
}

/** The files of an OCI image layout plus the store's own bookkeeping (temp dir, lock). */
export class StorePaths {
  readonly root: string
  readonly layoutFile: string
  readonly indexFile: string
  readonly blobsDir: string
  /** Temp files live inside the root so the final rename never crosses filesystems. */
  readonly tmpDir: string
  readonly lockFile: string

  constructor(root: string) {
    this.root = resolve(root)
    this.layoutFile = join(this.root, 'oci-layout')
    this.indexFile = join(this.root, 'index.json')
    this.blobsDir = join(this.root, 'blobs', 'sha256')
    this.tmpDir = join(this.root, '.tmp')
    this.lockFile = join(this.root, 'index.json.lock')
  }

  /** Path of a blob; `hex` must already be validated (see `sha256Hex`). */
  blob(hex: string): string {
    return join(this.blobsDir, hex)
  }
}
