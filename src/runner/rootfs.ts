/**
 * The root filesystem an instance boots: the image's layers unpacked once per manifest digest
 * into a cache that no instance ever writes to (the guest mounts it read-only under an overlay
 * whose writable layer is the instance's own: a disk of resources.disk, or a tmpfs). Unpacked into a temporary directory and renamed, so a directory that exists is
 * complete.
 */
import {existsSync} from 'node:fs'
import {mkdir, mkdtemp, rename, rm} from 'node:fs/promises'
import path from 'node:path'
import {AegisError, messageOf} from '../errors.js'
import {execFileText} from '../exec.js'
import {openImage, type ImageView} from '../oci/image.js'
import {toOciPlatform, toPlatformName, type Architecture} from '../oci/platform.js'
import type {Descriptor, ImageConfig} from '../oci/types.js'
import type {LocalStore} from '../store/index.js'

export interface Rootfs {
  dir: string
  manifest: Descriptor
  config: ImageConfig
}

/** The image under `reference` (which may name an index) for this machine's architecture. */
async function openHostImage(store: LocalStore, reference: string, architecture: Architecture): Promise<ImageView> {
  const platform = toPlatformName(architecture)
  return openImage(store, reference, {
    platform: toOciPlatform(architecture),
    noPlatform: () =>
      new AegisError(`${reference} has no ${platform} image`, {
        hint: `rebuild it for this machine: aegis-kit build --platform ${platform}`,
      }),
  })
}

export async function prepareRootfs(
  store: LocalStore,
  reference: string,
  cacheDir: string,
  architecture: Architecture,
  onProgress?: (message: string) => void,
): Promise<Rootfs> {
  const image = await openHostImage(store, reference, architecture)
  const desc = image.descriptor
  const config = await image.config()
  const rootsDir = path.join(cacheDir, 'rootfs')
  const dir = path.join(rootsDir, desc.digest.replace('sha256:', ''))
  if (existsSync(dir)) return {dir, manifest: desc, config}

  await mkdir(rootsDir, {recursive: true})
  const work = await mkdtemp(path.join(rootsDir, '.unpack-'))
  try {
    onProgress?.(`unpacking ${image.layers.length} layers of ${reference} (once per image)`)
    const {unpackImage} = await import('../image/unpack.js') // only here: a warm start never unpacks
    // Layers are untrusted input: unpackImage keeps every entry inside `work`. Setuid bits are
    // kept (a bootable root needs su and friends); device nodes are skipped (devtmpfs has them).
    await unpackImage(
      image.layers.map((layer) => () => image.open(layer)),
      work,
      {preserveSetuid: true, preserveOwners: true, diffIds: config.rootfs.diff_ids},
    )
    await rename(work, dir).catch(async (error: NodeJS.ErrnoException) => {
      if (!existsSync(dir)) throw error // else another run unpacked the same image first
    })
  } finally {
    await rm(work, {recursive: true, force: true})
  }
  return {dir, manifest: desc, config}
}

/**
 * The unpacked root as a read-only ext4 image on virtio-blk (made once per image, next to the
 * directory). Under emulation a block root reads files far faster than virtiofs (OpenClaw's
 * start-up loads thousands of modules), and unlike vhost-user-fs it keeps the VM snapshottable.
 */
export async function prepareRootDisk(rootfs: Rootfs, onProgress?: (message: string) => void): Promise<string> {
  const disk = `${rootfs.dir}.ext4`
  if (existsSync(disk)) return disk
  const du = await execFileText('du', ['-sb', rootfs.dir])
  const bytes = Number(du.stdout.split('\t')[0])
  if (du.exitCode !== 0 || !Number.isFinite(bytes))
    throw new AegisError(
      `could not measure ${rootfs.dir}: ${du.stderr.trim() || `du exited with ${du.exitCode ?? du.signal}`}`,
    )
  // ext4 metadata and inode tables need room beyond the file data.
  const sizeMiB = Math.ceil((bytes * 1.2) / 1024 ** 2) + 64
  const temp = `${disk}.${process.pid}.tmp`
  onProgress?.(`making the root disk (${sizeMiB} MiB, once per image)`)
  try {
    const made = await execFileText('mke2fs', [
      '-q',
      '-t',
      'ext4',
      '-d',
      rootfs.dir,
      '-L',
      'aegis-root',
      '-O',
      '^has_journal',
      '-E',
      'root_owner=0:0',
      temp,
      `${sizeMiB}M`,
    ]).catch((error: NodeJS.ErrnoException) => {
      if (error.code === 'ENOENT')
        throw new AegisError('mke2fs is not installed', {
          hint: 'install it: apt-get install e2fsprogs (scripts/setup does); run `aegis-kit doctor` to check the rest',
        })
      throw new AegisError(`could not make the root disk: ${messageOf(error)}`)
    })
    if (made.exitCode !== 0)
      throw new AegisError(
        `could not make the root disk: mke2fs failed: ${made.stderr.trim().split('\n').slice(-2).join(' ') || `exit code ${made.exitCode ?? made.signal}`}`,
      )
    await rename(temp, disk)
  } catch (error) {
    await rm(temp, {force: true})
    throw error
  }
  return disk
}
