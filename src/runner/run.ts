/**
 * `aegis-kit run`: a built kit as a running, isolated instance. Builds when the image is missing
 * or stale, validates the config, renders the environment, boots the microVM with the image's
 * root read-only under an overlay (its writable layer a disk of resources.disk, or a tmpfs),
 * waits for the healthcheck and hands back the URLs.
 */
import {chown, mkdir, stat, writeFile} from 'node:fs/promises'
import path from 'node:path'
import type {BuildEvent} from '../builder/build.js'
import {AegisError, messageOf} from '../errors.js'
import {checkAccelChoice, checkInitrdFile, checkKernelFile, checkVmTools, checkWritableLayerSize, chooseAccel, type Accel, type AccelChoice, loadGuest, resolveGuest, resolveImageUser, startVm, type ImageUser, type NetworkBackend, type RunSpec, type RunningVm, type StoredGuest, type VmResult} from '../guest/index.js'
import {checkConfigOrThrow} from '../hooks/check-config.js'
import {buildAppContext, renderEnv} from '../hooks/operations.js'
import {hasHook} from '../hooks/run-hook.js'
import type {RenderEnvResult, ResolvedFile} from '../hooks/contract.js'
import type {Kit} from '../kit/kit.js'
import {maskSecrets, resolveSecrets, type SecretRequest} from '../kit/secrets.js'
import {parseDuration, parseSize} from '../kit/units.js'
import {hostArchitecture} from '../oci/platform.js'
import type {LocalStore} from '../store/index.js'
import {waitHealthy} from './health.js'
import {processStartTime} from '../process-identity.js'
import type {InstanceRegistry} from './instances.js'
import {checkMemory, checkWorkspace, profilePorts, type ExposeMapping} from './options.js'
import {prepareRootDisk, prepareRootfs} from './rootfs.js'
import {workspaceSecretStore} from './workspace-secrets.js'

export interface RunOptions {
  kit: Kit
  store: LocalStore
  /** aegis-kit's data directory: build cache, unpacked roots, guest kernel, default workspaces. */
  dataDir: string
  name?: string
  profile?: string
  /** --expose: replaces the profile's `exposes` when given. */
  expose: ExposeMapping[]
  secrets: SecretRequest[]
  env: Record<string, string>
  workspace?: string
  memoryMib?: number
  cpus?: number
  /** Boot this kernel instead of the guest's (checked before anything starts). */
  kernel?: string
  /** Boot this initramfs instead of the guest's. */
  initrd?: string
  /** A guest artifact in the store (e.g. one pulled from a registry) instead of this host's own. */
  guest?: string
  /** QEMU's accelerator: auto (KVM when a probe boot works, else TCG with a warning), kvm or tcg. */
  accel?: AccelChoice
  command?: string[]
  config?: Record<string, unknown>
  /** Where the instance is recorded for `ps`, `stop` and `logs`; the name is claimed there. */
  registry?: InstanceRegistry
  /** This process is a `run --detach` supervisor: the record stays after the instance ends. */
  detached?: boolean
  network: (forwards: ExposeMapping[]) => NetworkBackend
  onBuild?: (event: BuildEvent) => void
  onStatus: (message: string) => void
  /** The workload's console output, one line at a time (no newline), secrets already masked. */
  onOutput: (line: string) => void
  signal: AbortSignal
}

export interface RunningInstance {
  name: string
  workspace: string
  /** URLs of the exposed UI ports, token included where the kit's render_env names one. */
  urls: Array<{label: string; url: string}>
  healthyMs?: number
  vm: RunningVm
  result: Promise<VmResult>
  memoryMib: number
  /** The accelerator QEMU really runs the guest with (auto resolves to one of these). */
  accel: Accel
}

const DEFAULT_MEMORY_MIB = 512

