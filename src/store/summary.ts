/** What `list` and `inspect` report about an image: its platforms' manifests, configs and sizes. */
import {formatPlatform} from '../oci/manifest.js'
import type {Descriptor, ImageIndex, Platform} from '../oci/types.js'
import {walkGraph} from './graph.js'
import type {LocalStore} from './local-store.js'
import type {ImageSummary, InspectResult} from './types.js'

/** Images, platforms and distinct total size under `root`; tolerant of missing content. */
export async function summarizeImage(
  store: LocalStore,
  root: Descriptor,
): Promise<Omit<InspectResult, 'descriptor' | 'tags' | 'referrers'>> {
  const sizes = new Map<string, number>()
  const platformOf = new Map<string, Platform>()
  const images: ImageSummary[] = []
  let kind: 'manifest' | 'index' = 'manifest'
  let index: ImageIndex | undefined
  await walkGraph(
    root,
    (d) => store.readManifest(d),
    async (node) => {
      sizes.set(node.desc.digest, node.desc.size)
      if (node.role === 'blob') return
      if (node.parsed.kind === 'index') {
        if (node.desc.digest === root.digest) {
          kind = 'index'
          index = node.parsed.index
        }
        for (const child of node.parsed.index.manifests)
          if (child.platform) platformOf.set(child.digest, child.platform)
        return
      }
      const {manifest} = node.parsed
      const config = await store.readImageConfig(manifest.config)
      const platform = platformOf.get(node.desc.digest) ?? (config?.os ? config : undefined)
      images.push({
        ...(platform ? {platform: formatPlatform(platform)} : {}),
        digest: node.desc.digest,
        manifest,
        configDigest: manifest.config.digest,
        configMediaType: manifest.config.mediaType,
        ...(config ? {config} : {}),
        layers: manifest.layers,
        size: node.desc.size + manifest.config.size + manifest.layers.reduce((sum, layer) => sum + layer.size, 0),
      })
    },
    () => undefined,
  )
  const size = [...sizes.values()].reduce((sum, n) => sum + n, 0)
  return {kind, ...(index ? {index} : {}), images, size}
}

/** Attestation manifests in buildx indexes carry `unknown/unknown`; they are not platforms. */
export function isRealPlatform(platform: string | undefined): platform is string {
  return platform !== undefined && !platform.startsWith('unknown/')
}
