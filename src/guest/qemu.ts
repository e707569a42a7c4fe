/**
 * A bare microVM boot with QEMU: the assembled kernel and initramfs, the image root and the
 * workspace shared by virtiofsd, the run spec handed over a virtio-serial control port,
 * the console streamed back. KVM or TCG, as the caller chose (see accel.ts).
 */

import {existsSync} from 'node:fs'
import {mkdir, mkdtemp, rm} from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

import {AegisError} from '../errors.js'
import {findOnPath} from '../exec.js'
import {fromNodeArch, toQemuSystem, toQemuSystemPackage} from '../oci/platform.js'
import {accelArgs, type Accel} from './accel.js'
import {guestKernelCommandLine} from './kernel-command-line.js'
import {ChildProcessGroup} from './child-processes.js'
import {noNetwork, type AttachedNetwork, type NetworkBackend} from './network.js'
import {CONTROL_PORT_NAME, encodeRunSpec, type GuestPlumbing, type RunSpec} from './spec.js'
import {startVirtiofsd} from './virtiofsd.js'
import {makeWritableLayerDisk, removeAbandonedLayerDisks, WRITABLE_LAYER_SERIAL, writableLayerDiskPath} from './writable-layer.js'

/**
 * What to boot. The kernel, initramfs, root disk and spec may be promises: startVm starts the
 * host side (virtiofsd, the network) at once, spawns QEMU when the files are known and hands the
 * spec over when it is; a rejected promise stops everything and is what startVm rejects with.
 */
export interface VmOptions {
  kernel: string | Promise<string>
  initrd: string | Promise<string>
  /**
   * The image's root filesystem, shared by virtiofs; the guest sees it read-only under an
   * overlay (see writableLayer). Give this or rootDisk.
   */
  rootDir?: string
  /**
   * The root as a raw ext4 image (`mke2fs -t ext4 -d DIR FILE SIZE`), attached read-only on
   * virtio-blk: no virtiofsd, and unlike vhost-user-fs it does not block VM snapshots.
   */
  rootDisk?: string | Promise<string>
  /** Shared writable at /workspace when given. */
  workspaceDir?: string
  /**
   * The size limit of the workload's writable layer: an ext4 disk of `bytes`, a sparse file made
   * in `dir` and deleted once QEMU holds it open (writable-layer.ts). Default: a tmpfs in guest memory.
   */
  writableLayer?: {bytes: number; dir: string}
  memoryMib?: number
  vcpus?: number
  spec: RunSpec | Promise<RunSpec>
  /** Default: no NIC. */
  network?: NetworkBackend
  /** Console output (kernel warnings, harness lines, the workload's stdout and stderr). */
  onConsole?: (text: string) => void
  /** Kill the VM if its harness has not asked for the run spec by then. Default 60 s (TCG under load is slow). */
  bootTimeoutMs?: number
  /** The accelerator, as chooseAccel() gave it (a promise: QEMU waits for it). Default TCG. */
  accel?: Accel | Promise<Accel>
  /** Called once QEMU is spawned: work for the spec can start then, off the boot's critical path. */
  onStarted?: () => void
  /** Appended to the kernel command line (e.g. "loglevel=7" to debug a boot); never put secrets here. */
  extraKernelArgs?: string[]
}

export interface VmResult {
  /** The workload's exit code; 128+N when a signal N ended it; 125 when the harness failed. */
  exitCode: number
  /** The kernel's OOM killer ended the workload. */
  oomKilled: boolean
  /** Why the harness could not run the workload (bad command, failed mount...). */
  harnessError?: string
  /** The host had to kill QEMU (stop() ran out of grace). */
  killedByHost: boolean
  /** Milliseconds from QEMU's start to: the harness asking for its spec, the workload starting, power-off. */
  timings: {readyMs?: number; startedMs?: number; exitedMs: number}
  /** The console's last 64 KiB. */
  console: string
}

export interface RunningVm {
  readonly result: Promise<VmResult>
  /** Asks the workload to stop (SIGTERM), then kills the VM after `graceMs`. */
  stop(graceMs?: number): Promise<VmResult>
}

const CONSOLE_KEEP = 64 * 1024
export const VIRTIOFSD = '/usr/lib/qemu/virtiofsd'
/**
 * The host's own system emulator: guests run the host's architecture (KVM needs that). An
 * unsupported host gets amd64's names so this module still loads there, for checks to report.
 */
