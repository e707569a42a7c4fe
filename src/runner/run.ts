/**
 * `aegis-kit run`: a built kit as a running, isolated instance. Builds when the image is missing
 * or stale, validates the config, renders the environment, boots the microVM with the image's
 * root read-only under an overlay (its writable layer a disk of resources.disk, or a tmpfs),
 * waits for the healthcheck and hands back the URLs.
 */
import {chown, mkdir, stat, writeFile} from 'node:fs/promises'
import path from 'node:path'
import type {Duplex} from 'node:stream'
import type {BuildEvent} from '../builder/build.js'
import {AegisError, messageOf} from '../errors.js'
import {
  checkAccelChoice,
  checkInitrdFile,
  checkKernelFile,
  checkVmTools,
  checkWritableLayerSize,
  chooseAccel,
  type Accel,
  type AccelChoice,
  loadGuest,
  resolveGuest,
  resolveImageUser,
  startVm,
  type ImageUser,
  type NetworkBackend,
  type RunSpec,
  type RunningVm,
  type StoredGuest,
  type VmResult,
} from '../guest/index.js'
import {checkConfigOrThrow} from '../hooks/check-config.js'
import {buildAppContext, renderEnv} from '../hooks/operations.js'
import {hasHook} from '../hooks/run-hook.js'
import type {AppContext, RenderEnvResult, ResolvedFile} from '../hooks/contract.js'
import type {Kit} from '../kit/kit.js'
import type {Profile} from '../kit/manifest.generated.js'
import {maskSecrets, resolveSecrets, type SecretRequest} from '../kit/secrets.js'
import {parseDuration, parseSize} from '../kit/units.js'
import {hostArchitecture, type Architecture} from '../oci/platform.js'
import {awaitedLater, deferred, settleAll, UndoStack} from '../undo-stack.js'
import type {LocalStore} from '../store/index.js'
import {waitHealthy} from './health.js'
import {processStartTime} from '../process-identity.js'
import {checkSessionName, InstanceRegistry, type SessionLimit, sessionWorkspaceDir} from './instances.js'
import {checkMemory, checkWorkspace, profilePorts, type ExposeMapping} from './options.js'
import {prepareRootDisk, prepareRootfs, type Rootfs} from './rootfs.js'
import {sessionSecretStore, workspaceSecretStore} from './kept-secrets.js'
import {heartbeatIntervalMs, idleRulesOf, type IdleRules} from './idle.js'
import {type CapabilityClaims, CapabilityKey, claimsOf} from './capabilities.js'
import {Children} from './children.js'
import {guestApi, type RuntimePorts} from './guest-api.js'
import {InstanceLifecycle, type RestartPolicy} from './lifecycle.js'
import {freeHostPort, startPortRelay, type PortRelay} from './port-relay.js'
import {serveSupervisorApi, supervisorSocketPath} from './supervisor-api.js'

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
  /**
   * The session the instance joins: with the kit's `workspace.mode: shared` its instances share
   * one workspace, `per_session` secrets are kept for it, and `resources.max_agents_per_session`
   * caps how many of its instances run at once.
   */
  session?: string
  memoryMib?: number
  cpus?: number
  /** Boot this kernel instead of the guest's (checked before anything starts). */
  kernel?: string
  /** Boot this initramfs instead of the guest's. */
  initrd?: string
  /** A guest artifact in the store (e.g. one pulled from a registry) instead of this host's own. */
  guest?: string
  /** An image in the store to boot instead of building the kit's (a child's `image_ref`). */
  image?: string
  /** QEMU's accelerator: auto (KVM when a probe boot works, else TCG with a warning), kvm or tcg. */
  accel?: AccelChoice
  command?: string[]
  config?: Record<string, unknown>
  /** Where the instance is recorded for `ps`, `stop` and `logs`; the name is claimed there. */
  registry?: InstanceRegistry
  /** This process is a `run --detach` supervisor: the record stays after the instance ends. */
  detached?: boolean
  /** What to do when the workload ends (`always_on` means `always`). Default `no`. */
  restart?: RestartPolicy
  /** How long an instance stays paused before its VM is stopped (default 5 min); the next connection boots it. */
  stopAfterMs?: number
  /** Lowers the profile's capability claims (`run --cap CLAIM=VALUE`). */
  caps?: Record<string, string>
  /** Set for a child spawned through its parent's guest API: the parent's name and the token it made. */
  grant?: {parent: string; token: string}
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
  /** Ends the instance: SIGTERM to its workload, the VM killed after `graceMs`; no restart follows. */
  stop(graceMs: number): Promise<VmResult>
  /** How the instance ended: its last VM's outcome (restarts and wakes from stopped come before). */
  result: Promise<VmResult>
  memoryMib: number
  /** The accelerator QEMU really runs the guest with (auto resolves to one of these). */
  accel: Accel
}

