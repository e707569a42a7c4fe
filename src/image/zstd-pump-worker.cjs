// @ts-check
/**
 * The pump worker of layer-zstd.ts (one per zstd layer). It starts `workerData.program` with
 * `workerData.args`, posts `{type: 'pid'}`, writes the `{type: 'block'}` messages it receives
 * to zstd's stdin (answering `{type: 'ack'}` with each block once written), hashing them (the
 * diffId, sent with `{type: 'exit'}` as `input`), and closes it on `{type: 'end'}`. zstd's output is written and hashed here when `workerData.outputFd` is set,
 * else posted as `{type: 'data'}`; `{type: 'exit'}` ends. Plain CommonJS that loads nothing but
 * Node's own modules. Type-checked by tsc (allowJs + checkJs), which emits it to dist/.
 */

/**
 * What layer-zstd.ts passes as workerData.
 * @typedef {object} PumpData
 * @property {string} program
 * @property {string[]} args
 * @property {number | undefined} outputFd
 */

/**
 * What layer-zstd.ts posts.
 * @typedef {{type: 'block', data: Uint8Array} | {type: 'end'}} PumpRequest
 */

const threads = require('node:worker_threads')
const parentPort = /** @type {import('node:worker_threads').MessagePort} */ (threads.parentPort)
const workerData = /** @type {PumpData} */ (threads.workerData)
const {spawn} = require('node:child_process')
const {createHash} = require('node:crypto')
const {writeSync} = require('node:fs')
const child = spawn(workerData.program, workerData.args, {stdio: ['pipe', 'pipe', 'pipe']})
parentPort.postMessage({type: 'pid', pid: child.pid})
const outputFd = workerData.outputFd
const hash = outputFd === undefined ? undefined : createHash('sha256')
const inputHash = createHash('sha256')
let size = 0
let stderr = ''
let failed = false
child.stderr.on('data', (/** @type {Buffer} */ d) => (stderr += d))
child.stdout.on('data', (/** @type {Buffer} */ chunk) => {
  if (outputFd === undefined) {
    const own = new Uint8Array(chunk) // a copy we may transfer (reads can share memory)
    parentPort.postMessage({type: 'data', chunk: own}, [own.buffer])
    return
  }
  if (failed) return
  try {
    if (!hash) throw new Error('no hash for the output file') // set whenever outputFd is
    hash.update(chunk)
    size += chunk.length
    for (let off = 0; off < chunk.length; ) off += writeSync(outputFd, chunk, off)
  } catch (e) {
    failed = true
    child.kill()
    parentPort.postMessage({
      type: 'exit',
      code: -1,
      stderr: 'cannot write the layer: ' + /** @type {Error} */ (e).message,
    })
  }
})
child.stdin.on('error', (e) => {
  stderr += String(e)
})
child.on('error', (e) => {
  if (!failed) parentPort.postMessage({type: 'exit', code: -1, stderr: String(e)})
  failed = true
})
child.on('close', (code) => {
  if (!failed)
    parentPort.postMessage({
      type: 'exit',
      code,
      stderr,
      written: hash && {digest: 'sha256:' + hash.digest('hex'), size},
      input: `sha256:${inputHash.digest('hex')}`,
    })
})
parentPort.on('message', (/** @type {PumpRequest} */ message) => {
  // Written blocks go back to be refilled: fresh 4 MiB buffers would cost a page fault per 4 KiB.
  if (message.type === 'block') {
    inputHash.update(message.data)
    child.stdin.write(message.data, () =>
      parentPort.postMessage({type: 'ack', block: message.data}, [/** @type {ArrayBuffer} */ (message.data.buffer)]),
    )
  } else if (message.type === 'end') child.stdin.end()
})
