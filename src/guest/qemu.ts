/**
 * A bare microVM boot with QEMU: the assembled kernel and initramfs, the image root and the
 * workspace shared by virtiofsd, the run spec handed over a virtio-serial control port that then
 * carries the control channel (control-channel.ts: reports, heartbeats, exec sessions, the
 * tunnel), the console streamed back. KVM or TCG, as the caller chose (see accel.ts).
 */

import type {ChildProcess} from 'node:child_process'
import {existsSync} from 'node:fs'
import {mkdir, mkdtemp, rm} from 'node:fs/promises'
import net from 'node:net'
import type {Duplex} from 'node:stream'
import os from 'node:os'
import path from 'node:path'

import {AegisError} from '../errors.js'
import {findOnPath} from '../exec.js'
import {awaitedLater, settleAll, UndoStack} from '../undo-stack.js'
import {supportedHostArchitecture, toQemuSystem, toQemuSystemPackage} from '../oci/platform.js'
import {accelArgs, type Accel} from './accel.js'
import {guestKernelCommandLine} from './kernel-command-line.js'
import {ChildProcessGroup} from './child-processes.js'
import {ControlChannel, type ExecRequest, type ExecSession, type HeartbeatSample} from './control-channel.js'
import {noNetwork, type AttachedNetwork, type NetworkBackend} from './network.js'
import {QmpClient, type VmStatus} from './qmp.js'
import {CONTROL_PORT_NAME, encodeRunSpec, type GuestPlumbing, type RunSpec} from './spec.js'
import {startVirtiofsd} from './virtiofsd.js'
import {
  makeWritableLayerDisk,
  removeAbandonedLayerDisks,
  WRITABLE_LAYER_SERIAL,
  writableLayerDiskPath,
} from './writable-layer.js'

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
  /** Asks the workload to stop (SIGTERM), then kills the VM after `graceMs`. A paused VM is resumed first. */
  stop(graceMs?: number): Promise<VmResult>
  /** Stops the vCPUs (QMP `stop`): the VM keeps its memory and costs no host CPU until resume(). */
  pause(): Promise<void>
  resume(): Promise<void>
  /** What QEMU says the VM is doing (QMP `query-status`). */
  status(): Promise<VmStatus>
  /**
   * Runs a command in the workload's world (its root, environment with secrets, user and workdir
   * unless `request` says otherwise). May be called before the harness is up: it starts then.
   */
  exec(request: ExecRequest): ExecSession
  /** Each activity sample the harness sends (every RunSpec.heartbeatMs, and after resume()); returns the unsubscribe. */
  onHeartbeat(listener: (sample: HeartbeatSample) => void): () => void
  /** Each connection to 127.0.0.1:7777 in the guest, as a Duplex (the last handler set gets it; none: refused). */
  onTunnel(handler: (stream: Duplex, token: string) => void): void
  /** The capability token the harness attaches to the guest's tunnel connections. */
  setToken(token: string): void
}

const CONSOLE_KEEP = 64 * 1024
export const VIRTIOFSD = '/usr/lib/qemu/virtiofsd'
/**
 * The host's own system emulator: guests run the host's architecture (KVM needs that). An
 * unsupported host gets amd64's names so this module still loads there, for checks to report.
 */
const QEMU_ARCH = supportedHostArchitecture() ?? 'amd64'
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
    throw new AegisError(
      `run needs a Linux host (this is ${process.platform}): the VM's root and workspace are shared by QEMU's virtiofsd, which is Linux-only`,
      {hint: 'build, validate and push work here; run kits on a Linux machine or in a Linux VM'},
    )
  }
  const qemu = findOnPath(QEMU)
  if (!qemu)
    throw new AegisError(`${QEMU} is not installed`, {
      hint: `install it: apt-get install ${QEMU_PACKAGE}; run \`aegis-kit doctor\` to check the rest`,
    })
  if (!existsSync(VIRTIOFSD))
    throw new AegisError(`${VIRTIOFSD} is missing`, {
      hint: `install it: apt-get install ${QEMU_PACKAGE} (Debian 12 ships virtiofsd with QEMU); run \`aegis-kit doctor\` to check the rest`,
    })
  return qemu
}

/**
 * Boots a VM running `options.spec`, returning once QEMU runs and the spec is known; `result`
 * gives the outcome. In order: the VM's private directory, the control socket, the host side
 * (virtiofsd, the network, the writable layer's disk), QEMU itself, and the spec handed over. Each
 * step pushes its undo; a failure unwinds them all, and QEMU's exit unwinds them after a run.
 */
