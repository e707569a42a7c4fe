/** Shared bits of the image tests: temp dirs, reading tars, hand-made OCI layouts. */
import {execFileSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {lstatSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {Readable} from 'node:stream'
import * as zlib from 'node:zlib'
import {extract, pack, type Header} from 'tar-stream'
import {expect} from 'vitest'

import type {LayerBlob} from '../../src/image/layer-writer.js'

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `aegis-${prefix}-`))
}

export function removeDir(dir: string): void {
  rmSync(dir, {recursive: true, force: true})
}

/** An unpack destination with a sentinel directory beside it, which no layer may touch. */
export interface UnpackSandbox {
  base: string
  dest: string
  outside: string
}

export function makeUnpackSandbox(prefix: string): UnpackSandbox {
  const base = tempDir(prefix)
  const outside = join(base, 'outside')
  mkdirSync(outside)
  writeFileSync(join(outside, 'victim'), 'keep')
  return {base, dest: join(base, 'dest'), outside}
}

export function removeUnpackSandbox({base}: UnpackSandbox): void {
  execFileSync('chmod', ['-R', 'u+rwx', base]) // read-only directories, for a run without root
  removeDir(base)
}

/** The sentinel directory is exactly as it was: one file, same content, and nothing next to dest. */
export function expectSandboxUntouched({base, outside}: UnpackSandbox): void {
  expect(readdirSync(outside)).toEqual(['victim'])
  expect(readFileSync(join(outside, 'victim'), 'utf8')).toBe('keep')
  expect(lstatSync(join(outside, 'victim')).isFile()).toBe(true)
  expect(readdirSync(base).sort()).toEqual(['dest', 'outside'])
}

export function hasProgram(name: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${name}`], {stdio: 'ignore'})
    return true
  } catch {
    return false
  }
}

export interface ReadEntry {
  header: Header
  content: Buffer
}

/** Every entry of a tar (gzip is undone first), in archive order. */
export async function readTar(bytes: Buffer): Promise<ReadEntry[]> {
  const tar = bytes[0] === 0x1f && bytes[1] === 0x8b ? zlib.gunzipSync(bytes) : bytes
  const extractor = extract()
  const entries: ReadEntry[] = []
  const done = (async () => {
    for await (const entry of extractor) {
      const chunks: Buffer[] = []
      for await (const chunk of entry) chunks.push(chunk as Buffer)
      entries.push({header: entry.header, content: Buffer.concat(chunks)})
    }
  })()
  extractor.end(tar)
  await done
  return entries
}

export type TarSpec = Partial<Header> & {name: string; content?: string | Buffer}

/** A (possibly hostile) tar made with tar-stream, optionally gzipped. */
export async function makeTar(entries: TarSpec[], gzip = false): Promise<Buffer> {
  const packer = pack()
  const chunks: Buffer[] = []
  const collected = (async () => {
    for await (const chunk of packer) chunks.push(chunk as Buffer)
  })()
  for (const {content, ...header} of entries) {
    const body = content === undefined ? Buffer.alloc(0) : Buffer.from(content)
    await new Promise<void>((resolve, reject) => {
      packer.entry({mode: 0o644, mtime: new Date(0), ...header}, body, (error?: Error | null) =>
        error ? reject(error) : resolve(),
      )
    })
  }
  packer.finalize()
  await collected
  const tar = Buffer.concat(chunks)
  return gzip ? zlib.gzipSync(tar) : tar
}

export function streamOf(bytes: Buffer): Readable {
  return Readable.from([bytes])
}

function sha256(bytes: Buffer | string): string {
  return `sha256:${createHash('sha256').update(bytes).digest('hex')}`
}

/**
 * A minimal OCI image layout (oci-layout, index.json, manifest, config with diff_ids) around
 * layer blobs already written to files, tagged `latest`.
 */
export function writeOciLayout(layoutDir: string, layers: Array<{blob: LayerBlob; file: string}>): void {
  const blobs = join(layoutDir, 'blobs', 'sha256')
  mkdirSync(blobs, {recursive: true})
  writeFileSync(join(layoutDir, 'oci-layout'), JSON.stringify({imageLayoutVersion: '1.0.0'}))
  for (const {blob, file} of layers) renameSync(file, join(blobs, blob.digest.slice('sha256:'.length)))
  const config = JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: {},
    rootfs: {type: 'layers', diff_ids: layers.map(({blob}) => blob.diffId)},
  })
  const configDigest = putBlob(blobs, config)
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: {
      mediaType: 'application/vnd.oci.image.config.v1+json',
      digest: configDigest,
      size: Buffer.byteLength(config),
    },
    layers: layers.map(({blob}) => blob.descriptor),
  })
  const manifestDigest = putBlob(blobs, manifest)
  writeFileSync(
    join(layoutDir, 'index.json'),
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        {
          mediaType: 'application/vnd.oci.image.manifest.v1+json',
          digest: manifestDigest,
          size: Buffer.byteLength(manifest),
          annotations: {'org.opencontainers.image.ref.name': 'latest'},
        },
      ],
    }),
  )
}

function putBlob(blobs: string, content: string): string {
  const digest = sha256(content)
  writeFileSync(join(blobs, digest.slice('sha256:'.length)), content)
  return digest
}

export function readText(path: string): string {
  return readFileSync(path, 'utf8')
}