const DEFAULT_MEMORY_MIB = 512

/**
 * Starts the instance in stages: the checks that cost nothing and the plan they settle, the name
 * claimed, the image and guest prepared while the hooks render the environment, the VM booted
 * with the workload's spec, the instance recorded as running, its health awaited. What a stage
 * acquires goes on one undo stack, which a failure unwinds once, last acquired first.
 */
export async function startInstance(options: RunOptions): Promise<RunningInstance> {
  // The build's modules (the registry client, layer writers) load while the
  // checks and hooks below run, instead of before the CLI can do anything.
  const building = awaitedLater(import('../builder/build.js'))
  const plan = await planInstance(options)
  const undo = new UndoStack()
  try {
    await claimName(plan, undo)
    // Waited on by the port relay's connections; a start that fails rejects it, handled or not.
    const lifecycle = deferred<InstanceLifecycle>()
    awaitedLater(lifecycle.promise)
    undo.defer(() => lifecycle.reject(new AegisError(`${plan.name} did not start`)))
    const relay = await relayPorts(plan, lifecycle.promise, undo)
    const boot = prepareBoot(plan, building)
    const consoleLines = lineMasker(plan.secretValues, options.onOutput)
    const vm = await bootVm(plan, boot, consoleLines).catch((error: unknown) => {
      lifecycle.reject(error)
      throw error
    })
    const {rendered} = await boot.prepared
    const supervision = await superviseLife(
      plan,
      vm,
      () => bootVm(plan, boot, consoleLines),
      runtimePorts(plan, relay),
      undo,
    )
    lifecycle.resolve(supervision.lifecycle)
    const ended = watchEnd(plan, supervision.lifecycle, consoleLines, async () => {
      await supervision.close()
      await relay?.close()
    })
    undo.defer(async () => {
      if (!ended.exited()) await supervision.lifecycle.stop(5000)
      // The record says how the VM ended before the claim's undo says why the start failed.
      await ended.result
    })
    const accel = await boot.accel
    await plan.registry?.update(plan.name, {status: 'running', accel})
    const urls = instanceUrls(plan, rendered)
    const healthyMs = await waitUntilHealthy(plan, supervision.lifecycle, ended, urls)
    return {
      name: plan.name,
      workspace: plan.workspace,
      urls,
      healthyMs,
      stop: (graceMs) => supervision.lifecycle.stop(graceMs),
      result: ended.result,
      memoryMib: plan.memoryMib,
      accel,
    }
  } catch (error) {
    return undo.failWith(error)
  }
}

/** What the checks settled before anything starts: who the instance is and what it gets. */
interface InstancePlan {
  options: RunOptions
  kit: Kit
  name: string
  /** The guest's, which is the host's: the image's platform to run. */
  architecture: Architecture
  profile: Profile | undefined
  expose: ExposeMapping[]
  /** QEMU's path, checked. */
  qemu: string
  network: NetworkBackend
  /** The --guest artifact, checked; undefined: this host's own guest. */
  chosenGuest: StoredGuest | undefined
  workspace: string
  app: AppContext
  memoryMib: number
  vcpus: number
  /** undefined keeps the tmpfs layer (see guest/writable-layer.ts). */
  writableLayerBytes: number | undefined
  secrets: Record<string, string>
  secretValues: string[]
  registry: InstanceRegistry | undefined
  cacheDir: string
  idleRules: IdleRules
  /** What this instance may ask of the guest API, and the token the harness presents for it. */
  claims: CapabilityClaims
  capabilityKey: CapabilityKey
  token: string
}

