/**
 * A deliberately naive ContentStore over an OCI image layout directory, for registry tests: it
 * writes to a temp file and renames on a clean end, but does NOT check digests itself, so tests
 * prove copyGraph's own verification. skopeo and umoci read and write the same layout.
 */
import {createReadStream, createWriteStream} from 'node:fs'
import {access, mkdir, readdir, readFile, rename, rm, writeFile} from 'node:fs/promises'
import {join} from 'node:path'
import {Readable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import type {ContentStore, Descriptor} from '../../src/oci/types.js'

const REF_NAME = 'org.opencontainers.image.ref.name'

interface LayoutIndex {
  schemaVersion: 2
  manifests: Descriptor[]
}

export class LayoutStore implements ContentStore {
  constructor(readonly dir: string) {}

  static async create(dir: string): Promise<LayoutStore> {
    await mkdir(join(dir, 'blobs', 'sha256'), {recursive: true})
    await writeFile(join(dir, 'oci-layout'), JSON.stringify({imageLayoutVersion: '1.0.0'}))
    await writeFile(join(dir, 'index.json'), JSON.stringify({schemaVersion: 2, manifests: []}))
    return new LayoutStore(dir)
  }

  blobPath(digest: string): string {
    return join(this.dir, 'blobs', 'sha256', digest.replace(/^sha256:/, ''))
  }

  async exists(desc: Descriptor): Promise<boolean> {
    return access(this.blobPath(desc.digest)).then(
      () => true,
      () => false,
    )
  }

  async fetch(desc: Descriptor): Promise<Readable> {
    await access(this.blobPath(desc.digest))
    return createReadStream(this.blobPath(desc.digest))
  }

  async push(desc: Descriptor, content: Readable | Buffer): Promise<void> {
    const temp = `${this.blobPath(desc.digest)}.${process.pid}.${Math.random().toString(36).slice(2)}.partial`
    try {
      await pipeline(Buffer.isBuffer(content) ? Readable.from([content]) : content, createWriteStream(temp))
      await rename(temp, this.blobPath(desc.digest))
    } catch (error) {
      await rm(temp, {force: true})
      throw error
    }
  }

  async resolve(reference: string): Promise<Descriptor> {
    const index = await this.index()
    const found = index.manifests.find((m) => m.annotations?.[REF_NAME] === reference || m.digest === reference)
    if (!found) throw new Error(`${reference} not found in ${this.dir}`)
    const {annotations, ...desc} = found
    const rest = Object.fromEntries(Object.entries(annotations ?? {}).filter(([k]) => k !== REF_NAME))
    return Object.keys(rest).length > 0 ? {...desc, annotations: rest} : desc
  }

  async tag(desc: Descriptor, reference: string): Promise<void> {
    if (!(await this.exists(desc))) throw new Error(`cannot tag missing ${desc.digest}`)
    const index = await this.index()
    index.manifests = index.manifests.filter((m) => m.annotations?.[REF_NAME] !== reference)
    index.manifests.push({...desc, annotations: {...desc.annotations, [REF_NAME]: reference}})
    await writeFile(join(this.dir, 'index.json'), JSON.stringify(index))
  }

  /** Every file under blobs/sha256 (partials included), for "nothing was left behind" checks. */
  async blobFiles(): Promise<string[]> {
    return readdir(join(this.dir, 'blobs', 'sha256'))
  }

  private async index(): Promise<LayoutIndex> {
    return JSON.parse(await readFile(join(this.dir, 'index.json'), 'utf8')) as LayoutIndex
  }
}
