/**
 * Where each file sits inside the store. The CLI resolves the root once (`defaultStoreRoot()` in
 * src/paths.ts, or a flag) and passes it to `LocalStore`.
 */
import {join, resolve} from 'node:path'

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
