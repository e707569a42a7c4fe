/**
 * `aegis-kit run`: a built kit as a running, isolated instance. Builds when the image is missing
 * or stale, validates the config, renders the environment, boots the microVM with the image's
 * root read-only under a tmpfs overlay, waits for the healthcheck and hands back the URLs.
 */
import {chown, mkdir, stat, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {buildKit, hostPlatform, type BuildEvent} from '../build/build.js'
import {AegisError} from '../errors.js'
import {assembleGuest, checkHostPortFree, resolveImageUser, startVm, type ImageUser, type NetworkBackend, type RunningVm, type VmResult} from '../guest/index.js'
import {checkConfigOrThrow} from '../hooks/check-config.js'
import {buildAppContext, renderEnv} from '../hooks/operations.js'
import {hasHook} from '../hooks/run-hook.js'
import type {ResolvedFile} from '../hooks/contract.js'
import type {Kit} from '../kit/kit.js'
import {maskSecrets, resolveSecrets, type SecretRequest} from '../kit/secrets.js'
import {parseDuration} from '../kit/units.js'
import type {LocalStore} from '../store/index.js'
import {waitHealthy} from './health.js'
import {checkMemory, checkWorkspace, type ExposeMapping} from './options.js'
import {prepareRootDisk, prepareRootfs} from './rootfs.js'

export interface RunOptions {
  kit: Kit
  store: LocalStore
  /** aegis-kit's data directory: build cache, unpacked roots, guest kernel, default workspaces. */
  dataDir: string
  name?: string
  profile?: string
  expose: ExposeMapping[]
  secrets: SecretRequest[]
  env: Record<string, string>
  workspace?: string
  memoryMib?: number
  cpus?: number
  command?: string[]
  config?: Record<string, unknown>
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
}

const DEFAULT_MEMORY_MIB = 512

export async function startInstance(options: RunOptions): Promise<RunningInstance> {
  const {kit, store} = options
  const manifest = kit.manifest
  const name = options.name ?? manifest.name
  const architecture = hostPlatform().split('/')[1]

  // Cheap checks first: a wrong flag should not cost a build.
  for (const mapping of options.expose) await checkHostPortFree(mapping)
  const workspace = path.resolve(options.workspace ?? path.join(options.dataDir, 'workspaces', name))
  checkWorkspace(workspace)
  const app = buildAppContext(kit, {profile: options.profile, instance: name, config: options.config, published: options.expose})
  const memoryMib = options.memoryMib ?? app.resources.memory_mb ?? DEFAULT_MEMORY_MIB
  checkMemory(memoryMib, `the memory of ${name}`)
  app.resources.memory_mb = memoryMib
  app.resources.vcpus = options.cpus ?? app.resources.vcpus ?? 1
  const secrets = resolveSecrets(kit, options.secrets, {profile: options.profile})
  const secretValues = Object.values(secrets)
  if (hasHook(kit, 'validate_config')) await checkConfigOrThrow(kit, app)

  options.onStatus(`building ${manifest.name} (cached layers are reused)`)
  const built = await buildKit(kit, {store, cacheDir: path.join(options.dataDir, 'cache'), onEvent: options.onBuild, signal: options.signal})
  const rootfs = await prepareRootfs(store, built.reference, path.join(options.dataDir, 'cache'), architecture, options.onStatus)
  const rootDisk = await prepareRootDisk(rootfs, options.onStatus)
  const guest = await assembleGuest({cacheDir: path.join(options.dataDir, 'cache', 'guest')})

  const rendered = hasHook(kit, 'render_env') ? await renderEnv(kit, app, secrets) : {env: {}, files: [], warnings: [], urls: []}
  for (const warning of rendered.warnings) options.onStatus(`warning: ${maskSecrets(warning, secretValues)}`)
  const imageConfig = rootfs.config.config ?? {}
  const user = await resolveImageUser(rootfs.dir, imageConfig.User)
  await prepareWorkspace(workspace, rendered.files, user, manifest.name)
  const profile = options.profile ? manifest.profiles?.[options.profile] : undefined
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
  for (const [key, value] of Object.entries({...rendered.env, ...options.env})) {
    if (secretValues.includes(value)) guestSecrets[key] = value
    else env[key] = value
  }

  options.onStatus(`booting ${name}: ${memoryMib} MiB, ${app.resources.vcpus} vCPU, workspace ${workspace}`)
  const consoleLines = lineMasker(secretValues, options.onOutput)
  const vm = await startVm({
    kernel: guest.kernel,
    initrd: guest.initrd,
    rootDisk,
    workspaceDir: workspace,
    memoryMib,
    vcpus: app.resources.vcpus,
    spec: {command, env, secrets: guestSecrets, user, workdir: imageConfig.WorkingDir || '/', ports: options.expose.map((m) => m.guestPort), hostname: name},
    network: options.network(options.expose),
    onConsole: consoleLines,
    bootTimeoutMs: 120_000,
  })
  let exited = false
  const result = vm.result.finally(() => {
    exited = true
    consoleLines.flush()
  })

  const urls: Array<{label: string; url: string}> = []
  const hostPortFor = (guestPort: number) => options.expose.find((mapping) => mapping.guestPort === guestPort)?.hostPort
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
      if (options.signal.aborted || exited) return {name, workspace, urls, vm, result, memoryMib}
      throw error
    }
  }
  return {name, workspace, urls, healthyMs, vm, result, memoryMib}
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
