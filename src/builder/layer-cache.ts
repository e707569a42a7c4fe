/**
 * The build cache, ko's KOCACHE idea: a map from a step's input hash to the layer it produced.
 * A hit is only a hit when the layer's blob is still in the store, so prune and cache never
 * disagree about what exists.
 */
import {createHash} from 'node:crypto'
import {mkdir, readFile, rename, writeFile} from 'node:fs/promises'
import path from 'node:path'
import type {Descriptor} from '../oci/types.js'
import type {LocalStore} from '../store/index.js'

export interface CachedLayer {
  descriptor: Descriptor
  diffId: string
  uncompressedSize: number
  /** What the step recorded about its contents (package versions, for the SBOM). */
  contents?: PackageRecord[]
}

export interface PackageRecord {
  kind: 'deb' | 'npm'
  name: string
  version: string
  /** Debian packages: `amd64`, `arm64` or `all`. */
  architecture?: string
  license?: string
}

/** A stable hash of a step's inputs (key order does not matter). */
export function cacheKey(inputs: Record<string, unknown>): string {
  return createHash('sha256').update(stableJson(inputs)).digest('hex')
}

export function stableJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(stableJson).join(',')}]`
  if (value && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${stableJson(v)}`).join(',')}}`
  }
  return JSON.stringify(value)
}

export class LayerCache {
  constructor(
    private readonly dir: string,
    private readonly store: LocalStore,
  ) {}

  async get(key: string): Promise<CachedLayer | undefined> {
    let record: CachedLayer
    try {
      record = JSON.parse(await readFile(this.file(key), 'utf8')) as CachedLayer
    } catch {
      return undefined
    }
    return (await this.store.exists(record.descriptor)) ? record : undefined
  }

  async put(key: string, layer: CachedLayer): Promise<void> {
    await mkdir(this.dir, {recursive: true})
    const temp = `${this.file(key)}.${process.pid}.tmp`
    await writeFile(temp, JSON.stringify(layer))
    await rename(temp, this.file(key))
  }

  private file(key: string): string {
    return path.join(this.dir, `${key}.json`)
  }
}
