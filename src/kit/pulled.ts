/**
 * Kits pulled from a registry: unpacked under `<store>/kits/<name>/<version>-<digest12>` and
 * found again by the references they were pulled (or pushed) as, through `<store>/kits/refs.json`
 * (`{"refs": {"127.0.0.1:5000/kits/hello:0.1.0": "hello/0.1.0-0123456789ab", ...}}`). The file
 * is replaced atomically under a lock, so concurrent pulls keep each other's references.
 */
import {existsSync, readFileSync} from 'node:fs'
import {mkdir} from 'node:fs/promises'
import path from 'node:path'
import {writeFileAtomically} from '../store/fs-util.js'
import {withFileLock} from '../store/lock.js'
import {defaultStoreRoot} from '../store/paths.js'

interface RefsFile {
  refs: Record<string, string>
}

/** Where pulled kits live for the store at `storeRoot`. */
export function pulledKitsRoot(storeRoot: string = defaultStoreRoot()): string {
  return path.join(storeRoot, 'kits')
}

/** The directory a reference was pulled into, when it was and the directory is still there. */
export function findPulledKit(reference: string, storeRoot?: string): string | undefined {
  const root = pulledKitsRoot(storeRoot)
  const relative = readRefs(root).refs[reference]
  if (relative === undefined) return undefined
  const dir = path.resolve(root, relative)
  const inside = path.relative(root, dir)
  if (inside.startsWith('..') || path.isAbsolute(inside) || !existsSync(dir)) return undefined
  return dir
}

/** Points each of `references` at `dir` (a directory under pulledKitsRoot). */
export async function recordPulledKit(references: string[], dir: string, storeRoot?: string): Promise<void> {
  const root = pulledKitsRoot(storeRoot)
  await mkdir(root, {recursive: true})
  const relative = path.relative(root, dir).split(path.sep).join('/')
  await withFileLock(path.join(root, 'refs.json.lock'), async () => {
    const current = readRefs(root)
    for (const reference of references) current.refs[reference] = relative
    const sorted = Object.fromEntries(Object.entries(current.refs).sort(([a], [b]) => a.localeCompare(b)))
    await writeFileAtomically(path.join(root, 'refs.json'), `${JSON.stringify({refs: sorted}, null, 2)}\n`)
  })
}

function readRefs(root: string): RefsFile {
  try {
    const parsed = JSON.parse(readFileSync(path.join(root, 'refs.json'), 'utf8')) as Partial<RefsFile>
    const refs = typeof parsed.refs === 'object' && parsed.refs !== null ? parsed.refs : {}
    return {refs: Object.fromEntries(Object.entries(refs).filter((entry): entry is [string, string] => typeof entry[1] === 'string'))}
  } catch {
    return {refs: {}}
  }
}