const QEMU_ARCH = fromNodeArch(process.arch) ?? 'amd64'
export const QEMU = toQemuSystem(QEMU_ARCH)
/** The Debian package that installs QEMU (and virtiofsd with it), for hints. */
export const QEMU_PACKAGE = toQemuSystemPackage(QEMU_ARCH)

/** Parses the harness's report lines ("AEGIS_EXIT=3") from a stream of text. */
class ReportReader {
  private partial = ''
  readonly reports = new Map<string, string>()
  constructor(private readonly onReport?: (key: string, value: string) => void) {}
  push(text: string): void {
    const lines = (this.partial + text).split(/\r?\n/)
    this.partial = lines.pop() ?? ''
    for (const line of lines) {
      const match = /^(AEGIS_[A-Z]+)(?:=(.*))?$/.exec(line.trim())
      if (!match) continue
      this.reports.set(match[1]!, match[2] ?? '')
      this.onReport?.(match[1]!, match[2] ?? '')
    }
  }
}

/** Fails unless this is Linux with QEMU and virtiofsd installed; returns QEMU's path. */
export function checkVmTools(): string {
  // HVF on macOS would need another machine type and a virtiofs daemon that macOS does not have.
  if (process.platform !== 'linux') {
    throw new AegisError(`run needs a Linux host (this is ${process.platform}): the VM's root and workspace are shared by QEMU's virtiofsd, which is Linux-only`, {hint: 'build, validate and push work here; run kits on a Linux machine or in a Linux VM'})
  }
  const qemu = findOnPath(QEMU)
  if (!qemu) throw new AegisError(`${QEMU} is not installed`, {hint: `install it: apt-get install ${QEMU_PACKAGE}; run \`aegis-kit doctor\` to check the rest`})
  if (!existsSync(VIRTIOFSD)) throw new AegisError(`${VIRTIOFSD} is missing`, {hint: `install it: apt-get install ${QEMU_PACKAGE} (Debian 12 ships virtiofsd with QEMU); run \`aegis-kit doctor\` to check the rest`})
  return qemu
}