/** Cheap checks first: a wrong flag or a missing tool should not cost a build. */
async function planInstance(options: RunOptions): Promise<InstancePlan> {
  const {kit} = options
  const manifest = kit.manifest
  const name = options.name ?? manifest.name
  const architecture = hostArchitecture()
  const profile = options.profile === undefined ? undefined : manifest.profiles?.[options.profile]
  const expose = options.expose.length > 0 ? options.expose : profilePorts(profile)
  const qemu = checkVmTools()
  await checkAccelChoice(options.accel ?? 'auto')
  const network = options.network(expose)
  await network.check?.()
  if (options.kernel !== undefined) await checkKernelFile(options.kernel, '--kernel')
  if (options.initrd !== undefined) await checkInitrdFile(options.initrd, '--initrd')
  const chosenGuest = options.guest === undefined ? undefined : await loadGuest(options.store, options.guest)
  if (options.session !== undefined) checkSessionName(options.session)
  const workspace = path.resolve(options.workspace ?? defaultWorkspace(options, name))
  checkWorkspace(workspace)
  const app = buildAppContext(kit, {
    profile: options.profile,
    instance: name,
    config: options.config,
    published: expose,
  })
  const {memoryMib, vcpus, writableLayerBytes} = await planResources(options, app, name)
  const secrets = resolveSecrets(kit, options.secrets, {
    profile: options.profile,
    workspace: workspaceSecretStore(options.dataDir, workspace, manifest.name),
    ...(options.session === undefined
      ? {}
      : {session: sessionSecretStore(options.dataDir, options.session, manifest.name)}),
    onWarning: (message) => options.onStatus(`warning: ${message}`),
  })
  const capabilityKey = CapabilityKey.forDataDir(options.dataDir)
  const claims = instanceClaims(name, profile, options, capabilityKey)
  return {
    claims,
    capabilityKey,
    token: capabilityKey.seal(claims),
    options,
    kit,
    name,
    architecture,
    profile,
    expose,
    qemu,
    network,
    chosenGuest,
    workspace,
    app,
    memoryMib,
    vcpus,
    writableLayerBytes,
    secrets,
    secretValues: Object.values(secrets),
    registry: options.registry,
    cacheDir: path.join(options.dataDir, 'cache'),
    idleRules: idleRulesOf(manifest, profile, options.stopAfterMs),
  }
}

/**
 * Without --workspace: the session's when the kit shares one (`workspace.mode: shared`), else the
 * instance's own, named after it.
 */
function defaultWorkspace(options: RunOptions, name: string): string {
  const {session} = options
  return session !== undefined && options.kit.manifest.workspace?.mode === 'shared'
    ? sessionWorkspaceDir(options.dataDir, session)
    : path.join(options.dataDir, 'workspaces', name)
}

/** Memory, vCPUs (both also set in the app context the guest sees) and the writable layer's size, checked. */
async function planResources(
  options: RunOptions,
  app: AppContext,
  name: string,
): Promise<Pick<InstancePlan, 'memoryMib' | 'vcpus' | 'writableLayerBytes'>> {
  const manifest = options.kit.manifest
  const memoryMib = options.memoryMib ?? app.resources.memory_mb ?? DEFAULT_MEMORY_MIB
  checkMemory(memoryMib, `the memory of ${name}`)
  app.resources.memory_mb = memoryMib
  const vcpus = (app.resources.vcpus = options.cpus ?? app.resources.vcpus ?? 1)
  // validate has checked that it parses.
  const writableLayerBytes = manifest.resources?.disk === undefined ? undefined : parseSize(manifest.resources.disk)
  if (writableLayerBytes !== undefined)
    await checkWritableLayerSize(writableLayerBytes, options.dataDir, `resources.disk (${manifest.resources?.disk})`)
  return {memoryMib, vcpus, writableLayerBytes}
}

/** A child's claims come sealed from its parent; a top-level instance's from its profile, lowered by --cap. */
function instanceClaims(
  name: string,
  profile: Profile | undefined,
  options: RunOptions,
  key: CapabilityKey,
): CapabilityClaims {
  if (options.grant === undefined) return claimsOf(name, profile?.capabilities, options.caps)
  const granted = key.open(options.grant.token)
  if (granted === undefined || granted.sub !== name)
    throw new AegisError(`${name}: the capability token from ${options.grant.parent} is not valid for it`)
  if (options.caps && Object.keys(options.caps).length > 0)
    throw new AegisError('--cap is for instances started from the host; a child gets its claims from its parent')
  return granted
}

/** The kit's cap on the instance's session, when it is in one and the kit sets it. */
function sessionLimit(plan: InstancePlan): SessionLimit | undefined {
  const {session} = plan.options
  const max = plan.kit.manifest.resources?.max_agents_per_session
  return session === undefined || max === undefined ? undefined : {session, max}
}

/** The name is ours from here on (a second instance of it would share the workspace), until a failed start gives it back. */
async function claimName(plan: InstancePlan, undo: UndoStack): Promise<void> {
  const {registry, name, options} = plan
  if (!registry) return
  await registry.claim(
    {
      name,
      kit: plan.kit.manifest.name,
      pid: process.pid,
      pidStart: processStartTime(process.pid),
      startedAt: new Date().toISOString(),
      status: 'starting',
      detached: options.detached ?? false,
      ports: plan.expose,
      workspace: plan.workspace,
      memoryMib: plan.memoryMib,
      vcpus: plan.vcpus,
      urls: [],
      ...(options.profile === undefined ? {} : {profile: options.profile}),
      ...(options.grant === undefined ? {} : {parent: options.grant.parent}),
      ...(options.session === undefined ? {} : {session: options.session}),
    },
    sessionLimit(plan),
  )
  undo.defer((failure) =>
    release(registry, name, options.detached, {
      message: `${name} did not start: ${maskSecrets(messageOf(failure), plan.secretValues)}`,
    }),
  )
}

