// @ts-check
/**
 * The block worker of gzip-parallel.ts (one thread per core it uses). It takes `{id, job}`
 * messages, raw-deflates `job.data` exactly as gzip-parallel.ts's deflateBlock() does (same
 * call, same options, so the same bytes), and answers `{id, result}`, handing the block back
 * for reuse. Plain CommonJS that loads nothing but Node's own modules. Type-checked by tsc
 * (allowJs + checkJs), which emits it to dist/.
 */

/**
 * A block as gzip-parallel.ts posts it (its BlockJob).
 * @typedef {object} BlockJob
 * @property {Uint8Array} data
 * @property {Uint8Array | undefined} dictionary
 * @property {boolean} last
 * @property {number} level
 */

const parentPort = /** @type {import('node:worker_threads').MessagePort} */ (require('node:worker_threads').parentPort)
const zlib = require('node:zlib')
/** @param {Uint8Array} data */
function crc32Fallback(data) {
  let crc = 0xffffffff
  for (let i = 0; i < data.length; i++) {
    crc ^= data[i]
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1
  }
  return (crc ^ 0xffffffff) >>> 0
}
/** @type {(data: Uint8Array) => number} */
const crc32 = typeof zlib.crc32 === 'function' ? (d) => zlib.crc32(d) : crc32Fallback
parentPort.on('message', (/** @type {{id: number, job: BlockJob}} */ {id, job}) => {
  /** @type {import('node:zlib').ZlibOptions} */
  const options = {level: job.level, finishFlush: job.last ? zlib.constants.Z_FINISH : zlib.constants.Z_SYNC_FLUSH}
  if (job.dictionary !== undefined) options.dictionary = job.dictionary
  /** @type {Uint8Array} */
  let deflated = zlib.deflateRawSync(job.data, options)
  // Small results can live in Node's shared pool; transfer only a buffer of our own.
  if (deflated.byteOffset !== 0 || deflated.byteLength !== deflated.buffer.byteLength)
    deflated = new Uint8Array(deflated)
  const crc = crc32(job.data)
  parentPort.postMessage({id, result: {deflated, crc, data: job.data}}, [
    /** @type {ArrayBuffer} */ (deflated.buffer),
    /** @type {ArrayBuffer} */ (job.data.buffer),
  ])
})
