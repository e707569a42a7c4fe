#!/usr/bin/env node
/**
 * One unpack the way `aegis-kit run` does it (src/runner/rootfs.ts): the image's layers from
 * the store, owners and setuid kept, diff_ids checked. Prints the entry count as JSON.
 *
 *   node bench/unpack/unpack-image.mjs STORE MANIFEST_DIGEST DEST [DIST]
 *
 * DIST is the compiled aegis-kit to use (default: this checkout's dist/).
 */
import {readFileSync} from 'node:fs'
import {join, resolve} from 'node:path'
import {pathToFileURL} from 'node:url'

const [storeRoot, manifestDigest, dest, dist = new URL('../../dist', import.meta.url).pathname] = process.argv.slice(2)
const {unpackImage} = await import(pathToFileURL(resolve(dist, 'image/unpack.js')).href)
const {LocalStore} = await import(pathToFileURL(resolve(dist, 'store/index.js')).href)
const blob = (digest) =>
  JSON.parse(readFileSync(join(storeRoot, 'blobs/sha256', digest.slice('sha256:'.length)), 'utf8'))
const manifest = blob(manifestDigest)
const config = blob(manifest.config.digest)
const store = new LocalStore(storeRoot)
const results = await unpackImage(
  manifest.layers.map((layer) => () => store.fetch(layer)),
  dest,
  {
    preserveSetuid: true,
    preserveOwners: true,
    diffIds: config.rootfs.diff_ids,
  },
)
console.log(
  JSON.stringify({
    entries: results.reduce((sum, r) => sum + r.entries, 0),
    warnings: results.reduce((sum, r) => sum + r.warnings.length, 0),
  }),
)
