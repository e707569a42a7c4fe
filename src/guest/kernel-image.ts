/**
 * Getting the plain ELF vmlinux out of an x86 bzImage. QEMU boots that ELF through its
 * PVH entry point, which skips the kernel's own decompression: under TCG that
 * self-decompression is emulated code and costs boot time.
 */

import {gunzipSync} from 'node:zlib'

import {AegisError} from '../errors.js'

const LZ4_LEGACY_MAGIC = 0x184c2102
const GZIP_MAGIC = 0x8b1f

/** Decodes one LZ4 block (the format inside every frame type) into `out` at `outPos`; returns the new position. */
function decodeLz4Block(input: Uint8Array, out: Uint8Array, outPos: number): number {
  let pos = 0
  while (pos < input.length) {
    const token = input[pos++]!
    let literals = token >> 4
    if (literals === 15) {
      let byte: number
      do {
        byte = input[pos++]!
        literals += byte
      } while (byte === 255)
    }
    out.set(input.subarray(pos, pos + literals), outPos)
    pos += literals
    outPos += literals
    if (pos >= input.length) break // the last sequence has literals only
    const offset = input[pos]! | (input[pos + 1]! << 8)
    pos += 2
    let matchLength = token & 15
    if (matchLength === 15) {
      let byte: number
      do {
        byte = input[pos++]!
        matchLength += byte
      } while (byte === 255)
    }
    matchLength += 4
    if (offset === 0 || offset > outPos) throw new Error('corrupt LZ4 block')
    // Byte by byte: a match may overlap the bytes it is producing.
    for (let i = 0; i < matchLength; i++, outPos++) out[outPos] = out[outPos - offset]!
  }
  return outPos
}

/** The LZ4 "legacy" frame the kernel build uses: magic, then blocks of (u32 size, data), each ≤ 8 MiB out. */
function decodeLz4Legacy(data: Buffer): Buffer {
  const blockMax = 8 << 20
  const blocks: Buffer[] = []
  let pos = 4
  while (pos + 4 <= data.length) {
    const size = data.readUInt32LE(pos)
    if (size === LZ4_LEGACY_MAGIC) {
      pos += 4 // concatenated frames
      continue
    }
    if (pos + 4 + size > data.length) break // the size trailer the kernel build appends
    const out = new Uint8Array(blockMax)
    const end = decodeLz4Block(data.subarray(pos + 4, pos + 4 + size), out, 0)
    blocks.push(Buffer.from(out.buffer, 0, end))
    pos += 4 + size
  }
  return Buffer.concat(blocks)
}

/**
 * The vmlinux ELF inside a bzImage, or undefined when its compression is one this code
 * does not decode (the caller then boots the bzImage itself, which also works).
 */
export function extractVmlinux(bzImage: Buffer): Buffer | undefined {
  if (bzImage.toString('latin1', 0x202, 0x206) !== 'HdrS') {
    throw new AegisError('the kernel image is not an x86 bzImage', {hint: 'pass a Debian linux-image-*-amd64 kernel'})
  }
  const setupSectors = bzImage[0x1f1] || 4
  const payloadOffset = bzImage.readUInt32LE(0x248)
  const payloadLength = bzImage.readUInt32LE(0x24c)
  const start = (setupSectors + 1) * 512 + payloadOffset
  const payload = bzImage.subarray(start, start + payloadLength)
  let elf: Buffer
  if (payload.readUInt32LE(0) === LZ4_LEGACY_MAGIC) elf = decodeLz4Legacy(payload)
  else if (payload.readUInt16LE(0) === GZIP_MAGIC) elf = gunzipSync(payload)
  else return undefined
  if (elf.toString('latin1', 0, 4) !== '\x7fELF') throw new Error('the decompressed kernel is not an ELF file')
  return elf
}
