/**
 * Which QEMU accelerator boots the guest: KVM when a probe boot shows it works, TCG (software
 * emulation, 8-14x slower for Node workloads) otherwise, with a warning that says why.
 *
 * A /dev/kvm that opens is not proof: on some sandboxes it is a nested PVM device on which
 * QEMU aborts ("failed to set MSR") or a standard kernel hangs without a line of output. So the
 * probe boots the guest kernel itself, with the CPU model a run uses, without an initramfs: a
 * working KVM reaches "Kernel panic - not syncing: VFS" in well under a second, and panic=-1
 * with -no-reboot makes QEMU exit 0. The outcome is kept per host boot, kernel and QEMU, so only
 * the first run after a reboot (or a new kernel) pays for it; a timeout only for an hour.
 */

import {createHash} from 'node:crypto'
import {constants} from 'node:fs'
import {access, readFile, stat} from 'node:fs/promises'
import path from 'node:path'

import {AegisError} from '../errors.js'
import {remembered} from '../remembered.js'
import {errorCode} from '../fs-util.js'
import {ChildProcessGroup} from './child-processes.js'
import {guestKernelCommandLine} from './kernel-command-line.js'

export type Accel = 'kvm' | 'tcg'
export type AccelChoice = Accel | 'auto'

export const KVM_DEVICE = '/dev/kvm'
/** A working KVM boots to the panic in ~0.3 s; a hanging one never prints. */
const PROBE_TIMEOUT_MS = 5000

export interface AccelProbe {
  ok: boolean
  /** Why KVM cannot be used, in a few words, when it cannot. */
  reason?: string
  /** The boot neither panicked nor failed in time: maybe a hang, maybe a host too busy. */
  timedOut?: boolean
}

/** A timed-out probe is believed this long (a host busy for a moment must not cost KVM until reboot). */
const TIMED_OUT_KEPT_MS = 60 * 60 * 1000

export interface ChooseAccelOptions {
  choice: AccelChoice
  qemu: string
  kernel: string
  /** Where the probe's outcome is kept (aegis-kit's cache directory). */
  cacheDir: string
  onStatus: (message: string) => void
  /** For tests: another device node than /dev/kvm. */
  kvmDevice?: string
}

/** QEMU's flags for `accel`; TCG gets a translation cache sized to the guest's memory. */
export function accelArgs(accel: Accel, memoryMib: number): string[] {
  if (accel === 'kvm') return ['-accel', 'kvm', '-cpu', 'host']
  return ['-accel', `tcg,tb-size=${translationCacheMib(memoryMib)}`, '-cpu', 'max']
}

/**
 * TCG's translated-code cache in MiB. QEMU's default (1 GiB) is more host memory than a small
 * guest is worth, but 64 MiB (enough for busybox) is too small for a JIT-heavy workload such as
 * Node: V8's code overflows it and every overflow flushes all translations. A quarter of the
 * guest's memory, between 64 and 512 MiB; the cache is touched only as it fills.
 */
export function translationCacheMib(memoryMib: number): number {
  return Math.min(512, Math.max(64, Math.floor(memoryMib / 4)))
}

/** The accelerator for this run: `choice` checked against what the host can do. */
export async function chooseAccel(options: ChooseAccelOptions): Promise<Accel> {
  if (options.choice === 'tcg') return 'tcg'
  const device = options.kvmDevice ?? KVM_DEVICE
  const probe = await cachedProbe(options, device)
  if (probe.ok) return 'kvm'
  if (options.choice === 'kvm') throw kvmRefused(probe.reason)
  options.onStatus(
    `warning: running under TCG software emulation (Node workloads start 8-14x slower): ${probe.reason}; --accel tcg skips this check`,
  )
  return 'tcg'
}

/** Whether KVM boots the guest here: the kept outcome, else a probe (`run`, and `doctor`'s report). */
export async function cachedProbe(options: Omit<ChooseAccelOptions, 'choice'>, device: string): Promise<AccelProbe> {
  // No usable device is decided at once, and not kept: a user may fix the permission.
  const problem = await kvmDeviceProblem(device)
  if (problem) return {ok: false, reason: problem}
  const key = await probeKey(options, device)
  return remembered(
    path.join(options.cacheDir, 'accel-probe.json'),
    key,
    () => {
      options.onStatus('checking whether KVM boots the guest (once per host boot)')
      return probeKvm(options.qemu, options.kernel)
    },
    {stillValid: (probe, savedAt) => !probe.timedOut || Date.now() - savedAt < TIMED_OUT_KEPT_MS},
  )
}

/**
 * `--accel kvm` on a host without a usable KVM device fails at once, among run's cheap checks,
 * before any build or guest assembly (the probe boot, which needs the guest kernel, comes later).
 */
export async function checkAccelChoice(choice: AccelChoice, device = KVM_DEVICE): Promise<void> {
  if (choice !== 'kvm') return
  const problem = await kvmDeviceProblem(device)
  if (problem) throw kvmRefused(problem)
}

function kvmRefused(reason: string | undefined): AegisError {
  return new AegisError(`--accel kvm: KVM cannot boot the guest here: ${reason}`, {
    hint: 'use --accel tcg (software emulation, slower) or --accel auto, which falls back to it',
  })
}

