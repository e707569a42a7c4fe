/**
 * Referrers in the local store (OCI 1.1 `subject`: SBOMs, signatures). As on a registry without
 * the referrers API, they are listed by an index tagged `NAME:sha256-<hex of the subject>`:
 * `aegis-kit build` files its SBOM that way under the kit's name, a pull under the pulled name.
 */
import {AegisError} from '../errors.js'
import {imageIndex, referrersTag} from '../oci/artifact.js'
import {shortDigest} from '../oci/digest.js'
import {parseManifest} from '../oci/manifest.js'
import {formatRefName, parseTagReference, REF_NAME_ANNOTATION, splitRefName} from '../oci/reference.js'
import type {Descriptor, ImageIndex} from '../oci/types.js'
import {writeBlob} from './blob-writer.js'
import {updateIndex} from './layout.js'
import type {LocalStore} from './local-store.js'

/** Every referrer of `subject` listed by a `*:sha256-<hex>` tag in `index`, once each. */
export async function listReferrers(
  store: LocalStore,
  subject: Pick<Descriptor, 'digest'>,
  index?: ImageIndex,
): Promise<Descriptor[]> {
  const tag = referrersTag(subject.digest)
  const found = new Map<string, Descriptor>()
  for (const entry of (index ?? (await store.readIndex())).manifests) {
    if (splitRefName(entry.annotations?.[REF_NAME_ANNOTATION] ?? '').tag !== tag) continue
    for (const referrer of await indexEntries(store, entry))
      if (!found.has(referrer.digest)) found.set(referrer.digest, referrer)
  }
  return [...found.values()]
}

/**
 * Lists `referrers` (already stored) under `subject` in the index tagged `NAME:sha256-<hex>`,
 * NAME being the name of `reference`. Keeps what that index lists; writes nothing when it lists
 * them all already.
 */
export async function addReferrers(
  store: LocalStore,
  subject: Descriptor,
  referrers: Descriptor[],
  reference: string | undefined,
): Promise<void> {
  if (referrers.length === 0) return
  if (reference === undefined)
    throw new Error('addReferrers needs the reference whose name the referrers are filed under')
  const refName = formatRefName(parseTagReference(reference).name, referrersTag(subject.digest))
  for (const referrer of referrers) {
    if (!(await store.exists(referrer))) throw store.missingBlob(referrer)
  }
  await updateIndex(store.paths, async (index) => {
    const current = index.manifests.find((entry) => entry.annotations?.[REF_NAME_ANNOTATION] === refName)
    const listed = current ? await indexEntries(store, current) : []
    const known = new Set(listed.map((entry) => entry.digest))
    const added = referrers.filter((referrer) => !known.has(referrer.digest))
    if (added.length === 0) return {index, result: undefined}
    const {descriptor: desc, bytes} = imageIndex([...listed, ...added])
    await writeBlob(store.paths, desc, bytes)
    const kept = index.manifests.filter((entry) => entry !== current)
    return {
      index: {...index, manifests: [...kept, {...desc, annotations: {[REF_NAME_ANNOTATION]: refName}}]},
      result: undefined,
    }
  })
}

async function indexEntries(store: LocalStore, desc: Descriptor): Promise<Descriptor[]> {
  const bytes = await store.readManifest(desc)
  if (bytes === undefined) return []
  const parsed = parseManifest(desc, bytes)
  if (parsed.kind !== 'index') {
    const name = desc.annotations?.[REF_NAME_ANNOTATION] ?? shortDigest(desc.digest)
    throw new AegisError(`${name} is not an index of referrers`, {
      hint: `remove it with \`aegis-kit images rm ${name}\``,
    })
  }
  return parsed.index.manifests
}
