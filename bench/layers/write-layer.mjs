#!/usr/bin/env node
/**
 * node bench/layers/write-layer.mjs <gzip|zstd|none> <tree> <out> [level]: one layer, as the
 * benchmark times it, with the LayerWriter of dist/ (or of $LAYER_BENCH_DIST: another build).
 */
import {dirname, join} from 'node:path'
import {fileURLToPath} from 'node:url'

const repo = join(dirname(fileURLToPath(import.meta.url)), '..', '..')
const dist = process.env.LAYER_BENCH_DIST ?? join(repo, 'dist')
const {LayerWriter} = await import(join(dist, 'image/layer-writer.js'))
const [compression, tree, out, level] = process.argv.slice(2)
const blob = await new LayerWriter({compression, ...(level ? {level: Number(level)} : {})}).addTree(tree).write(out)
console.log(JSON.stringify({digest: blob.digest, diffId: blob.diffId, size: blob.size, compressor: blob.compressor}))