/** Why this user cannot use `device` for KVM, or undefined when it opens for reading and writing. */
export async function kvmDeviceProblem(device: string): Promise<string | undefined> {
  try {
    await access(device, constants.R_OK | constants.W_OK)
    return undefined
  } catch (error) {
    return errorCode(error) === 'ENOENT'
      ? `${device} does not exist (no KVM on this host, or the kvm module is not loaded)`
      : `${device} is not readable and writable by this user (add it to the kvm group)`
  }
}

/** What the probe's outcome depends on: this boot of the host, the device, QEMU and the kernel. */
async function probeKey(options: Omit<ChooseAccelOptions, 'choice'>, device: string): Promise<string> {
  // Without /proc's boot id the answer is kept across reboots too: a stale answer only costs a failed boot's fallback.
  const bootId = await readFile('/proc/sys/kernel/random/boot_id', 'utf8').catch(() => 'unknown')
  // By what does not change with use: the device's number (opening it updates its times), the
  // kernel's path and size (a store blob's path is its digest, and the store touches it on use).
  // A missing file keys as empty: the probe itself then reports it.
  const [deviceInfo, qemuInfo, kernelInfo] = await Promise.all(
    [device, options.qemu, options.kernel].map((file) => stat(file).catch(() => undefined)),
  )
  const files = [
    `${device}:${deviceInfo?.rdev ?? ''}`,
    `${options.qemu}:${qemuInfo?.size ?? ''}:${qemuInfo?.mtimeMs ?? ''}`,
    `${options.kernel}:${kernelInfo?.size ?? ''}`,
  ]
  return createHash('sha256')
    .update([bootId.trim(), ...files].join('\n'))
    .digest('hex')
}

/** Boots `kernel` under KVM without an initramfs and says whether it got as far as its panic. */
export function probeKvm(qemu: string, kernel: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<AccelProbe> {
  return probeBoot(qemu, kernel, 'kvm', timeoutMs)
}

/** Boots `kernel` under `accel` with no root: ok once it panics and QEMU exits cleanly. */
export async function probeBoot(qemu: string, kernel: string, accel: Accel, timeoutMs: number): Promise<AccelProbe> {
  const args = await probeArguments(kernel, accel)
  // Started as run's other helpers are, under the watchdog: a CLI killed mid-probe leaves no QEMU behind.
  const processes = new ChildProcessGroup()
  const probe = await watchProbeBoot(processes, qemu, args, {accel, timeoutMs})
  await processes.stopAll(0)
  return probe
}

/** The probe's QEMU command line: the smallest microvm that boots `kernel` under `accel`. */
async function probeArguments(kernel: string, accel: Accel): Promise<string[]> {
  return [
    '-M',
    'microvm',
    ...accelArgs(accel, 64),
    '-m',
    '64M',
    '-smp',
    '1',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-serial',
    'stdio',
    // A real boot's command line (panic=-1 and the TSC rate included): without an initramfs it
    // stops at "VFS: Unable to mount root fs".
    '-kernel',
    kernel,
    '-append',
    await guestKernelCommandLine(),
  ]
}

/** Spawns the probe's QEMU, kills it after `timeoutMs`, and judges how it ended. */
function watchProbeBoot(
  processes: ChildProcessGroup,
  qemu: string,
  args: string[],
  probe: {accel: Accel; timeoutMs: number},
): Promise<AccelProbe> {
  return new Promise<AccelProbe>((resolve) => {
    const child = processes.spawn(qemu, args, {stdio: ['ignore', 'pipe', 'pipe']})
    let output = ''
    let errors = ''
    child.stdout?.setEncoding('utf8').on('data', (text: string) => {
      output = (output + text).slice(-16384)
    })
    child.stderr?.setEncoding('utf8').on('data', (text: string) => {
      errors = (errors + text).slice(-4096)
    })
    let timedOut = false
    const timer = setTimeout(() => {
      timedOut = true
      processes.killNow('SIGKILL')
    }, probe.timeoutMs)
    child.once('error', (error) => {
      clearTimeout(timer)
      resolve({ok: false, reason: `QEMU did not start: ${error.message}`})
    })
    child.once('close', (code, signal) => {
      clearTimeout(timer)
      resolve(probeOutcome({code, signal, output, errors, timedOut}, probe))
    })
  })
}

/** The probe's verdict from how its QEMU ended and what it printed. */
function probeOutcome(
  ended: {code: number | null; signal: NodeJS.Signals | null; output: string; errors: string; timedOut: boolean},
  probe: {accel: Accel; timeoutMs: number},
): AccelProbe {
  const {code, signal, output, errors} = ended
  if (code === 0 && /Kernel panic/.test(output)) return {ok: true}
  const under = `a test boot under ${probe.accel.toUpperCase()}`
  if (ended.timedOut)
    return {
      ok: false,
      timedOut: true,
      reason: `${under} printed ${output.trim() === '' ? 'nothing' : 'no panic'} in ${probe.timeoutMs / 1000} s (a nested KVM that hangs standard kernels)`,
    }
  const said =
    errors
      .split('\n')
      .map((line) => line.trim())
      .find((line) => /error/i.test(line)) ??
    errors.trim().split('\n')[0] ??
    ''
  return {
    ok: false,
    reason: `${under} failed (QEMU ${signal ? `killed by ${signal}` : `exit ${code}`}${said ? `: ${said.replace(/^qemu-system-\S+: /, '')}` : ''})`,
  }
}
