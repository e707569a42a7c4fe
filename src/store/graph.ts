/**
 * Walking an image's content graph in the store (index → manifests → config and layers), for
 * tagging, prune, import, export and summaries. Parsing and successors are the one model's
 * (src/oci/manifest.ts); what is store behaviour here is the walk: each node once, parents first.
 */
import {AegisError} from '../errors.js'
import {shortDigest} from '../oci/digest.js'
import {parseManifest, successors, type ParsedManifest} from '../oci/manifest.js'
import type {Descriptor} from '../oci/types.js'

export type GraphNode =
  | {role: 'manifest'; desc: Descriptor; bytes: Buffer; parsed: ParsedManifest}
  | {role: 'blob'; desc: Descriptor}

/** Returns the verified bytes of a manifest or index, or undefined when it is not there. */
export type ManifestReader = (desc: Descriptor) => Promise<Buffer | undefined>

/**
 * Visits every node reachable from `root` once, parents before children. A manifest the reader
 * cannot find is passed to `onMissing` (or throws when there is none); a missing blob is the
 * visitor's business.
 *
 * A subject is not followed: a referrer (an SBOM, a signature) is about an image, not part of
 * it, so its tag must not keep the image from prune, need it to be tagged, or count its size.
 */
export async function walkGraph(
  root: Descriptor,
  readManifest: ManifestReader,
  visit: (node: GraphNode) => Promise<void> | void,
  onMissing?: (desc: Descriptor) => void,
): Promise<void> {
  const seen = new Set<string>()
  const walk = async (desc: Descriptor, role: 'manifest' | 'blob'): Promise<void> => {
    if (seen.has(`${role} ${desc.digest}`)) return
    seen.add(`${role} ${desc.digest}`)
    if (role === 'blob') return visit({role, desc})
    const bytes = await readManifest(desc)
    if (bytes === undefined) {
      if (onMissing) return onMissing(desc)
      throw new AegisError(`manifest ${shortDigest(desc.digest)} is missing`, {
        hint: 'the image is incomplete; import or pull it again',
      })
    }
    const parsed = parseManifest(desc, bytes)
    await visit({role, desc, bytes, parsed})
    // An index lists manifests, whatever their media type says; a manifest's config and layers are blobs.
    const childRole = parsed.kind === 'index' ? 'manifest' : 'blob'
    for (const child of successors(parsed, {subject: false})) await walk(child, childRole)
  }
  await walk(root, 'manifest')
}
