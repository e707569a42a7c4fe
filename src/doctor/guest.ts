/**
 * What `run` boots besides the image: the guest kernel (Debian's cloud kernel, found through
 * apt's package lists, assembled into the store by the first run) and the accelerator it boots
 * under, by the same probe `run` uses (its kept outcome, or a short test boot).
 */
import {stat} from 'node:fs/promises'
import path from 'node:path'

import {isAegisError, messageOf} from '../errors.js'
import {execFileText, findOnPath} from '../exec.js'
import {cachedProbe, KVM_DEVICE, kvmDeviceProblem} from '../guest/accel.js'
import {APT_LISTS_DIR, aptPackageLists, guestInputs, type GuestInputs} from '../guest/assemble.js'
import {guestReference, loadGuest, type StoredGuest} from '../guest/guest-store.js'
import {QEMU} from '../guest/qemu.js'
import {supportedHostArchitecture} from '../oci/platform.js'
import {REF_NAME_ANNOTATION} from '../oci/reference.js'
import type {LocalStore} from '../store/index.js'
import {missing, ok, warn, type Check} from './check.js'

/** Debian drops superseded kernel versions at point releases; lists older than this may name one. */
const LISTS_STALE_DAYS = 30
const DAY_MS = 86_400_000

export async function checkAptLists(listsDir = APT_LISTS_DIR): Promise<Check> {
  const lists = await aptPackageLists(listsDir)
  if (lists.length === 0)
    return missing(
      'apt lists',
      `no package lists in ${listsDir} (run finds and downloads the guest kernel through them)`,
      'apt-get update',
    )
  const newest = Math.max(
    ...(await Promise.all(lists.map(async (name) => (await stat(path.join(listsDir, name))).mtimeMs))),
  )
  const days = Math.floor((Date.now() - newest) / DAY_MS)
  const found = `${lists.length} package lists in ${listsDir}, updated ${days === 0 ? 'today' : `${days} day${days === 1 ? '' : 's'} ago`}`
  if (days > LISTS_STALE_DAYS)
    return warn('apt lists', `${found}: they may name a kernel the archive no longer has`, 'apt-get update')
  return ok('apt lists', found)
}

export interface GuestFinding {
  check: Check
  /** The guest the accelerator probe boots: this host's, else any guest for its architecture in the store. */
  guest?: StoredGuest
}

/** The guest kernel package `run` would assemble, and whether the store has it already. */
export async function checkGuestKernel(store: LocalStore, cacheDir: string): Promise<GuestFinding> {
  let inputs: GuestInputs
  try {
    inputs = await guestInputs({cacheDir})
  } catch (error) {
    if (!isAegisError(error)) throw error
    const guest = await anyStoredGuest(store)
    return {check: missing('guest kernel', error.message, error.hint ?? 'apt-get update'), guest}
  }
  const {name, version} = inputs.kernelPackage
  const reference = guestReference(inputs)
  const stored = await storedGuest(store, reference)
  if (stored)
    return {check: ok('guest kernel', `${name} ${version}, assembled in the store as ${reference}`), guest: stored}
  // Not assembled yet: the first run downloads that version, so apt's lists must still have it.
  const shown = await execFileText('apt-cache', ['show', '--no-all-versions', `${name}=${version}`], {
    timeoutMs: 30_000,
  }).catch((error: unknown) => ({exitCode: 1, stdout: '', stderr: messageOf(error)}))
  if (shown.exitCode !== 0 || !shown.stdout.startsWith('Package:')) {
    const said =
      shown.stderr.split('\n').find((line) => line.startsWith('E: ')) ?? (shown.stderr.trim() || "not in apt's lists")
    return {
      check: missing('guest kernel', `${name} ${version} cannot be downloaded: ${said}`, 'apt-get update'),
      guest: await anyStoredGuest(store),
    }
  }
  return {
    check: ok(
      'guest kernel',
      `${name} ${version}, in apt's lists (the first run downloads it and assembles the guest, once)`,
    ),
    guest: await anyStoredGuest(store),
  }
}

async function storedGuest(store: LocalStore, reference: string): Promise<StoredGuest | undefined> {
  try {
    if ((await store.lookup(reference)) === undefined) return undefined
    return await loadGuest(store, reference)
  } catch {
    return undefined // the store's own check reports what is wrong with it
  }
}

/** A guest for this host's architecture that the store holds, newest tag last. */
async function anyStoredGuest(store: LocalStore): Promise<StoredGuest | undefined> {
  const arch = supportedHostArchitecture()
  if (!arch) return undefined // no guest boots on a host aegis-kit does not support
  const index = await store.readIndex().catch(() => undefined)
  const references = (index?.manifests ?? [])
    .map((desc) => desc.annotations?.[REF_NAME_ANNOTATION] ?? '')
    .filter((ref) => ref.startsWith('aegis-guest:') && ref.includes(`-${arch}-`))
  for (const reference of references.reverse()) {
    const guest = await storedGuest(store, reference)
    if (guest) return guest
  }
  return undefined
}

/** KVM or TCG, as `run --accel auto` would choose, and why. */
export async function checkAccelerator(
  guest: StoredGuest | undefined,
  cacheDir: string,
  kvmDevice = KVM_DEVICE,
): Promise<Check> {
  const qemu = findOnPath(QEMU)
  if (!qemu)
    return warn(
      'accelerator',
      `not probed: ${QEMU} is missing`,
      'install QEMU (see the qemu line), then run doctor again',
    )
  const tcg = (reason: string) =>
    warn(
      'accelerator',
      `TCG software emulation, not KVM: ${reason}`,
      'none needed: run works under TCG (Node workloads start 8-14x slower); for KVM, a host with hardware virtualization (modprobe kvm_intel or kvm_amd) or, in a VM, nested virtualization QEMU can use',
    )
  // Without a usable device there is nothing to boot; with one, only a test boot tells.
  const deviceProblem = await kvmDeviceProblem(kvmDevice)
  if (deviceProblem) return tcg(deviceProblem)
  if (!guest) {
    return warn(
      'accelerator',
      `not probed yet: ${kvmDevice} opens, but whether QEMU can use it takes a test boot of the guest kernel, and the store has none yet`,
      'the first `aegis-kit run` assembles it and probes KVM (e.g. aegis-kit run hello -- true); run doctor again after it',
    )
  }
  const probe = await cachedProbe(
    {qemu, kernel: guest.kernel, cacheDir, onStatus: () => undefined, kvmDevice},
    kvmDevice,
  )
  if (probe.ok)
    return ok(
      'accelerator',
      `KVM (a test boot of ${guest.kernelRelease || 'the guest kernel'} under KVM reached its panic)`,
    )
  return tcg(probe.reason ?? 'the test boot failed')
}