export async function startVm(options: VmOptions): Promise<RunningVm> {
  // Taken at once: a promise the caller gave must not reject unobserved while the helpers start.
  const files = awaitedLater(Promise.all([options.kernel, options.initrd, options.rootDisk, options.accel ?? 'tcg']))
  const spec = awaitedLater(Promise.resolve(options.spec))
  const qemuBinary = checkVmTools()
  if ((options.rootDir === undefined) === (options.rootDisk === undefined))
    throw new Error('startVm needs exactly one of rootDir and rootDisk')
  const undo = new UndoStack()
  try {
    const runDir = await makeRunDir(undo)
    const controlPath = path.join(runDir, 'ctl.sock')
    const control = await listenForControl(controlPath, undo)
    const processes = new ChildProcessGroup()
    undo.defer(() => processes.stopAll())
    const host = await startHostSide(options, files, {runDir, processes}, undo)
    const specBytes = awaitedLater(spec.then((value) => encodeRunSpec(value, host.plumbing)))
    const qmpPath = path.join(runDir, 'qmp.sock')
    const args = await qemuArguments(options, host, {control: controlPath, qmp: qmpPath})
    const vm = launchQemu(qemuBinary, args, {
      options,
      qmp: new QmpClient(qmpPath),
      processes,
      control,
      specBytes,
      layerDisk: host.layerDisk,
      cleanup: () => undo.unwind(),
    })
    await handOverSpec(vm, [specBytes, host.nic.ready], processes)
    return vm
  } catch (error) {
    return undo.failWith(error)
  }
}

/** A directory of this VM's own for its sockets and logs, removed last. */
async function makeRunDir(undo: UndoStack): Promise<string> {
  const runDir = await mkdtemp(path.join(os.tmpdir(), 'aegis-vm-'))
  undo.defer(() => rm(runDir, {recursive: true, force: true}))
  // The deepest of the VM's sockets (workspace.fs.sock is as long); a unix socket path holds 107 bytes.
  if (Buffer.byteLength(path.join(runDir, 'gvproxy', 'qemu.sock')) > 107) {
    throw new AegisError(
      `the temporary directory ${os.tmpdir()} is too deep for the VM's sockets (unix socket paths hold at most 107 bytes)`,
      {hint: 'set TMPDIR to a shorter path, e.g. TMPDIR=/tmp'},
    )
  }
  return runDir
}

interface HostSide {
  shares: Array<{tag: string; socket: string}>
  nic: AttachedNetwork
  kernel: string
  initrd: string
  rootDisk: string | undefined
  accel: Accel
  layerDisk: string | undefined
  plumbing: GuestPlumbing
}

/**
 * Starts what QEMU connects to (a virtiofsd per shared directory, the network backend) and makes
 * the writable layer's disk, while the caller may still be working out the files.
 */
async function startHostSide(
  options: VmOptions,
  files: Promise<[string, string, string | undefined, Accel]>,
  context: {runDir: string; processes: ChildProcessGroup},
  undo: UndoStack,
): Promise<HostSide> {
  const shares: {tag: string; dir: string; cache: 'always' | 'auto'}[] = []
  if (options.rootDir !== undefined) shares.push({tag: 'root', dir: options.rootDir, cache: 'always'})
  if (options.workspaceDir) shares.push({tag: 'workspace', dir: options.workspaceDir, cache: 'auto'})
  const layer = options.writableLayer
  const layerDisk = layer && writableLayerDiskPath(layer.dir, path.basename(context.runDir))
  if (layerDisk !== undefined) undo.defer(() => rm(layerDisk, {force: true}))
  // All settle before any error is thrown, so the undo stack holds every helper that started.
  // The caller's failure first: it is the cause when helpers fail on being abandoned.
  const [[kernel, initrd, rootDisk, accel], sockets, nic] = await settleAll([
    files,
    Promise.all(
      shares.map((share) =>
        startVirtiofsd(context.processes, VIRTIOFSD, {
          ...share,
          socketPath: path.join(context.runDir, `${share.tag}.fs.sock`),
        }),
      ),
    ),
    (options.network ?? noNetwork()).attach(context).then((attached) => {
      undo.defer(() => attached.detach())
      return attached
    }),
    layer && layerDisk !== undefined
      ? (async () => {
          await mkdir(layer.dir, {recursive: true})
          await removeAbandonedLayerDisks(layer.dir)
          await makeWritableLayerDisk(layerDisk, layer.bytes)
        })()
      : undefined,
  ])
  for (const [what, file] of Object.entries({kernel, initrd, 'root disk': rootDisk})) {
    if (file !== undefined && !existsSync(file))
      throw new AegisError(`the ${what} ${file} does not exist`, {hint: 'assemble the guest again or check the path'})
  }
  const plumbing: GuestPlumbing = {
    root: rootDisk === undefined ? {kind: 'virtiofs', tag: 'root'} : {kind: 'block', device: '/dev/vda'},
    mounts: options.workspaceDir ? [{tag: 'workspace', guestPath: '/workspace'}] : [],
    writableLayerDisk: layerDisk === undefined ? undefined : {serial: WRITABLE_LAYER_SERIAL},
    network: nic.guest,
  }
  return {
    shares: shares.map((share, i) => ({tag: share.tag, socket: sockets[i]!})),
    nic,
    kernel,
    initrd,
    rootDisk,
    accel,
    layerDisk,
    plumbing,
  }
}