/** The kit's image, built or found cached, and its root ready to boot. */
interface PreparedImage {
  reference: string
  rootfs: Rootfs
  rootDisk: string
}

interface GuestFiles {
  kernel: string
  initrd: string
}

/** What the VM and its spec wait for: the image, the guest's files, the hooks' answers. */
interface Prepared extends PreparedImage {
  guest: GuestFiles
  rendered: RenderEnvResult
}

interface BootInputs {
  files: Promise<[PreparedImage, GuestFiles]>
  accel: Promise<Accel>
  /** Settles once the files and the hooks have: nothing of them outlives it. */
  prepared: Promise<Prepared>
  spec: Promise<RunSpec>
  /** QEMU is spawned (or could not be): the hooks may start. */
  launched: () => void
}

/**
 * Starts the work the VM waits for. The VM boots as soon as the image (a cached build, checked
 * here) and the guest's files are known. The hooks, each a Node process of its own, start once
 * QEMU is spawned, while the guest kernel boots (1 s and more under TCG), so they do not compete
 * with the boot path for the CPU; the workload waits for them, and a failed check stops the VM
 * before it starts anything. Work that costs (a layer to build, the guest to assemble) waits for
 * the config check: a bad config costs no build. See docs/architecture.md, "What run does, in order".
 */
function prepareBoot(plan: InstancePlan, building: Promise<typeof import('../builder/build.js')>): BootInputs {
  const {options} = plan
  const hooks = lazyHooks(plan)
  options.onStatus(
    options.image === undefined
      ? `building ${plan.kit.manifest.name} (cached layers are reused)`
      : `preparing ${options.image} from the store (--image: no build)`,
  )
  const guestFiles = bootFiles(options, plan.chosenGuest, plan.cacheDir, hooks.configGate)
  const files = awaitedLater(settleAll([prepareImage(plan, building, hooks.configGate), guestFiles]))
  // Probed (once per host boot) while the build is checked and the root prepared.
  const accel = awaitedLater(
    guestFiles.then(({kernel}) =>
      chooseAccel({
        choice: options.accel ?? 'auto',
        qemu: plan.qemu,
        kernel,
        cacheDir: plan.cacheDir,
        onStatus: options.onStatus,
      }),
    ),
  )
  let launched!: () => void
  const vmLaunched = new Promise<void>((resolve) => {
    launched = resolve
  })
  const prepared = awaitedLater(settleHooksAfterLaunch(files, vmLaunched, hooks))
  const spec = awaitedLater(prepared.then((ready) => workloadSpec(plan, ready, accel)))
  return {files, accel, prepared, spec, launched}
}

interface LazyHooks {
  /** Starts render_env and validate_config, once. */
  start(): {rendering: Promise<RenderEnvResult>; configChecked: Promise<void>}
  /** Resolves once the config check passed (starting the hooks if need be). */
  configGate(): Promise<void>
}

function lazyHooks(plan: InstancePlan): LazyHooks {
  const {kit, app, secrets} = plan
  let hooks: ReturnType<LazyHooks['start']> | undefined
  const start = () => {
    if (hooks) return hooks
    const rendering = hasHook(kit, 'render_env')
      ? renderEnv(kit, app, secrets)
      : Promise.resolve<RenderEnvResult>({env: {}, files: [], warnings: [], urls: []})
    return (hooks = {rendering: awaitedLater(rendering), configChecked: awaitedLater(checkConfigOrThrow(kit, app))})
  }
  return {start, configGate: () => start().configChecked}
}

/** The kit's image, built (or found cached), or the one `image` names; its root unpacked and made a disk. */
async function prepareImage(
  plan: InstancePlan,
  building: Promise<typeof import('../builder/build.js')>,
  configGate: () => Promise<void>,
): Promise<PreparedImage> {
  const {options, cacheDir} = plan
  // Only a build waits for the builder's modules: --image boots what the store holds.
  const build = async () => {
    const {buildKit} = await building
    return (
      await buildKit(plan.kit, {
        store: options.store,
        cacheDir,
        onEvent: options.onBuild,
        signal: options.signal,
        beforeWork: configGate,
      })
    ).reference
  }
  const reference = options.image ?? (await build())
  const rootfs = await prepareRootfs(options.store, reference, cacheDir, plan.architecture, options.onStatus)
  return {reference, rootfs, rootDisk: await prepareRootDisk(rootfs, options.onStatus)}
}

