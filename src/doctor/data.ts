/**
 * What aegis-kit keeps on this machine: free disk under the data directory, the store's
 * integrity (index.json readable, every tag's graph complete), instance records whose process
 * is gone, and the registry credential helpers the docker config names.
 */
import {statfs} from 'node:fs/promises'
import path from 'node:path'

import {isAegisError, messageOf} from '../errors.js'
import {findOnPath} from '../exec.js'
import type {Descriptor} from '../oci/types.js'
import {DockerCredentials} from '../registry/credentials.js'
import {InstanceRegistry} from '../runner/instances.js'
import {shortDigest} from '../oci/digest.js'
import {statIfExists} from '../fs-util.js'
import {REF_NAME_ANNOTATION} from '../oci/reference.js'
import {walkGraph, type LocalStore} from '../store/index.js'
import {missing, ok, warn, type Check} from './check.js'

/** A cold OpenClaw build, its unpacked root and root disk take a few GB; less than this is a warning. */
const LOW_DISK_BYTES = 5e9

function gigabytes(bytes: number): string {
  return `${(bytes / 1e9).toFixed(1)} GB`
}

export async function checkDisk(dataDir: string): Promise<Check> {
  // The data directory may not exist yet: its nearest existing parent is where it will be.
  let dir = path.resolve(dataDir)
  while (!(await statIfExists(dir)) && path.dirname(dir) !== dir) dir = path.dirname(dir)
  const info = await statfs(dir)
  const free = info.bavail * info.bsize
  const found = `${gigabytes(free)} free of ${gigabytes(info.blocks * info.bsize)} under ${dataDir}`
  if (free < LOW_DISK_BYTES)
    return warn(
      'disk',
      found,
      `free space there (aegis-kit images prune drops unused layers), or set AEGIS_KIT_HOME to a larger disk; builds and runs need ${gigabytes(LOW_DISK_BYTES)} or more`,
    )
  return ok('disk', found)
}

/** Each tag's graph walked through the store's own reader: manifests verified, blobs present at their size. */
export async function checkStore(store: LocalStore): Promise<Check> {
  if (!(await statIfExists(store.indexFile))) return ok('store', `empty (${store.root})`)
  let manifests: Descriptor[]
  try {
    manifests = (await store.readIndex()).manifests
  } catch (error) {
    if (!isAegisError(error)) throw error
    return missing(
      'store',
      error.message,
      `move the unreadable index aside (mv ${store.indexFile} ${store.indexFile}.bad), then build or pull your images again`,
    )
  }
  const broken: string[] = []
  await Promise.all(
    manifests.map(async (desc) => {
      const name = desc.annotations?.[REF_NAME_ANNOTATION] ?? desc.digest
      const problem = await graphProblem(store, desc)
      if (problem) broken.push(`${name} (${problem})`)
    }),
  )
  const found = `${manifests.length} tag${manifests.length === 1 ? '' : 's'} in ${store.root}`
  if (broken.length === 0) return ok('store', `${found}, every one complete`)
  const names = broken.map((entry) => entry.slice(0, entry.indexOf(' (')))
  return warn(
    'store',
    `${found}; ${broken.length} point at missing content: ${broken.sort().join(', ')}`,
    `aegis-kit images rm ${names.sort().join(' ')}, then build or pull them again`,
  )
}

/** What is missing or corrupt in the graph under `root`, or undefined when it is complete. */
async function graphProblem(store: LocalStore, root: Descriptor): Promise<string | undefined> {
  const absent: Descriptor[] = []
  try {
    await walkGraph(
      root,
      (desc) => store.readManifest(desc),
      async (node) => {
        if (node.role !== 'blob') return
        // Present at its size, as LocalStore.exists checks, but without touching its time.
        const info = await statIfExists(store.blobPath(node.desc))
        if (info?.isFile() !== true || info.size !== node.desc.size) absent.push(node.desc)
      },
      (desc) => void absent.push(desc),
    )
  } catch (error) {
    return messageOf(error)
  }
  const first = absent[0]
  return (
    first &&
    `${shortDigest(first.digest)} ${first.mediaType} is missing${absent.length > 1 ? `, and ${absent.length - 1} more` : ''}`
  )
}

/** Records of instances whose process died without recording an end (SIGKILL, a reboot). */
export async function checkInstances(dataDir: string): Promise<Check> {
  const registry = InstanceRegistry.forDataDir(dataDir)
  const instances = await registry.list()
  const stale = instances.filter((entry) => entry.lost)
  const running = instances.filter((entry) => entry.alive).length
  const found = `${running} running`
  if (stale.length === 0) return ok('instances', found)
  return warn(
    'instances',
    `${found}; ${stale.length} stale (process gone): ${stale.map((entry) => `${entry.name} (pid ${entry.pid})`).join(', ')}`,
    `aegis-kit rm ${stale.map((entry) => entry.name).join(' ')} (or reuse the name: run --name NAME takes a stale record over)`,
  )
}

/** Each `docker-credential-<name>` the docker config names must be on PATH. */
export async function checkCredentialHelpers(): Promise<Check> {
  const credentials = new DockerCredentials()
  const config = credentials.configPath
  let names: string[]
  try {
    names = await credentials.helperNames()
  } catch (error) {
    if (!isAegisError(error)) throw error
    return warn('credential helpers', error.message, error.hint ?? `fix or remove ${config}`)
  }
  if (names.length === 0) return ok('credential helpers', `none named in ${config}`)
  const programs = names.map((name) => ({
    program: `docker-credential-${name}`,
    name,
    at: findOnPath(`docker-credential-${name}`),
  }))
  const absent = programs.filter((entry) => entry.at === undefined)
  const found = programs.map((entry) => entry.at ?? `${entry.program} not on PATH`).join(', ')
  if (absent.length === 0) return ok('credential helpers', `${found} (named in ${config})`)
  return warn(
    'credential helpers',
    `${found} (named in ${config}; pushes and pulls to those registries fail)`,
    `install ${absent.map((entry) => entry.program).join(', ')} (Debian's golang-docker-credential-helpers has -pass and -secretservice), or remove ${absent.map((entry) => `"${entry.name}"`).join(', ')} from ${config}`,
  )
}