/** The unix socket behind the guest's virtio-serial control port. */
async function listenForControl(controlPath: string, undo: UndoStack): Promise<net.Server> {
  const server = net.createServer()
  undo.defer(() => server.close())
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(controlPath, resolve))
  return server
}

/** QEMU's command line: a microvm with the host side's sockets, disks and NIC. */
async function qemuArguments(
  options: VmOptions,
  host: HostSide,
  sockets: {control: string; qmp: string},
): Promise<string[]> {
  return [
    ...machineArguments(options, host.accel, sockets.qmp),
    ...(await kernelArguments(options, host)),
    '-device',
    'virtio-rng-device',
    ...controlPortArguments(sockets.control),
    ...shareArguments(host.shares),
    ...diskArguments(host),
    ...host.nic.qemuArgs,
  ]
}

/** The machine: its monitor, accelerator, memory and vCPUs, and the serial console on stdio. */
function machineArguments(options: VmOptions, accel: Accel, qmpSocket: string): string[] {
  const memoryMib = options.memoryMib ?? 512
  return [
    // The machine monitor: pause and resume (qmp.ts). wait=off: QEMU boots without a client.
    '-qmp',
    `unix:${qmpSocket},server=on,wait=off`,
    '-M',
    'microvm,acpi=on,memory-backend=mem',
    ...accelArgs(accel, memoryMib),
    '-m',
    `${memoryMib}M`,
    '-smp',
    String(options.vcpus ?? 1),
    '-object',
    `memory-backend-memfd,id=mem,size=${memoryMib}M,share=on`,
    '-global',
    'virtio-mmio.force-legacy=false',
    '-nodefaults',
    '-no-user-config',
    '-display',
    'none',
    '-no-reboot',
    '-chardev',
    'stdio,id=console,signal=off',
    '-serial',
    'chardev:console',
  ]
}

/** The kernel, the initramfs and the kernel's command line. */
async function kernelArguments(options: VmOptions, host: HostSide): Promise<string[]> {
  return [
    '-kernel',
    host.kernel,
    '-initrd',
    host.initrd,
    '-append',
    await guestKernelCommandLine(options.extraKernelArgs ?? []),
  ]
}

/** The virtio-serial port the harness asks for its spec on, then speaks the control channel on. */
function controlPortArguments(controlSocket: string): string[] {
  return [
    '-device',
    'virtio-serial-device',
    '-chardev',
    `socket,id=ctl,path=${controlSocket}`,
    '-device',
    `virtserialport,chardev=ctl,name=${CONTROL_PORT_NAME}`,
  ]
}

/** A vhost-user-fs device per virtiofsd share, tagged as the guest mounts it. */
function shareArguments(shares: HostSide['shares']): string[] {
  return shares.flatMap((share, i) => [
    '-chardev',
    `socket,id=fs${i},path=${share.socket}`,
    '-device',
    `vhost-user-fs-device,chardev=fs${i},tag=${share.tag}`,
  ])
}

/** The read-only root disk and the writable layer's disk, each when there is one. */
function diskArguments(host: HostSide): string[] {
  return [
    ...(host.rootDisk === undefined
      ? []
      : [
          '-drive',
          `file=${host.rootDisk},if=none,id=rootdisk,format=raw,readonly=on`,
          '-device',
          'virtio-blk-device,drive=rootdisk',
        ]),
    // After the root disk, which stays /dev/vda; the harness finds this one by its serial anyway.
    ...(host.layerDisk === undefined
      ? []
      : [
          '-drive',
          `file=${host.layerDisk},if=none,id=rwdisk,format=raw,discard=unmap`,
          '-device',
          `virtio-blk-device,drive=rwdisk,serial=${WRITABLE_LAYER_SERIAL}`,
        ]),
  ]
}