/**
 * Waits for the files and, once QEMU runs, for the hooks. The hooks run even when the files
 * failed: the error a user fixes first may be the config.
 */
async function settleHooksAfterLaunch(
  files: BootInputs['files'],
  vmLaunched: Promise<void>,
  hooks: LazyHooks,
): Promise<Prepared> {
  const booting = await files.then(
    (value) => ({value}),
    (error: unknown) => ({error}),
  )
  if ('value' in booting) await vmLaunched
  const {rendering, configChecked} = hooks.start()
  const [, rendered] = await settleAll([configChecked, rendering])
  if (!('value' in booting)) throw booting.error
  const [image, guest] = booting.value
  return {...image, guest, rendered}
}

/** The workload's spec: its user, command and environment, and the workspace with the rendered files in it. */
async function workloadSpec(plan: InstancePlan, prepared: Prepared, accel: Promise<Accel>): Promise<RunSpec> {
  const {options, name} = plan
  const {reference, rootfs, rendered} = prepared
  for (const warning of rendered.warnings) options.onStatus(`warning: ${maskSecrets(warning, plan.secretValues)}`)
  const imageConfig = rootfs.config.config ?? {}
  const user = await resolveImageUser(rootfs.dir, imageConfig.User)
  await prepareWorkspace(plan.workspace, rendered.files, user, plan.kit.manifest.name)
  const profileCommand =
    plan.profile?.command === undefined
      ? undefined
      : typeof plan.profile.command === 'string'
        ? ['/bin/sh', '-c', plan.profile.command]
        : plan.profile.command
  const command = options.command ?? profileCommand ?? [...(imageConfig.Entrypoint ?? []), ...(imageConfig.Cmd ?? [])]
  if (command.length === 0)
    throw new AegisError(`the ${reference} image has no command`, {
      hint: 'give one after --: aegis-kit run KIT -- COMMAND...',
    })
  const {env, secrets} = workloadEnv(plan, imageConfig.Env ?? [], rendered.env)
  const accelerator = (await accel) === 'kvm' ? 'KVM' : 'TCG'
  // Said once at boot: a denied connection later is only reported under --debug.
  const egress = plan.kit.manifest.networking?.egress === 'deny' ? ', no egress (networking.egress: deny)' : ''
  options.onStatus(
    `booting ${name}: ${plan.memoryMib} MiB, ${plan.vcpus} vCPU, ${accelerator}, workspace ${plan.workspace}${egress}`,
  )
  return {
    command,
    env,
    secrets,
    user,
    workdir: imageConfig.WorkingDir || '/',
    ports: plan.expose.map((m) => m.guestPort),
    hostname: name,
    heartbeatMs: heartbeatIntervalMs(plan.idleRules),
  }
}

/** Secret values travel as secrets (environment + /run/secrets/NAME), never as plain env. */
function workloadEnv(
  plan: InstancePlan,
  imageEnv: string[],
  renderedEnv: Record<string, string>,
): {env: Record<string, string>; secrets: Record<string, string>} {
  const env: Record<string, string> = {}
  for (const entry of imageEnv) {
    const at = entry.indexOf('=')
    if (at > 0) env[entry.slice(0, at)] = entry.slice(at + 1)
  }
  const secrets: Record<string, string> = {...plan.secrets}
  // The profile's env is the manifest's word for this instance, so render_env cannot undo it; --env can.
  for (const [key, value] of Object.entries({...renderedEnv, ...plan.profile?.env, ...plan.options.env})) {
    if (plan.secretValues.includes(value)) secrets[key] = value
    else env[key] = value
  }
  return {env, secrets}
}

/** Boots the VM with the files and spec as they become known; on failure, waits for the build and hooks to settle. */
async function bootVm(plan: InstancePlan, boot: BootInputs, consoleLines: (text: string) => void): Promise<RunningVm> {
  const {options, workspace} = plan
  await mkdir(workspace, {recursive: true}) // shared from the start; its files are written before the spec goes out
  return startVm({
    kernel: boot.files.then(([, guest]) => guest.kernel),
    initrd: boot.files.then(([, guest]) => guest.initrd),
    rootDisk: boot.files.then(([{rootDisk}]) => rootDisk),
    accel: boot.accel,
    workspaceDir: workspace,
    writableLayer:
      plan.writableLayerBytes === undefined
        ? undefined
        : {bytes: plan.writableLayerBytes, dir: path.join(options.dataDir, 'scratch')},
    memoryMib: plan.memoryMib,
    vcpus: plan.vcpus,
    spec: boot.spec,
    network: plan.network,
    onConsole: consoleLines,
    bootTimeoutMs: 120_000,
    onStarted: boot.launched,
  }).catch(async (error: unknown) => {
    boot.launched()
    // No hook or build outlives the error; a failed config check is the error to show first.
    throw await boot.prepared.then(
      () => error,
      (failure: unknown) => failure,
    )
  })
}

