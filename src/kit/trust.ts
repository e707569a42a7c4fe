/**
 * Where each kit under `<store>/kits` came from, and whether the user decided to run its code:
 * `<store>/kits/trust.json`, keyed by the kit's directory there (`NAME/VERSION-DIGEST12`, one per
 * kit layer). Pulled kits are other people's code: their hooks run, and they boot, only once a
 * decision is recorded here (an explicit --trust, a yes at a prompt, or a signature verified with
 * a key the user gave); kits pushed from the user's own directory are theirs and need none.
 */
import {readFileSync} from 'node:fs'
import {mkdir} from 'node:fs/promises'
import path from 'node:path'
import {writeFileAtomically} from '../fs-util.js'
import {withFileLock} from '../file-lock.js'
import {pulledKitsRoot} from './pulled.js'

/** A signature over the kit's release, verified with the user's key (see src/signing/). */
export interface KitVerification {
  keyFingerprint: string
}

export type KitSource =
  /** Pulled from a registry: `reference` is `registry/repository:tag@digest` of what was pulled. */
  | {via: 'pull'; reference: string; kitArtifact: string; verified?: KitVerification}
  /** Pushed by this user from their own kit directory. */
  | {via: 'push'; reference: string; kitArtifact: string; directory: string}

export interface TrustDecision {
  /** own: pushed from the user's directory; signature: verified with a key the user gave; flag: --trust; prompt: answered yes. */
  by: 'own' | 'signature' | 'flag' | 'prompt'
  at: string
  keyFingerprint?: string
}

export interface KitRecord {
  name: string
  version: string
  /** The kit layer's digest: the code in the directory (unknown for kits unpacked before records were kept). */
  layer?: string
  sources: KitSource[]
  trusted?: TrustDecision
}

interface TrustFile {
  kits: Record<string, KitRecord>
}

/** The record of the kit in `dir` (a directory under pulledKitsRoot), if there is one. */
export function readKitRecord(dir: string, storeRoot?: string): KitRecord | undefined {
  const root = pulledKitsRoot(storeRoot)
  return readTrustFile(root).kits[keyOf(root, dir)]
}

/**
 * Adds `source` to the record of the kit in `dir`. A push from the user's own directory, or a
 * pull whose signature was verified, is also the decision to trust it, unless one was made.
 */
export async function recordKitSource(
  dir: string,
  kit: {name: string; version: string; layer: string},
  source: KitSource,
  storeRoot?: string,
): Promise<KitRecord> {
  return updateRecord(dir, kit, storeRoot, (record) => {
    const sources = [
      ...record.sources.filter((known) => known.via !== source.via || known.reference !== source.reference),
      source,
    ]
    const decision =
      source.via === 'push'
        ? {by: 'own' as const}
        : source.verified
          ? {by: 'signature' as const, keyFingerprint: source.verified.keyFingerprint}
          : undefined
    const trusted = record.trusted ?? (decision ? {...decision, at: new Date().toISOString()} : undefined)
    return {...record, sources, ...(trusted ? {trusted} : {})}
  })
}

/**
 * Records the user's decision to run the code of the kit in `dir` (a directory under
 * pulledKitsRoot): asked once per kit, since the directory is its layer's content.
 */
export async function trustKit(dir: string, by: 'flag' | 'prompt', storeRoot?: string): Promise<void> {
  const [name = 'kit', versionDigest = ''] = keyOf(pulledKitsRoot(storeRoot), dir).split('/')
  const version = versionDigest.replace(/-[0-9a-f]{12}$/, '')
  await updateRecord(dir, {name, version}, storeRoot, (record) => ({
    ...record,
    trusted: record.trusted ?? {by, at: new Date().toISOString()},
  }))
}

/** Where trust decisions are kept, for messages. */
export function trustFile(storeRoot?: string): string {
  return path.join(pulledKitsRoot(storeRoot), 'trust.json')
}

/** What a record says about where its kit came from, for messages: `pulled from REF` or `pushed from DIR`. */
export function describeOrigin(record: KitRecord | undefined): string {
  const source = record?.sources.at(-1)
  if (!source) return 'of unknown origin'
  return source.via === 'push'
    ? `pushed from ${source.directory}`
    : `pulled from ${source.reference}${source.verified ? ' (signature verified)' : ''}`
}

async function updateRecord(
  dir: string,
  kit: {name: string; version: string; layer?: string},
  storeRoot: string | undefined,
  change: (record: KitRecord) => KitRecord,
): Promise<KitRecord> {
  const root = pulledKitsRoot(storeRoot)
  await mkdir(root, {recursive: true})
  return withFileLock(path.join(root, 'trust.json.lock'), async () => {
    const file = readTrustFile(root)
    const key = keyOf(root, dir)
    const record = change(file.kits[key] ?? {...kit, sources: []})
    file.kits[key] = record
    await writeFileAtomically(trustFile(storeRoot), `${JSON.stringify(file, null, 2)}\n`)
    return record
  })
}

function keyOf(root: string, dir: string): string {
  return path.relative(root, dir).split(path.sep).join('/')
}

function readTrustFile(root: string): TrustFile {
  try {
    const parsed = JSON.parse(readFileSync(path.join(root, 'trust.json'), 'utf8')) as Partial<TrustFile>
    return {kits: typeof parsed.kits === 'object' && parsed.kits !== null ? parsed.kits : {}}
  } catch {
    return {kits: {}}
  }
}