interface QemuContext {
  options: VmOptions
  processes: ChildProcessGroup
  control: net.Server
  qmp: QmpClient
  specBytes: Promise<Buffer>
  layerDisk: string | undefined
  /** Gives back everything the VM's start acquired; runs once QEMU has exited. */
  cleanup: () => Promise<void>
}

/** Spawns QEMU and watches it: the boot deadline, the console, the control port, its exit. */
function launchQemu(binary: string, args: string[], context: QemuContext): RunningVm {
  const {options, processes} = context
  const startedAt = Date.now()
  const qemu = processes.spawn(binary, args, {stdio: ['pipe', 'pipe', 'pipe']})
  options.onStarted?.()

  const timings: VmResult['timings'] = {exitedMs: 0}
  const deadline = new BootDeadline(options.bootTimeoutMs ?? 60_000, processes)
  const fromControl = bootMilestones({startedAt, timings, deadline, layerDisk: context.layerDisk})
  const output = captureOutput(qemu, options.onConsole)
  const channel = new ControlChannel({onReport: (line) => fromControl.push(`${line}\n`)})
  serveControl(context.control, channel, context.specBytes)

  const host: HostControlState = {killedByHost: false, paused: false}
  const result = awaitedLater(
    qemuEnding(qemu, {startedAt, timings, deadline, channel, fromControl, output, host}).finally(context.cleanup),
  )
  return vmControls(result, channel, context.qmp, stopper(result, channel, processes, host), host)
}

/** What the host did to the VM, as the outcome and the controls need to know it. */
interface HostControlState {
  /** Set by stop() when the grace period ran out: the VM's end is then no failure. */
  killedByHost: boolean
  paused: boolean
}

/** Kills QEMU unless the harness asks for its spec within `ms`. */
class BootDeadline {
  /** The deadline passed and QEMU was killed for it. */
  timedOut = false
  private readonly timer: NodeJS.Timeout

  constructor(
    readonly ms: number,
    processes: ChildProcessGroup,
  ) {
    this.timer = setTimeout(() => {
      this.timedOut = true
      processes.killNow('SIGKILL')
    }, ms)
  }

  clear(): void {
    clearTimeout(this.timer)
  }
}

/** The harness's reports over the control port: the boot's milestones, timed from QEMU's start. */
function bootMilestones(boot: {
  startedAt: number
  timings: VmResult['timings']
  deadline: BootDeadline
  layerDisk: string | undefined
}): ReportReader {
  const {startedAt, timings} = boot
  return new ReportReader((key) => {
    if (key === 'AEGIS_READY') {
      timings.readyMs = Date.now() - startedAt
      boot.deadline.clear()
      // QEMU opened its disks before the guest ran: the name can go, the space stays QEMU's until
      // it exits. A failure here is not worth stopping the run for: the cleanup removes it again.
      if (boot.layerDisk !== undefined) rm(boot.layerDisk, {force: true}).catch(() => undefined)
    }
    if (key === 'AEGIS_STARTED') timings.startedMs = Date.now() - startedAt
  })
}

/** How QEMU ends: it did not start, it missed the boot deadline, or vmOutcome() says. */
function qemuEnding(
  qemu: ChildProcess,
  watched: {
    startedAt: number
    timings: VmResult['timings']
    deadline: BootDeadline
    channel: ControlChannel
    fromControl: ReportReader
    output: ReturnType<typeof captureOutput>
    host: HostControlState
  },
): Promise<VmResult> {
  const {timings, deadline, fromControl, output, host} = watched
  return new Promise<VmResult>((resolve, reject) => {
    qemu.once('error', (error) =>
      reject(
        new AegisError(`cannot start ${QEMU}: ${error.message}`, {
          hint: `install it: apt-get install ${QEMU_PACKAGE}; run \`aegis-kit doctor\` to check the rest`,
        }),
      ),
    )
    qemu.once('exit', (code, signal) => {
      deadline.clear()
      watched.channel.close()
      timings.exitedMs = Date.now() - watched.startedAt
      if (deadline.timedOut) {
        reject(
          new AegisError(`the VM did not boot within ${deadline.ms / 1000} s`, {
            hint: 'the console output shows where the kernel stopped; a host under heavy load slows TCG boots, so retry or raise the timeout',
          }),
        )
        return
      }
      const outcome = vmOutcome({code, signal, fromControl, output, killedByHost: host.killedByHost, timings})
      if (outcome instanceof Error) reject(outcome)
      else resolve(outcome)
    })
  })
}