interface Ending {
  /** The VM's outcome, once the instance's record says how it ended. */
  result: Promise<VmResult>
  exited(): boolean
}

/**
 * When the instance ends (its last VM, after any restarts): the console's last line out, its
 * supervision (idle clock, APIs, port relay) closed, the record released with how it ended.
 */
function watchEnd(
  plan: InstancePlan,
  lifecycle: InstanceLifecycle,
  consoleLines: {flush: () => void},
  closeSupervision: () => Promise<void>,
): Ending {
  let exited = false
  const result = lifecycle.result
    .finally(async () => {
      exited = true
      consoleLines.flush()
      await closeSupervision().catch(() => undefined)
    })
    .then(async (ended) => {
      await release(plan.registry, plan.name, plan.options.detached, {
        exitCode: ended.exitCode ?? undefined,
        message: describeExit(plan.name, ended, plan.memoryMib),
      })
      return ended
    })
  return {result, exited: () => exited}
}

/**
 * The exposed host ports, listened on by this process for the instance's life (when the network
 * lets the caller own them: gvproxy's relayed forwards). A connection waits for the VM to have
 * booted, wakes it when paused, then reaches the guest port through gvproxy's unix socket.
 */
async function relayPorts(
  plan: InstancePlan,
  lifecycle: Promise<InstanceLifecycle>,
  undo: UndoStack,
): Promise<PortRelay | undefined> {
  const {network, expose} = plan
  const forwardSocket = network.forwardSocket?.bind(network)
  const openForwardSocket = network.openForwardSocket?.bind(network)
  // Started without ports too: the guest may expose one at run time (runtimePorts).
  if (!forwardSocket) return undefined
  let life: InstanceLifecycle | undefined
  lifecycle.then((resolved) => (life = resolved)).catch(() => undefined) // the instance's start reports it
  const relay = await startPortRelay(expose, {
    async reach(mapping) {
      await (await lifecycle).wake(`a connection to :${mapping.hostPort}`)
      const socket = forwardSocket(mapping.guestPort) ?? (await openForwardSocket?.(mapping.guestPort))
      if (socket === undefined) throw new AegisError(`${plan.name} is not running`)
      return socket
    },
    onTraffic: (mapping) => life?.traffic(`traffic on a connection to :${mapping.hostPort}`),
  })
  undo.defer(() => relay.close())
  return relay
}

/** The ports a guest exposes while it runs (POST /v1/self/expose), through the relay. */
function runtimePorts(plan: InstancePlan, relay: PortRelay | undefined): RuntimePorts | undefined {
  if (!relay) return undefined
  const added: ExposeMapping[] = []
  return {
    all: () => [...plan.expose, ...added],
    addedAtRunTime: () => [...added],
    // Called one request at a time (the guest API chains them), after it found guestPort unexposed.
    async expose(guestPort, hostPort) {
      const mapping: ExposeMapping = {guestPort, hostPort: hostPort ?? (await freeHostPort())}
      await relay.add(mapping)
      added.push(mapping)
      await plan.registry?.update(plan.name, {ports: [...plan.expose, ...added]})
      return mapping
    },
  }
}