/** Boots a VM running `options.spec`, returning once QEMU runs and the spec is known; `result` gives the outcome. */
export async function startVm(options: VmOptions): Promise<RunningVm> {
  // Taken at once: a promise the caller gave must not reject unobserved while the helpers start.
  const given = {files: Promise.all([options.kernel, options.initrd, options.rootDisk, options.accel ?? 'tcg']), spec: Promise.resolve(options.spec)}
  given.files.catch(() => undefined)
  given.spec.catch(() => undefined)
  const qemuBinary = checkVmTools()
  if ((options.rootDir === undefined) === (options.rootDisk === undefined)) throw new Error('startVm needs exactly one of rootDir and rootDisk')
  const memoryMib = options.memoryMib ?? 512
  const runDir = await mkdtemp(path.join(os.tmpdir(), 'aegis-vm-'))
  // The deepest of the VM's sockets (workspace.fs.sock is as long); a unix socket path holds 107 bytes.
  if (Buffer.byteLength(path.join(runDir, 'gvproxy', 'qemu.sock')) > 107) {
    await rm(runDir, {recursive: true, force: true})
    throw new AegisError(`the temporary directory ${os.tmpdir()} is too deep for the VM's sockets (unix socket paths hold at most 107 bytes)`, {hint: 'set TMPDIR to a shorter path, e.g. TMPDIR=/tmp'})
  }
  const processes = new ChildProcessGroup()
  const layer = options.writableLayer
  const layerDisk = layer && writableLayerDiskPath(layer.dir, path.basename(runDir))
  let network: AttachedNetwork | undefined
  let control: net.Server | undefined
  let cleaned: Promise<void> | undefined
  const cleanup = (): Promise<void> => cleaned ??= (async () => {
    await processes.stopAll()
    await network?.detach()
    control?.close()
    if (layerDisk !== undefined) await rm(layerDisk, {force: true})
    await rm(runDir, {recursive: true, force: true})
  })()

  try {
    const shares: {tag: string; dir: string; cache: 'always' | 'auto'}[] = []
    if (options.rootDir !== undefined) shares.push({tag: 'root', dir: options.rootDir, cache: 'always'})
    if (options.workspaceDir) shares.push({tag: 'workspace', dir: options.workspaceDir, cache: 'auto'})
    // The helpers start side by side (each waits for its socket) while the caller may still be
    // working out the files; all settle before any error is thrown, so cleanup sees every process.
    const [shared, attached, files, layerMade] = await Promise.allSettled([
      Promise.all(shares.map((share) => startVirtiofsd(processes, VIRTIOFSD, {...share, socketPath: path.join(runDir, `${share.tag}.fs.sock`)}))),
      (options.network ?? noNetwork()).attach({runDir, processes}),
      given.files,
      layer && layerDisk !== undefined ? (async () => {
        await mkdir(layer.dir, {recursive: true})
        await removeAbandonedLayerDisks(layer.dir)
        await makeWritableLayerDisk(layerDisk, layer.bytes)
      })() : undefined,
    ])
    if (attached.status === 'fulfilled') network = attached.value
    // The caller's failure first: it is the cause when helpers fail on being abandoned.
    for (const outcome of [files, shared, attached, layerMade]) if (outcome.status === 'rejected') throw outcome.reason
    const sockets = (shared as PromiseFulfilledResult<string[]>).value
    const nic = (attached as PromiseFulfilledResult<AttachedNetwork>).value
    const [kernel, initrd, rootDisk, accel] = (files as PromiseFulfilledResult<[string, string, string | undefined, Accel]>).value
    for (const [what, file] of Object.entries({kernel, initrd, 'root disk': rootDisk})) {
      if (file !== undefined && !existsSync(file)) throw new AegisError(`the ${what} ${file} does not exist`, {hint: 'assemble the guest again or check the path'})
    }
    const plumbing: GuestPlumbing = {
      root: rootDisk === undefined ? {kind: 'virtiofs', tag: 'root'} : {kind: 'block', device: '/dev/vda'},
      mounts: options.workspaceDir ? [{tag: 'workspace', guestPath: '/workspace'}] : [],
      writableLayerDisk: layerDisk === undefined ? undefined : {serial: WRITABLE_LAYER_SERIAL},
      network: nic.guest,
    }
    const specBytes = given.spec.then((spec) => encodeRunSpec(spec, plumbing))
    specBytes.catch(() => undefined) // awaited below, once QEMU runs

    const controlPath = path.join(runDir, 'ctl.sock')
    const server = net.createServer()
    control = server
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(controlPath, resolve))

    const args = [
      '-M', 'microvm,acpi=on,memory-backend=mem', ...accelArgs(accel, memoryMib),
      '-m', `${memoryMib}M`, '-smp', String(options.vcpus ?? 1),
      '-object', `memory-backend-memfd,id=mem,size=${memoryMib}M,share=on`,
      '-global', 'virtio-mmio.force-legacy=false',
      '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
      '-chardev', 'stdio,id=console,signal=off', '-serial', 'chardev:console',
      '-kernel', kernel, '-initrd', initrd, '-append', await guestKernelCommandLine(options.extraKernelArgs ?? []),
      '-device', 'virtio-rng-device',
      '-device', 'virtio-serial-device',
      '-chardev', `socket,id=ctl,path=${controlPath}`, '-device', `virtserialport,chardev=ctl,name=${CONTROL_PORT_NAME}`,
      ...shares.flatMap((share, i) => ['-chardev', `socket,id=fs${i},path=${sockets[i]}`, '-device', `vhost-user-fs-device,chardev=fs${i},tag=${share.tag}`]),
      ...(rootDisk === undefined ? [] : [
        '-drive', `file=${rootDisk},if=none,id=rootdisk,format=raw,readonly=on`, '-device', 'virtio-blk-device,drive=rootdisk',
      ]),
      // After the root disk, which stays /dev/vda; the harness finds this one by its serial anyway.
      ...(layerDisk === undefined ? [] : [
        '-drive', `file=${layerDisk},if=none,id=rwdisk,format=raw,discard=unmap`, '-device', `virtio-blk-device,drive=rwdisk,serial=${WRITABLE_LAYER_SERIAL}`,
      ]),
      ...nic.qemuArgs,
    ]
    const startedAt = Date.now()
    const qemu = processes.spawn(qemuBinary, args, {stdio: ['pipe', 'pipe', 'pipe']})
    options.onStarted?.()

    let consoleText = ''
    let qemuErrors = ''
    const timings: VmResult['timings'] = {exitedMs: 0}
    let bootTimedOut = false
    const bootTimer = setTimeout(() => {
      bootTimedOut = true
      processes.killNow('SIGKILL')
    }, options.bootTimeoutMs ?? 60_000)
    const fromControl = new ReportReader((key) => {
      if (key === 'AEGIS_READY') {
        timings.readyMs = Date.now() - startedAt
        clearTimeout(bootTimer)
        // QEMU opened its disks before the guest ran: the name can go, the space stays QEMU's until it exits.
        if (layerDisk !== undefined) rm(layerDisk, {force: true}).catch(() => undefined)
      }
      if (key === 'AEGIS_STARTED') timings.startedMs = Date.now() - startedAt
    })
    const fromConsole = new ReportReader()
    qemu.stdout?.setEncoding('utf8').on('data', (text: string) => {
      consoleText = (consoleText + text).slice(-CONSOLE_KEEP)
      fromConsole.push(text)
      options.onConsole?.(text)
    })
    qemu.stderr?.setEncoding('utf8').on('data', (text: string) => {
      qemuErrors = (qemuErrors + text).slice(-8192)
    })

    let controlSocket: net.Socket | undefined
    server.on('connection', (socket) => {
      controlSocket = socket
      socket.on('error', () => {})
      socket.setEncoding('utf8').on('data', (text: string) => fromControl.push(text))
      specBytes.then((bytes) => socket.write(bytes), () => undefined)
    })

    let killedByHost = false
    const result = new Promise<VmResult>((resolve, reject) => {
      qemu.once('error', (error) => reject(new AegisError(`cannot start ${QEMU}: ${error.message}`, {hint: `install it: apt-get install ${QEMU_PACKAGE}; run \`aegis-kit doctor\` to check the rest`})))
      qemu.once('exit', (code, signal) => {
        clearTimeout(bootTimer)
        timings.exitedMs = Date.now() - startedAt
        if (bootTimedOut) {
          reject(new AegisError(`the VM did not boot within ${(options.bootTimeoutMs ?? 60_000) / 1000} s`, {
            hint: 'the console output shows where the kernel stopped; a host under heavy load slows TCG boots, so retry or raise the timeout',
          }))
          return
        }
        // Trust the control channel first: the console also carries the workload's own output.
        const reports = fromControl.reports.has('AEGIS_EXIT') ? fromControl.reports : fromConsole.reports
        const exit = reports.get('AEGIS_EXIT')
        if (exit !== undefined || killedByHost) {
          resolve({
            exitCode: exit === undefined ? 137 : Number(exit),
            oomKilled: reports.has('AEGIS_OOM'),
            harnessError: reports.get('AEGIS_ERROR'),
            killedByHost,
            timings,
            console: consoleText,
          })
          return
        }
        const how = signal ? `was killed by ${signal}` : `exited with code ${code}`
        const tail = (qemuErrors.trim() || consoleText.trim()).split('\n').slice(-5).join('\n')
        reject(new AegisError(`the VM stopped before the workload finished: QEMU ${how}\n${tail}`, {
          hint: 'check the console output above; a kernel panic or a missing share shows there',
        }))
      })
    }).finally(cleanup)

    const stop = async (graceMs = 10_000): Promise<VmResult> => {
      controlSocket?.write('signal TERM\n')
      const timer = setTimeout(() => {
        killedByHost = true
        processes.killNow('SIGKILL')
      }, graceMs)
      try {
        return await result
      } finally {
        clearTimeout(timer)
      }
    }
    // A spec the caller could not finish stops the VM before any workload runs.
    result.catch(() => undefined) // the caller gets `result`; until then an early exit is not "unhandled"
    try {
      await Promise.all([specBytes, nic.ready])
    } catch (error) {
      processes.killNow('SIGKILL')
      await result.catch(() => undefined)
      throw error
    }
    return {result, stop}
  } catch (error) {
    await cleanup()
    throw error
  }
}

/** Boots a VM, runs `options.spec` to completion and returns its outcome. */
export async function runVm(options: VmOptions): Promise<VmResult> {
  const vm = await startVm(options)
  return vm.result
}