export async function startInstance(options: RunOptions): Promise<RunningInstance> {
  const {kit, store} = options
  const manifest = kit.manifest
  const name = options.name ?? manifest.name
  const architecture = hostArchitecture()
  // The build's modules (execa, the registry client, layer writers: ~150 ms) load while the
  // checks and hooks below run, instead of before the CLI can do anything.
  const building = import('../builder/build.js')
  building.catch(() => undefined) // awaited below; a failure must not count as unhandled meanwhile

  const profile = options.profile === undefined ? undefined : manifest.profiles?.[options.profile]
  const expose = options.expose.length > 0 ? options.expose : profilePorts(profile)

  // Cheap checks first: a wrong flag or a missing tool should not cost a build.
  const qemu = checkVmTools()
  await checkAccelChoice(options.accel ?? 'auto')
  const network = options.network(expose)
  await network.check?.()
  if (options.kernel !== undefined) await checkKernelFile(options.kernel, '--kernel')
  if (options.initrd !== undefined) await checkInitrdFile(options.initrd, '--initrd')
  const chosenGuest = options.guest === undefined ? undefined : await loadGuest(store, options.guest)
  const workspace = path.resolve(options.workspace ?? path.join(options.dataDir, 'workspaces', name))
  checkWorkspace(workspace)
  const app = buildAppContext(kit, {profile: options.profile, instance: name, config: options.config, published: expose})
  const memoryMib = options.memoryMib ?? app.resources.memory_mb ?? DEFAULT_MEMORY_MIB
  checkMemory(memoryMib, `the memory of ${name}`)
  app.resources.memory_mb = memoryMib
  app.resources.vcpus = options.cpus ?? app.resources.vcpus ?? 1
  // validate has checked that it parses; undefined keeps the tmpfs layer (see guest/writable-layer.ts).
  const writableLayerBytes = manifest.resources?.disk === undefined ? undefined : parseSize(manifest.resources.disk)
  if (writableLayerBytes !== undefined) await checkWritableLayerSize(writableLayerBytes, options.dataDir, `resources.disk (${manifest.resources?.disk})`)
  const secrets = resolveSecrets(kit, options.secrets, {
    profile: options.profile,
    workspace: workspaceSecretStore(options.dataDir, workspace, manifest.name),
    onWarning: (message) => options.onStatus(`warning: ${message}`),
  })
  const secretValues = Object.values(secrets)

  // The name is ours from here on: a second instance of it would share the workspace.
  const registry = options.registry
  await registry?.claim({
    name, kit: manifest.name, pid: process.pid, pidStart: processStartTime(process.pid), startedAt: new Date().toISOString(),
    status: 'starting', detached: options.detached ?? false, ports: expose, workspace, memoryMib, vcpus: app.resources.vcpus, urls: [],
  })
  try {
    return await bootInstance()
  } catch (error) {
    await release(registry, name, options.detached, {message: `${name} did not start: ${maskSecrets(messageOf(error), secretValues)}`})
    throw error
  }

  async function bootInstance(): Promise<RunningInstance> {

    // The VM boots as soon as the image (a cached build, checked here) and the guest's files are
    // known. The hooks, each a Node process of its own, start once QEMU is spawned, while the
    // guest kernel boots (1 s and more under TCG), so they do not compete with the boot path for
    // the CPU; the workload waits for them, and a failed check stops the VM before it starts
    // anything. Work that costs (a layer to build, the guest to assemble) waits for the config
    // check: a bad config costs no build. See docs/architecture.md, "What run does, in order".
    let hooks: {rendering: Promise<RenderEnvResult>; configChecked: Promise<void>} | undefined
    const startHooks = () => {
      if (hooks) return hooks
      const rendering: Promise<RenderEnvResult> = hasHook(kit, 'render_env') ? renderEnv(kit, app, secrets) : Promise.resolve({env: {}, files: [], warnings: [], urls: []})
      rendering.catch(() => undefined) // awaited below; without this an early rejection would be "unhandled"
      const configChecked = checkConfigOrThrow(kit, app)
      configChecked.catch(() => undefined) // awaited below
      return (hooks = {rendering, configChecked})
    }
    const configGate = () => startHooks().configChecked
    const cacheDir = path.join(options.dataDir, 'cache')
    options.onStatus(`building ${manifest.name} (cached layers are reused)`)
    const guestFiles = bootFiles(options, chosenGuest, cacheDir, configGate)
    const files = settleAll([
      (async () => {
        const {buildKit} = await building
        const built = await buildKit(kit, {store, cacheDir, onEvent: options.onBuild, signal: options.signal, beforeWork: configGate})
        const rootfs = await prepareRootfs(store, built.reference, cacheDir, architecture, options.onStatus)
        return {built, rootfs, rootDisk: await prepareRootDisk(rootfs, options.onStatus)}
      })(),
      guestFiles,
    ])
    files.catch(() => undefined) // awaited below
    // Probed (once per host boot) while the build is checked and the root prepared.
    const accel = guestFiles.then(({kernel}) => chooseAccel({choice: options.accel ?? 'auto', qemu, kernel, cacheDir, onStatus: options.onStatus}))
    accel.catch(() => undefined) // startVm awaits it
    // Resolved when QEMU is spawned, or when startVm gave up before that.
    let launched!: () => void
    const vmLaunched = new Promise<void>((resolve) => {
      launched = resolve
    })
    const prepared = (async () => {
      // The hooks run even when the files failed: the error a user fixes first may be the config.
      const booting = await files.then((value) => ({value}), (error: unknown) => ({error}))
      if ('value' in booting) await vmLaunched
      const {rendering, configChecked} = startHooks()
      const [, rendered] = await settleAll([configChecked, rendering])
      if (!('value' in booting)) throw booting.error
      const [{built, rootfs, rootDisk}, guest] = booting.value
      return {built, rootfs, rootDisk, guest, rendered}
    })()
    prepared.catch(() => undefined) // awaited below

    const spec = prepared.then(async ({built, rootfs, rendered}): Promise<RunSpec> => {
      for (const warning of rendered.warnings) options.onStatus(`warning: ${maskSecrets(warning, secretValues)}`)
      const imageConfig = rootfs.config.config ?? {}
      const user = await resolveImageUser(rootfs.dir, imageConfig.User)
      await prepareWorkspace(workspace, rendered.files, user, manifest.name)
      const profileCommand = profile?.command === undefined ? undefined : typeof profile.command === 'string' ? ['/bin/sh', '-c', profile.command] : profile.command
      const command = options.command ?? profileCommand ?? [...(imageConfig.Entrypoint ?? []), ...(imageConfig.Cmd ?? [])]
      if (command.length === 0) throw new AegisError(`the ${built.reference} image has no command`, {hint: 'give one after --: aegis-kit run KIT -- COMMAND...'})

      // Secret values travel as secrets (environment + /run/secrets/NAME), never as plain env.
      const env: Record<string, string> = {}
      for (const entry of imageConfig.Env ?? []) {
        const at = entry.indexOf('=')
        if (at > 0) env[entry.slice(0, at)] = entry.slice(at + 1)
      }
      const guestSecrets: Record<string, string> = {...secrets}
      // The profile's env is the manifest's word for this instance, so render_env cannot undo it; --env can.
      for (const [key, value] of Object.entries({...rendered.env, ...profile?.env, ...options.env})) {
        if (secretValues.includes(value)) guestSecrets[key] = value
        else env[key] = value
      }
      const accelerator = (await accel) === 'kvm' ? 'KVM' : 'TCG'
      options.onStatus(`booting ${name}: ${memoryMib} MiB, ${app.resources.vcpus} vCPU, ${accelerator}, workspace ${workspace}`)
      return {command, env, secrets: guestSecrets, user, workdir: imageConfig.WorkingDir || '/', ports: expose.map((m) => m.guestPort), hostname: name}
    })
    spec.catch(() => undefined) // startVm awaits it

    await mkdir(workspace, {recursive: true}) // shared from the start; its files are written before the spec goes out
    const consoleLines = lineMasker(secretValues, options.onOutput)
    const vm = await startVm({
      kernel: files.then(([, guest]) => guest.kernel),
      initrd: files.then(([, guest]) => guest.initrd),
      rootDisk: files.then(([{rootDisk}]) => rootDisk),
      accel,
      workspaceDir: workspace,
      writableLayer: writableLayerBytes === undefined ? undefined : {bytes: writableLayerBytes, dir: path.join(options.dataDir, 'scratch')},
      memoryMib,
      vcpus: app.resources.vcpus ?? 1,
      spec,
      network,
      onConsole: consoleLines,
      bootTimeoutMs: 120_000,
      onStarted: launched,
    }).catch(async (error: unknown) => {
      launched()
      // No hook or build outlives the error; a failed config check is the error to show first.
      throw await prepared.then(() => error, (failure: unknown) => failure)
    })
    const {rendered} = await prepared
    let exited = false
    const result = vm.result.finally(() => {
      exited = true
      consoleLines.flush()
    }).then(async (ended) => {
      await release(registry, name, options.detached, {exitCode: ended.exitCode ?? undefined, message: describeExit(name, ended, memoryMib)})
      return ended
    })
    const usedAccel = await accel
    await registry?.update(name, {status: 'running', accel: usedAccel})

    const urls: Array<{label: string; url: string}> = []
    const hostPortFor = (guestPort: number) => expose.find((mapping) => mapping.guestPort === guestPort)?.hostPort
    for (const entry of manifest.routing?.expose ?? []) {
      const hostPort = hostPortFor(entry.port)
      if (!entry.ui || hostPort === undefined) continue
      const named = rendered.urls.find((candidate) => candidate.port === entry.port)
      const token = named?.token_env ? secrets[named.token_env] ?? rendered.env[named.token_env] : undefined
      urls.push({label: named?.label ?? entry.name ?? 'UI', url: `http://127.0.0.1:${hostPort}${named?.path ?? entry.path ?? '/'}${token ? `#token=${token}` : ''}`})
    }

    let healthyMs: number | undefined
    const health = manifest.healthcheck
    const healthPort = health ? hostPortFor(health.port) : undefined
    if (health && healthPort !== undefined) {
      options.onStatus(`waiting for http://127.0.0.1:${healthPort}${health.path ?? '/'}`)
      try {
        healthyMs = await waitHealthy(`http://127.0.0.1:${healthPort}${health.path ?? '/'}`, {
          timeoutMs: parseDuration(health.timeout ?? '') ?? 300_000,
          intervalMs: parseDuration(health.interval ?? '') ?? 1000,
          signal: options.signal,
          stillRunning: () => !exited,
        })
      } catch (error) {
        if (!exited) await vm.stop(5000)
        if (options.signal.aborted || exited) return {name, workspace, urls, vm, result, memoryMib, accel: usedAccel}
        throw error
      }
      // Kept without the token: the state file is for `ps`, and the token is a secret.
      if (!exited) await registry?.update(name, {status: 'healthy', urls: urls.map((u) => ({label: u.label, url: u.url.replace(/#token=.*$/, '')}))})
    }
    return {name, workspace, urls, healthyMs, vm, result, memoryMib, accel: usedAccel}
  }
}

/**
 * The instance is over: a detached one keeps its record (with how it ended) for `ps --all` and
 * `logs`; a foreground one's record goes, its terminal having shown everything.
 */
async function release(registry: InstanceRegistry | undefined, name: string, detached: boolean | undefined, end: {exitCode?: number; message: string}): Promise<void> {
  if (!registry) return
  if (detached) await registry.update(name, {status: 'exited', ...end})
  else await registry.remove(name)
}

/**
 * What the VM boots: --kernel and --initrd as given, the rest from the --guest artifact or else
 * this host's guest in the store (assembled and stored the first time).
 */
async function bootFiles(options: RunOptions, chosen: StoredGuest | undefined, cacheDir: string, beforeWork: () => Promise<void>): Promise<{kernel: string; initrd: string}> {
  if (options.kernel !== undefined && options.initrd !== undefined) return {kernel: options.kernel, initrd: options.initrd}
  const guest = chosen ?? await resolveGuest({store: options.store, cacheDir: path.join(cacheDir, 'guest'), onStatus: options.onStatus, beforeWork})
  return {kernel: options.kernel ?? guest.kernel, initrd: options.initrd ?? guest.initrd}
}

/** Awaits every promise, then throws the first failure in order: no work is left running behind an error. */
async function settleAll<T extends readonly unknown[] | []>(promises: T): Promise<{-readonly [K in keyof T]: Awaited<T[K]>}> {
  const results = await Promise.allSettled(promises)
  for (const result of results) if (result.status === 'rejected') throw result.reason
  return results.map((result) => (result as PromiseFulfilledResult<unknown>).value) as {-readonly [K in keyof T]: Awaited<T[K]>}
}

/**
 * Console text arrives in arbitrary chunks, so a secret can straddle two of them: mask whole
 * lines only. `flush` emits a last unterminated line.
 */
function lineMasker(secretValues: string[], emit: (line: string) => void): ((text: string) => void) & {flush: () => void} {
  let pending = ''
  const push = (text: string) => {
    pending += text
    const lines = pending.split('\n')
    pending = lines.pop() ?? ''
    for (const line of lines) emit(maskSecrets(line.replace(/\r$/, ''), secretValues))
  }
  return Object.assign(push, {
    flush: () => {
      if (pending !== '') emit(maskSecrets(pending, secretValues))
      pending = ''
    },
  })
}

/**
 * Creates the workspace, writes the rendered files into it, and makes it the workload's: when
 * aegis-kit runs as root and the workload does not, a root-owned workspace (and what we wrote)
 * is handed to the workload's uid:gid, since virtiofs passes ownership through unchanged.
 */
async function prepareWorkspace(workspace: string, files: ResolvedFile[], user: ImageUser, kitName: string): Promise<void> {
  await mkdir(workspace, {recursive: true})
  const handOver = process.getuid?.() === 0 && user.uid !== 0
  const own = async (target: string) => {
    if (handOver && (await stat(target)).uid === 0) await chown(target, user.uid, user.gid)
  }
  await own(workspace)
  for (const file of files) {
    if (!file.path.startsWith('/workspace/')) {
      throw new AegisError(`render_env of kit ${kitName} rendered ${file.path}, outside /workspace`, {hint: 'kits render files into /workspace; secrets reach the workload as environment variables and /run/secrets/NAME'})
    }
    const relative = file.path.slice('/workspace/'.length)
    const target = path.join(workspace, relative)
    const parts = path.dirname(relative).split('/').filter((part) => part !== '.' && part !== '')
    for (let depth = 1; depth <= parts.length; depth++) {
      const dir = path.join(workspace, ...parts.slice(0, depth))
      await mkdir(dir, {recursive: true})
      await own(dir)
    }
    await writeFile(target, file.content, {mode: file.mode})
    await own(target)
  }
}

/** One plain sentence for how the instance ended. */
export function describeExit(name: string, result: VmResult, memoryMib: number): string {
  if (result.oomKilled) return `${name}: the workload was killed because the VM ran out of memory (${memoryMib} MiB); run again with more, e.g. --memory ${Math.max(memoryMib * 2, 1024)}mb`
  if (result.harnessError) return `${name}: the workload could not start: ${result.harnessError}`
  return `${name}: the workload exited with code ${result.exitCode}${result.killedByHost ? ' (the VM was powered off after the grace period)' : ''}`
}
