/**
 * The instance's writable layer when the kit sets `resources.disk`: a sparse ext4 image of
 * exactly that size on the host, attached as a second virtio-blk disk and used by the harness as
 * the overlay's upper layer (images/guest/guest_setup.c, mount_root).
 *
 * Why a disk and not a tmpfs with `size=`: a tmpfs holds what the workload writes in guest
 * memory, so a 4 GB limit would need a 4 GB VM; a disk keeps the writes out of memory, the guest
 * sees ENOSPC at the limit, and the host file cannot grow past its size (QEMU never writes
 * beyond the end of a raw image). The file is sparse and the guest mounts it with `discard`, so
 * the host pays for what the workload keeps, not for the limit. It is deleted as soon as QEMU has
 * it open (see qemu.ts), so once the guest runs no exit path, not even SIGKILL, leaves it behind;
 * one left by a process killed during the boot is removed by the next VM that makes a disk.
 *
 * Without `resources.disk` the writable layer stays a tmpfs: bounded by the VM's memory (the
 * kernel's tmpfs default, half of it).
 */
import {readdir, rm, statfs} from 'node:fs/promises'
import path from 'node:path'

import {AegisError, messageOf} from '../errors.js'
import {execFileText} from '../exec.js'

/** The disk's virtio serial: how the harness finds it, whatever /dev/vdX the kernel names it. */
export const WRITABLE_LAYER_SERIAL = 'aegis-rw'

/** Below this, ext4's own metadata leaves too little room to be worth a disk. */
export const MIN_WRITABLE_LAYER_BYTES = 16 * 1024 ** 2

const MiB = 1024 ** 2

function describeSize(bytes: number): string {
  return bytes >= 1024 * MiB ? `${(bytes / (1024 * MiB)).toFixed(1)} GiB` : `${Math.round(bytes / MiB)} MiB`
}

/**
 * Fails unless a writable layer of `bytes` fits: at least the minimum, and no more than the free
 * space under `dir` (a sparse file larger than that could fill the host's disk).
 */
export async function checkWritableLayerSize(bytes: number, dir: string, what: string): Promise<void> {
  if (bytes < MIN_WRITABLE_LAYER_BYTES) {
    throw new AegisError(
      `${what} is ${describeSize(bytes)}; the writable layer needs at least ${describeSize(MIN_WRITABLE_LAYER_BYTES)}`,
      {hint: 'give it more, e.g. disk: 1gb'},
    )
  }
  const free = await statfs(dir).then(
    (info) => info.bavail * info.bsize,
    (error: unknown) => {
      throw new AegisError(`cannot read the free space under ${dir}: ${messageOf(error)}`, {
        hint: 'check that the data directory (AEGIS_KIT_HOME) exists and is readable',
      })
    },
  )
  if (bytes > free) {
    throw new AegisError(
      `${what} is ${describeSize(bytes)} but only ${describeSize(free)} is free under ${dir}: the instance could fill the host's disk`,
      {
        hint: 'free space there, put the data directory on a larger disk (AEGIS_KIT_HOME), or lower resources.disk',
      },
    )
  }
}

/** Where a VM of this process, `id` unique among them, keeps its layer's disk in `dir`. */
export function writableLayerDiskPath(dir: string, id: string): string {
  return path.join(dir, `rw-${process.pid}-${id}.ext4`)
}

/** Deletes the disks in `dir` whose process is gone (killed before its VM's guest ran). */
export async function removeAbandonedLayerDisks(dir: string): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[]) // no directory: nothing abandoned
  await Promise.all(
    names.map(async (name) => {
      const owner = /^rw-(\d+)-.*\.ext4$/.exec(name)?.[1]
      if (owner === undefined || processExists(Number(owner))) return
      await rm(path.join(dir, name), {force: true})
    }),
  )
}

function processExists(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM' // someone else's: alive
  }
}

/** Makes `file` an empty, sparse ext4 filesystem of exactly `bytes` (rounded down to whole KiB). */
export async function makeWritableLayerDisk(file: string, bytes: number): Promise<void> {
  // No journal: the layer is thrown away with the VM, so crash consistency buys nothing. No
  // reserved blocks: the limit is the workload's, all of it. Lazy inode tables: the new file's
  // are holes (zeros) already, so neither mke2fs nor the guest (noinit_itable) writes them.
  const made = await execFileText('mke2fs', [
    '-q',
    '-t',
    'ext4',
    '-O',
    '^has_journal',
    '-m',
    '0',
    '-L',
    'aegis-rw',
    '-E',
    'lazy_itable_init=1,root_owner=0:0',
    file,
    `${Math.floor(bytes / 1024)}k`,
  ]).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT')
      throw new AegisError('mke2fs is not installed', {
        hint: 'install it: apt-get install e2fsprogs (scripts/setup does)',
      })
    throw new AegisError(`could not make the writable layer's disk: ${messageOf(error)}`)
  })
  if (made.exitCode !== 0) {
    const detail = made.stderr.trim().split('\n').slice(-2).join(' ') || `exit code ${made.exitCode ?? made.signal}`
    throw new AegisError(`could not make the writable layer's disk ${file}: mke2fs failed: ${detail}`, {
      hint: 'check the free space and permissions under the data directory',
    })
  }
}
