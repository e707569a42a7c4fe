/**
 * A kit artifact in the store made usable: its layer unpacked (safely) under
 * `<store>/kits/<name>/<version>-<layer digest 12>` and its references recorded, so `validate`
 * and `hooks ...` accept them as KIT. The directory is content-addressed: unpacking the same
 * layer again reuses it; a half-unpacked directory never takes the final name.
 */
import {mkdir, rename, rm} from 'node:fs/promises'
import path from 'node:path'
import {AegisError, messageOf} from '../errors.js'
import {pulledKitsRoot, recordPulledKit, type KeptShortName} from '../kit/pulled.js'
import {describeOrigin, readKitRecord, recordKitSource, type KitRecord, type KitSource} from '../kit/trust.js'
import {parseManifest} from '../oci/manifest.js'
import {Annotation} from '../oci/media-types.js'
import type {Descriptor} from '../oci/types.js'
import {readAll, verifyBytes} from '../registry/verify.js'
import {errorCode, statIfExists} from '../fs-util.js'
import type {LocalStore} from '../store/index.js'
import {ownedTempName} from '../store/owned-temp.js'
import {kitArtifactLayers} from './artifact.js'
import {unpackKitLayer} from './layer.js'

const MAX_REPORT_BYTES = 4 * 1024 * 1024

export interface InstalledKit {
  name: string
  version: string
  /** The unpacked kit directory. */
  dir: string
  /** The on_publish report attached to the kit, when there is one. */
  report?: unknown
  /** Where it came from and whether it is trusted (see src/kit/trust.ts). */
  record?: KitRecord
  /** Short names (NAME:VERSION) that name another kit and were left on it, with where that one came from. */
  keptShortNames: Array<KeptShortName & {origin: string}>
}

/**
 * Unpacks the kit artifact `kit` (stored with its layers in `store`) and records `references`
 * for it, and `NAME:VERSION`, and where it came from (`source`: none for a pulled kit pushed
 * again). A short name that names another kit moves only on a push of the user's own kit.
 */
export async function installKit(
  store: LocalStore,
  kit: Descriptor,
  references: string[],
  source?: KitSource,
): Promise<InstalledKit> {
  const bytes = await store.readManifest(kit)
  if (bytes === undefined) throw store.missingBlob(kit)
  const {layer, report, annotations} = kitArtifactLayers(parseManifest(kit, bytes), kit)
  const name = safeSegment(annotations[Annotation.Title], /^[a-z0-9][a-z0-9-]{0,62}$/, 'kit')
  const version = safeSegment(annotations[Annotation.Version], /^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$/, 'unversioned')
  const root = pulledKitsRoot(store.root)
  const dir = path.join(root, name, `${version}-${layer.digest.replace(/^sha256:/, '').slice(0, 12)}`)
  if ((await statIfExists(dir))?.isDirectory() !== true) await unpackInto(store, layer, dir, root)
  const byName =
    name === annotations[Annotation.Title] && version === annotations[Annotation.Version] ? [`${name}:${version}`] : []
  const record = source
    ? await recordKitSource(dir, {name, version, layer: layer.digest}, source, store.root)
    : readKitRecord(dir, store.root)
  const kept = await recordPulledKit([...new Set([...references, ...byName])], dir, store.root, {
    moveShortNames: source?.via === 'push',
  })
  const keptShortNames = kept.map((short) => ({...short, origin: describeOrigin(readKitRecord(short.dir, store.root))}))
  return {
    name,
    version,
    dir,
    keptShortNames,
    ...(record ? {record} : {}),
    ...(report ? {report: await readReport(store, report)} : {}),
  }
}

async function unpackInto(store: LocalStore, layer: Descriptor, dir: string, root: string): Promise<void> {
  // Named for its owner: a killed unpack's is swept by prune and the next build (owned-temp.ts).
  const staging = path.join(root, '.tmp', ownedTempName('kit'))
  await mkdir(path.dirname(staging), {recursive: true})
  try {
    await unpackKitLayer(await store.fetch(layer), staging)
    await mkdir(path.dirname(dir), {recursive: true})
    await rename(staging, dir).catch((error: unknown) => {
      // Another command unpacked the same layer first: same digest, same files.
      if (errorCode(error) !== 'ENOTEMPTY' && errorCode(error) !== 'EEXIST') throw error
    })
  } catch (error) {
    if (error instanceof AegisError) throw error
    throw new AegisError(`cannot unpack the kit into ${dir}: ${messageOf(error)}`, {
      hint: 'check free disk space and permissions of the store directory',
      cause: error,
    })
  } finally {
    await rm(staging, {recursive: true, force: true})
  }
}

async function readReport(store: LocalStore, desc: Descriptor): Promise<unknown> {
  const bytes = await readAll(await store.fetch(desc), MAX_REPORT_BYTES, `on_publish report ${desc.digest}`)
  verifyBytes(bytes, desc)
  try {
    return JSON.parse(bytes.toString('utf8')) as unknown
  } catch {
    throw new AegisError(`the kit's on_publish report ${desc.digest} is not JSON`)
  }
}

/** An annotation used as a directory name only when it is a plain name; else `fallback`. */
function safeSegment(value: string | undefined, pattern: RegExp, fallback: string): string {
  return value !== undefined && pattern.test(value) ? value : fallback
}
