/**
 * Kits pulled from a registry: unpacked under `<store>/kits/<name>/<version>-<digest12>` and
 * found again by the references they were pulled (or pushed) as, through `<store>/kits/refs.json`
 * (`{"refs": {"127.0.0.1:5000/kits/hello:0.1.0": "hello/0.1.0-0123456789ab", ...}}`). The file
 * is replaced atomically under a lock, so concurrent pulls keep each other's references.
 *
 * A short name (a reference without a registry, `NAME:VERSION`) never silently changes owner:
 * once it names a kit, only a push of the user's own kit directory may point it at another, so a
 * pulled kit annotated with the name of the user's kit cannot take over what that name runs.
 */
import {existsSync, readFileSync, realpathSync} from 'node:fs'
import {mkdir} from 'node:fs/promises'
import path from 'node:path'
import {withFileLock} from '../file-lock.js'
import {isInside, writeFileAtomically} from '../fs-util.js'
import {defaultStoreRoot} from '../paths.js'

interface RefsFile {
  refs: Record<string, string>
}

/** Where pulled kits live for the store at `storeRoot`. */
export function pulledKitsRoot(storeRoot: string = defaultStoreRoot()): string {
  return path.join(storeRoot, 'kits')
}

/**
 * The directory (relative to pulledKitsRoot) of the store's kit that holds `dir`, when `dir` is
 * one: found by path, however KIT was given (a reference, the directory, a symlink to it).
 */
export function storeKitOf(dir: string, storeRoot?: string): string | undefined {
  const root = pulledKitsRoot(storeRoot)
  if (!existsSync(root) || !existsSync(dir)) return undefined
  const inside = path.relative(realpathSync(root), realpathSync(dir)).split(path.sep)
  if (inside[0] === '..' || inside[0] === '.tmp' || inside.length < 2) return undefined
  return inside.slice(0, 2).join('/')
}

/**
 * The store reference a kit's image is built under when no --tag is given: NAME:VERSION for the
 * user's own kits; for a pulled kit NAME:VERSION-<digest12> (its directory's name in the store),
 * so building someone else's kit never replaces the image of the user's kit of the same name.
 */
export function kitImageReference(
  kit: {dir: string; manifest: {name: string; version: string}},
  storeRoot?: string,
): string {
  const pulled = storeKitOf(kit.dir, storeRoot)
  // A tag allows [A-Za-z0-9_.-]; a version may also hold '+' (semver build metadata).
  const tag = pulled === undefined ? kit.manifest.version : (pulled.split('/')[1] ?? '').replaceAll('+', '_')
  return `${kit.manifest.name}:${tag}`
}

/** The directory a reference was pulled into, when it was and the directory is still there. */
export function findPulledKit(reference: string, storeRoot?: string): string | undefined {
  const root = pulledKitsRoot(storeRoot)
  const relative = readRefs(root).refs[reference]
  if (relative === undefined) return undefined
  const dir = path.resolve(root, relative)
  if (!isInside(root, dir) || !existsSync(dir)) return undefined
  return dir
}

/** A short name left on the kit it named when another kit was recorded. */
export interface KeptShortName {
  reference: string
  /** The directory (under pulledKitsRoot) it still names. */
  dir: string
}

/** Short names carry no registry: `hello:0.1.0`, as opposed to `ghcr.io/acme/hello:0.1.0`. */
export function isShortName(reference: string): boolean {
  return !reference.includes('/')
}

/**
 * Points each of `references` at `dir` (a directory under pulledKitsRoot), except short names
 * that already name another kit, unless `moveShortNames` (a push of the user's own kit): those
 * are kept and returned.
 */
export async function recordPulledKit(
  references: string[],
  dir: string,
  storeRoot?: string,
  options: {moveShortNames?: boolean} = {},
): Promise<KeptShortName[]> {
  const root = pulledKitsRoot(storeRoot)
  await mkdir(root, {recursive: true})
  const relative = path.relative(root, dir).split(path.sep).join('/')
  return withFileLock(path.join(root, 'refs.json.lock'), async () => {
    const current = readRefs(root)
    const kept: KeptShortName[] = []
    for (const reference of references) {
      const previous = current.refs[reference]
      if (
        previous !== undefined &&
        previous !== relative &&
        isShortName(reference) &&
        options.moveShortNames !== true
      ) {
        kept.push({reference, dir: path.resolve(root, previous)})
        continue
      }
      current.refs[reference] = relative
    }
    const sorted = Object.fromEntries(Object.entries(current.refs).sort(([a], [b]) => a.localeCompare(b)))
    await writeFileAtomically(path.join(root, 'refs.json'), `${JSON.stringify({refs: sorted}, null, 2)}\n`)
    return kept
  })
}

function readRefs(root: string): RefsFile {
  try {
    const parsed = JSON.parse(readFileSync(path.join(root, 'refs.json'), 'utf8')) as Partial<RefsFile>
    const refs = typeof parsed.refs === 'object' && parsed.refs !== null ? parsed.refs : {}
    return {
      refs: Object.fromEntries(
        Object.entries(refs).filter((entry): entry is [string, string] => typeof entry[1] === 'string'),
      ),
    }
  } catch {
    return {refs: {}}
  }
}