/** The instance's life once its VM runs: the idle clock and the API that `pause`, `resume`, `keepalive` and `ps` reach. */
async function superviseLife(
  plan: InstancePlan,
  vm: RunningVm,
  boot: () => Promise<RunningVm>,
  ports: RuntimePorts | undefined,
  undo: UndoStack,
): Promise<{lifecycle: InstanceLifecycle; close(): Promise<void>}> {
  const {registry, name, options} = plan
  const tunnels: {serve?: (stream: Duplex, token: string) => void} = {}
  const lifecycle = new InstanceLifecycle({
    vm,
    rules: plan.idleRules,
    restart: options.restart ?? 'no',
    boot,
    ready: (booted) => guestServes(plan, booted),
    // The guest's own requests (127.0.0.1:7777 in the VM), tunnelled by each VM's harness.
    onVm: (booted) => {
      booted.setToken(plan.token)
      booted.onTunnel((stream, token) => tunnels.serve?.(stream, token))
    },
    log: options.onStatus,
    describeEnd: (result) => describeExit(name, result, plan.memoryMib),
    // A record that cannot be written now is rewritten at the next transition.
    onState: (life, counts) => void registry?.update(name, {life, ...counts}).catch(() => undefined),
  })
  const children = instanceChildren(plan)
  const guest = guestApi({
    name,
    lifecycle,
    claims: plan.claims,
    key: plan.capabilityKey,
    children,
    registry,
    ports,
    log: options.onStatus,
  })
  tunnels.serve = guest.serve
  undo.defer(() => lifecycle.close())
  undo.defer(() => guest.close())
  // Stopping a parent stops its children (each stops its own in turn).
  undo.defer(() => children.stopAll())
  const api = registry ? await serveSupervisorApi(supervisorSocketPath(registry.dir(name)), lifecycle) : undefined
  if (api) undo.defer(() => api.close())
  if (registry && api) await registry.update(name, {apiSocket: api.socketPath})
  return {
    lifecycle,
    close: async () => {
      await children.stopAll()
      lifecycle.close()
      guest.close()
      await api?.close()
    },
  }
}

/** The children this instance may spawn through the guest API, within its claims and with its secrets. */
function instanceChildren(plan: InstancePlan): Children {
  const {registry, name, options} = plan
  return new Children({
    name,
    kit: plan.kit,
    claims: plan.claims,
    key: plan.capabilityKey,
    secrets: plan.secrets,
    registry: registry ?? InstanceRegistry.forDataDir(options.dataDir),
    dataDir: options.dataDir,
    ...(options.session === undefined ? {} : {session: options.session}),
    onStatus: options.onStatus,
  })
}

/**
 * A VM booted again (a wake from stopped, a restart) serves once the kit's healthcheck answers,
 * asked through gvproxy's socket (not the host port: the relay is what waits for this).
 */
async function guestServes(plan: InstancePlan, vm: RunningVm): Promise<void> {
  const health = plan.kit.manifest.healthcheck
  const socket = health && plan.network.forwardSocket?.(health.port)
  if (!health || socket === undefined) return
  let stopped = false
  vm.result.finally(() => (stopped = true)).catch(() => undefined)
  await waitHealthy(`http://guest${health.path ?? '/'}`, {
    socketPath: socket,
    timeoutMs: parseDuration(health.timeout ?? '') ?? 300_000,
    // The client waits on this: look often.
    intervalMs: Math.min(parseDuration(health.interval ?? '') ?? 1000, 250),
    signal: plan.options.signal,
    stillRunning: () => !stopped,
  })
}

/**
 * URLs of the exposed UI ports, in the scheme each declares (`routing.expose[].protocol`, http
 * unless it says https, ws or tcp), with the token render_env names for one.
 */
function instanceUrls(plan: InstancePlan, rendered: RenderEnvResult): Array<{label: string; url: string}> {
  const urls: Array<{label: string; url: string}> = []
  for (const entry of plan.kit.manifest.routing?.expose ?? []) {
    const hostPort = hostPortFor(plan, entry.port)
    if (!entry.ui || hostPort === undefined) continue
    const named = rendered.urls.find((candidate) => candidate.port === entry.port)
    const token = named?.token_env ? (plan.secrets[named.token_env] ?? rendered.env[named.token_env]) : undefined
    const protocol = entry.protocol ?? 'http'
    const address = `${protocol}://127.0.0.1:${hostPort}`
    urls.push({
      label: named?.label ?? entry.name ?? 'UI',
      // A raw TCP port has no path to open nor a page to hand a token to.
      url:
        protocol === 'tcp' ? address : `${address}${named?.path ?? entry.path ?? '/'}${token ? `#token=${token}` : ''}`,
    })
  }
  return urls
}

function hostPortFor(plan: InstancePlan, guestPort: number): number | undefined {
  return plan.expose.find((mapping) => mapping.guestPort === guestPort)?.hostPort
}

/**
 * Waits for the kit's healthcheck, when it has one on an exposed port, and records the instance
 * healthy. Milliseconds until healthy; undefined without a check, or when the instance was
 * stopped (Ctrl-C) or ended while waiting, which is no error.
 */