/** The RunningVm a caller holds: QMP for pause and resume, the control channel for the rest. */
function vmControls(
  result: Promise<VmResult>,
  channel: ControlChannel,
  qmp: QmpClient,
  stop: RunningVm['stop'],
  host: HostControlState,
): RunningVm {
  return {
    result,
    stop: async (graceMs) => {
      // A paused guest cannot read the stop request: its vCPUs run again first.
      if (host.paused) await qmp.resume().catch(() => undefined)
      return stop(graceMs)
    },
    pause: async () => {
      await qmp.pause()
      host.paused = true
    },
    resume: async () => {
      await qmp.resume()
      host.paused = false
      // The guest cannot tell it was paused: a fresh sample rather than one up to heartbeatMs old.
      channel.requestHeartbeat()
    },
    status: () => qmp.status(),
    exec: (request) => channel.exec(request),
    onHeartbeat: (listener) => channel.onHeartbeat(listener),
    onTunnel: (handler) => channel.onTunnel(handler),
    setToken: (token) => channel.setToken(token),
  }
}

/** RunningVm.stop: SIGTERM to the workload over the control port, the VM killed after `graceMs`. */
function stopper(
  result: Promise<VmResult>,
  channel: ControlChannel,
  processes: ChildProcessGroup,
  host: {killedByHost: boolean},
): RunningVm['stop'] {
  return async (graceMs = 10_000) => {
    channel.signalWorkload('TERM')
    const timer = setTimeout(() => {
      host.killedByHost = true
      processes.killNow('SIGKILL')
    }, graceMs)
    try {
      return await result
    } finally {
      clearTimeout(timer)
    }
  }
}

/** QEMU's console (kept, its last 64 KiB, and passed on) and its own error output. */
function captureOutput(
  qemu: ChildProcess,
  onConsole: ((text: string) => void) | undefined,
): {console: () => string; errors: () => string; reports: ReportReader} {
  let consoleText = ''
  let qemuErrors = ''
  const reports = new ReportReader()
  qemu.stdout?.setEncoding('utf8').on('data', (text: string) => {
    consoleText = (consoleText + text).slice(-CONSOLE_KEEP)
    reports.push(text)
    onConsole?.(text)
  })
  qemu.stderr?.setEncoding('utf8').on('data', (text: string) => {
    qemuErrors = (qemuErrors + text).slice(-8192)
  })
  return {console: () => consoleText, errors: () => qemuErrors, reports}
}

/** Answers the harness's connection with the spec, then speaks the control channel on it. */
function serveControl(server: net.Server, channel: ControlChannel, specBytes: Promise<Buffer>): void {
  server.on('connection', (socket) => channel.attach(socket, specBytes))
}

/** How the VM ended, from the harness's reports, or why it ended without them. */
function vmOutcome(ended: {
  code: number | null
  signal: NodeJS.Signals | null
  fromControl: ReportReader
  output: ReturnType<typeof captureOutput>
  killedByHost: boolean
  timings: VmResult['timings']
}): VmResult | AegisError {
  const {output, killedByHost} = ended
  // Trust the control channel first: the console also carries the workload's own output.
  const reports = ended.fromControl.reports.has('AEGIS_EXIT') ? ended.fromControl.reports : output.reports.reports
  const exit = reports.get('AEGIS_EXIT')
  if (exit !== undefined || killedByHost) {
    return {
      exitCode: exit === undefined ? 137 : Number(exit),
      oomKilled: reports.has('AEGIS_OOM'),
      harnessError: reports.get('AEGIS_ERROR'),
      killedByHost,
      timings: ended.timings,
      console: output.console(),
    }
  }
  const how = ended.signal ? `was killed by ${ended.signal}` : `exited with code ${ended.code}`
  const tail = (output.errors().trim() || output.console().trim()).split('\n').slice(-5).join('\n')
  return new AegisError(`the VM stopped before the workload finished: QEMU ${how}\n${tail}`, {
    hint: 'check the console output above; a kernel panic or a missing share shows there',
  })
}

/** Waits for the spec and the network; when either fails, the VM stops before any workload runs. */
async function handOverSpec(
  vm: RunningVm,
  waits: Array<Promise<unknown> | undefined>,
  processes: ChildProcessGroup,
): Promise<void> {
  try {
    await Promise.all(waits)
  } catch (error) {
    processes.killNow('SIGKILL')
    // Only waits for QEMU to be gone (and cleaned up): how it ended is moot beside `error`.
    await vm.result.catch(() => undefined)
    throw error
  }
}

/** Boots a VM, runs `options.spec` to completion and returns its outcome. */
export async function runVm(options: VmOptions): Promise<VmResult> {
  const vm = await startVm(options)
  return vm.result
}
