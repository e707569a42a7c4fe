/**
 * Garbage collection: deletes blobs no tag reaches, temp files of processes that died mid-write
 * and kit unpacks (`kits/.tmp/`) of killed processes. Runs under the index lock, so no tag can
 * appear halfway through; blobs written under a live write lease (an import or pull in progress)
 * are kept.
 */
import {readdir, stat, unlink} from 'node:fs/promises'
import {join} from 'node:path'
import {AegisError, messageOf} from '../errors.js'
import {isSha256Digest} from '../oci/digest.js'
import {errorCode, statIfExists, tempFileOwner} from '../fs-util.js'
import {walkGraph} from './graph.js'
import {ensureLayout, readIndexFile} from './layout.js'
import {LEASE_SUFFIX, oldestLiveLease} from './leases.js'
import type {LocalStore} from './local-store.js'
import {processAlive} from '../process-identity.js'
import {withFileLock} from '../file-lock.js'
import {sweepStaleTempDirs} from './owned-temp.js'
import type {PruneResult} from './types.js'

/** Coarse filesystem timestamps: a blob written just before a lease's marker still counts as leased. */
const LEASE_MTIME_SLACK_MS = 2_000

export async function pruneStore(store: LocalStore): Promise<PruneResult> {
  const {paths} = store
  const result: PruneResult = {blobs: [], tempFiles: [], tempDirs: [], kept: [], bytesFreed: 0}
  // No lock needed: only a dead owner's directories go, and nothing refers to them.
  const kitUnpacks = await sweepStaleTempDirs(join(paths.root, 'kits', '.tmp'))
  result.tempDirs.push(...kitUnpacks.removed)
  result.kept.push(...kitUnpacks.kept)
  if (!(await statIfExists(paths.indexFile)) && !(await statIfExists(paths.blobsDir))) {
    result.bytesFreed = kitUnpacks.removed.reduce((sum, dir) => sum + dir.size, 0)
    return result
  }
  await ensureLayout(paths)
  await withFileLock(paths.lockFile, async () => {
    const referenced = new Set<string>()
    for (const desc of (await readIndexFile(paths.indexFile)).manifests) {
      await walkGraph(
        desc,
        (d) => store.readManifest(d),
        (node) => void referenced.add(node.desc.digest),
        () => undefined,
      )
    }
    const leaseStart = await oldestLiveLease(paths)
    for (const name of await readdir(paths.tmpDir)) {
      const owner = tempFileOwner(name)
      if (name.endsWith(LEASE_SUFFIX) || (owner !== undefined && processAlive(owner))) continue
      const path = join(paths.tmpDir, name)
      const size = await removeFile(path)
      if (size !== undefined) result.tempFiles.push({path, size})
    }
    for (const hex of await readdir(paths.blobsDir)) {
      const digest = `sha256:${hex}`
      if (!isSha256Digest(digest) || referenced.has(digest)) continue
      const info = await statIfExists(paths.blob(hex))
      if (!info?.isFile()) continue
      if (leaseStart !== undefined && info.mtimeMs >= leaseStart - LEASE_MTIME_SLACK_MS) continue
      const size = await removeFile(paths.blob(hex))
      if (size !== undefined) result.blobs.push({digest, size})
    }
  })
  result.bytesFreed = [...result.blobs, ...result.tempFiles, ...result.tempDirs].reduce(
    (sum, item) => sum + item.size,
    0,
  )
  return result
}

async function removeFile(path: string): Promise<number | undefined> {
  const info = await stat(path).catch(() => undefined)
  try {
    await unlink(path)
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined
    throw new AegisError(`cannot delete ${path}: ${messageOf(error)}`, {
      hint: 'check the permissions of the store',
      cause: error,
    })
  }
  return info?.size ?? 0
}