async function waitUntilHealthy(
  plan: InstancePlan,
  lifecycle: InstanceLifecycle,
  ended: Ending,
  urls: Array<{label: string; url: string}>,
): Promise<number | undefined> {
  const {options} = plan
  const health = plan.kit.manifest.healthcheck
  if (!health) return undefined
  const healthPort = hostPortFor(plan, health.port)
  // A detached instance (its launcher waits for healthy) whose port is not published on the host
  // (one that serves only inside, e.g. a bot) is asked through gvproxy's socket for that guest
  // port, as a wake does. A foreground run without the port does not wait.
  const socketPath =
    healthPort === undefined && options.detached ? plan.network.forwardSocket?.(health.port) : undefined
  if (healthPort === undefined && socketPath === undefined) return undefined
  const where = healthPort === undefined ? `guest port ${health.port} ` : `http://127.0.0.1:${healthPort}`
  options.onStatus(`waiting for ${where}${health.path ?? '/'}`)
  let healthyMs: number
  try {
    healthyMs = await waitHealthy(
      `http://${healthPort === undefined ? 'guest' : `127.0.0.1:${healthPort}`}${health.path ?? '/'}`,
      {
        ...(socketPath === undefined ? {} : {socketPath}),
        timeoutMs: parseDuration(health.timeout ?? '') ?? 300_000,
        intervalMs: parseDuration(health.interval ?? '') ?? 1000,
        signal: options.signal,
        stillRunning: () => !ended.exited(),
      },
    )
  } catch (error) {
    if (!ended.exited()) await lifecycle.stop(5000)
    if (options.signal.aborted || ended.exited()) return undefined
    throw error
  }
  // Kept without the token: the state file is for `ps`, and the token is a secret.
  if (!ended.exited())
    await plan.registry?.update(plan.name, {
      status: 'healthy',
      urls: urls.map((u) => ({label: u.label, url: u.url.replace(/#token=.*$/, '')})),
    })
  return healthyMs
}

/**
 * The instance is over: a detached one keeps its record (with how it ended) for `ps --all` and
 * `logs`; a foreground one's record goes, its terminal having shown everything.
 */
async function release(
  registry: InstanceRegistry | undefined,
  name: string,
  detached: boolean | undefined,
  end: {exitCode?: number; message: string},
): Promise<void> {
  if (!registry) return
  if (detached) await registry.update(name, {status: 'exited', ...end})
  else await registry.remove(name)
}

/**
 * What the VM boots: --kernel and --initrd as given, the rest from the --guest artifact or else
 * this host's guest in the store (assembled and stored the first time).
 */
async function bootFiles(
  options: RunOptions,
  chosen: StoredGuest | undefined,
  cacheDir: string,
  beforeWork: () => Promise<void>,
): Promise<{kernel: string; initrd: string}> {
  if (options.kernel !== undefined && options.initrd !== undefined)
    return {kernel: options.kernel, initrd: options.initrd}
  const guest =
    chosen ??
    (await resolveGuest({
      store: options.store,
      cacheDir: path.join(cacheDir, 'guest'),
      onStatus: options.onStatus,
      beforeWork,
    }))
  return {kernel: options.kernel ?? guest.kernel, initrd: options.initrd ?? guest.initrd}
}

/**
 * Console text arrives in arbitrary chunks, so a secret can straddle two of them: mask whole
 * lines only. `flush` emits a last unterminated line.
 */
function lineMasker(
  secretValues: string[],
  emit: (line: string) => void,
): ((text: string) => void) & {flush: () => void} {
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
async function prepareWorkspace(
  workspace: string,
  files: ResolvedFile[],
  user: ImageUser,
  kitName: string,
): Promise<void> {
  await mkdir(workspace, {recursive: true})
  const handOver = process.getuid?.() === 0 && user.uid !== 0
  const own = async (target: string) => {
    if (handOver && (await stat(target)).uid === 0) await chown(target, user.uid, user.gid)
  }
  await own(workspace)
  for (const file of files) {
    if (!file.path.startsWith('/workspace/')) {
      throw new AegisError(`render_env of kit ${kitName} rendered ${file.path}, outside /workspace`, {
        hint: 'kits render files into /workspace; secrets reach the workload as environment variables and /run/secrets/NAME',
      })
    }
    const relative = file.path.slice('/workspace/'.length)
    const target = path.join(workspace, relative)
    const parts = path
      .dirname(relative)
      .split('/')
      .filter((part) => part !== '.' && part !== '')
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
  if (result.oomKilled)
    return `${name}: the workload was killed because the VM ran out of memory (${memoryMib} MiB); run again with more, e.g. --memory ${Math.max(memoryMib * 2, 1024)}mb`
  if (result.harnessError) return `${name}: the workload could not start: ${result.harnessError}`
  return `${name}: the workload exited with code ${result.exitCode}${result.killedByHost ? ' (the VM was powered off after the grace period)' : ''}`
}
