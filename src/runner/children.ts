/**
 * An instance's children: instances it spawned through the guest API (POST /v1/instances), each
 * an ordinary detached instance (`ps`, `logs`, `exec`, `stop` work on it from the host) whose
 * record names its parent. The parent's supervisor starts each one as `run --detach` would, with
 * the child's token on a private pipe and the secrets it may pass in the child's environment,
 * checks every request against its own claims, and stops its children when it stops.
 */
import path from 'node:path'
import {messageOf} from '../errors.js'
import type {Kit} from '../kit/kit.js'
import type {Capabilities, Profile} from '../kit/manifest.generated.js'
import {parseDuration, sizeToMiB} from '../kit/units.js'
import {type CapabilityClaims, type CapabilityKey, childClaims, refuseSpawn} from './capabilities.js'
import {launchDetached} from './detach.js'
import {type InstanceEntry, type InstanceRegistry, stopInstance} from './instances.js'
import type {ExposeMapping} from './options.js'
import {freeHostPort} from './port-relay.js'

/** Aegis's child request (POST /v1/instances), with aegis-kit's `kit`, `profile` and `secrets`. */
export interface ChildRequest {
  handle: string
  command?: string[]
  kit?: string
  profile?: string
  image_ref?: string
  workspace?: string
  exposes?: number[]
  memory_mb?: number
  vcpus?: number
  env?: Record<string, string>
  secrets?: string[]
  capabilities?: Capabilities
}

/** An answer for the guest: an HTTP status and a JSON body. */
export interface Answer {
  status: number
  body: unknown
}

export interface ParentContext {
  name: string
  kit: Kit
  claims: CapabilityClaims
  key: CapabilityKey
  /** The secrets this instance holds, by name (what it may pass on, as its claims allow). */
  secrets: Record<string, string>
  registry: InstanceRegistry
  dataDir: string
  /** The parent's session (`run --session`): its children join it, under the child kit's cap. */
  session?: string
  onStatus: (message: string) => void
}

/** A child request that passed every check: who the child is and what it gets. */
interface ChildPlan {
  request: ChildRequest
  id: string
  kitName: string
  /** The parent's own kit (kit "self"); undefined: a kit named by reference. */
  kit: Kit | undefined
  profileName: string | undefined
  profile: Profile | undefined
  memoryMb: number
  vcpus: number
  exposes: number[]
  secrets: string[]
}

const HANDLE = /^[a-z0-9][a-z0-9_-]{0,30}$/
const WORKSPACE = /^[a-z0-9][a-z0-9_.-]{0,62}$/

export class Children {
  private readonly spawning = new Map<string, AbortController>()

  constructor(private readonly parent: ParentContext) {}

  /** Children of this instance, with their records (removed ones are gone). */
  async list(): Promise<InstanceEntry[]> {
    return (await this.parent.registry.list()).filter((entry) => entry.parent === this.parent.name)
  }

  /** The child `id`, or undefined when it is not one of this instance's. */
  async find(id: string): Promise<InstanceEntry | undefined> {
    if (!/^[a-z0-9][a-z0-9_.-]{0,62}$/.test(id)) return undefined
    const entry = await this.parent.registry.read(id)
    return entry?.parent === this.parent.name ? entry : undefined
  }

  async spawn(body: Record<string, unknown>): Promise<Answer> {
    const plan = await this.checkSpawn(body)
    if ('status' in plan) return plan
    const {parent} = this
    const ports = await Promise.all(
      plan.exposes.map(async (guestPort) => ({guestPort, hostPort: await freeHostPort()})),
    )
    const claims = childClaims(parent.claims, plan.id, plan.request.capabilities ?? plan.profile?.capabilities)
    return this.launch(plan, childArguments(plan, ports, parent), claims)
  }

  /** The request checked against the parent's kit, its claims and the secrets it holds: a plan, or the refusal. */
  private async checkSpawn(body: Record<string, unknown>): Promise<ChildPlan | Answer> {
    const request = checkRequest(body)
    if ('error' in request) return {status: 400, body: request}
    const {parent} = this
    const id = `${parent.name}.${request.handle}`
    if (id.length > 63) return {status: 400, body: {error: `handle ${request.handle} makes the name ${id} too long`}}
    const existing = await this.find(id)
    if (existing?.alive || this.spawning.has(id))
      return {status: 409, body: {error: `a child with handle ${request.handle} is running (${id})`}}
    const kitName = request.kit ?? 'self'
    const kit = kitName === 'self' ? parent.kit : undefined
    const profileName = request.profile
    const profile = profileName === undefined ? undefined : kit?.manifest.profiles?.[profileName]
    if (kit && profileName !== undefined && profile === undefined)
      return {status: 400, body: {error: `kit ${kit.manifest.name} has no profile ${profileName}`}}
    const memoryMb =
      request.memory_mb ??
      profile?.memory_mb ??
      (kit?.manifest.resources?.memory ? sizeToMiB(kit.manifest.resources.memory) : undefined) ??
      512
    const vcpus = request.vcpus ?? profile?.vcpus ?? kit?.manifest.resources?.cpu ?? 1
    const exposes = request.exposes ?? profile?.exposes ?? []
    const secrets = request.secrets ?? []
    // Children that hold resources: running, paused or stopped for idleness (an exited one holds none).
    const children = (await this.list()).filter((entry) => entry.alive).length + this.spawning.size
    const refused = refuseSpawn(
      parent.claims,
      {
        kit: kitName,
        profile: profileName,
        imageRef: request.image_ref,
        memoryMb,
        vcpus,
        secrets,
        exposes: exposes.length,
      },
      children,
    )
    if (refused) return {status: 403, body: {error: refused, limit: refused.split(':')[0]}}
    const missing = secrets.find((name) => parent.secrets[name] === undefined)
    if (missing !== undefined) return {status: 400, body: {error: `this instance holds no secret ${missing}`}}
    if (kit === undefined && request.image_ref !== undefined)
      return {status: 400, body: {error: 'image_ref is checked against the kit it names: give it with kit "self"'}}
    return {request, id, kitName, kit, profileName, profile, memoryMb, vcpus, exposes, secrets}
  }

  /** Starts the child as `run --detach` would, counted as spawning until it has started or failed. */
  private async launch(plan: ChildPlan, args: string[], claims: CapabilityClaims): Promise<Answer> {
    const {parent} = this
    const {id, kitName, profileName, secrets} = plan
    const controller = new AbortController()
    this.spawning.set(id, controller)
    const started = Date.now()
    try {
      parent.onStatus(
        `spawning ${id} (${kitName === 'self' ? parent.kit.manifest.name : kitName}${profileName ? `, profile ${profileName}` : ''})`,
      )
      await launchDetached({
        registry: parent.registry,
        name: id,
        args,
        signal: controller.signal,
        onStatus: () => undefined,
        env: Object.fromEntries(secrets.map((name) => [`AEGIS_KIT_CHILD_SECRET_${name}`, parent.secrets[name]!])),
        grant: {parent: parent.name, token: parent.key.seal(claims)},
      })
    } catch (error) {
      return {status: 502, body: {error: `${id} did not start: ${messageOf(error)}`}}
    } finally {
      this.spawning.delete(id)
    }
    parent.onStatus(`spawned ${id} in ${((Date.now() - started) / 1000).toFixed(1)}s`)
    const entry = await this.find(id)
    return {status: 201, body: entry ? describeChild(entry) : {id, handle: plan.request.handle, state: 'running'}}
  }

  async stop(id: string): Promise<Answer> {
    const entry = await this.find(id)
    if (!entry) return notFound(id)
    const after = await stopInstance(this.parent.registry, id, 30_000)
    return {status: 200, body: describeChild(after)}
  }

  async remove(id: string): Promise<Answer> {
    const entry = await this.find(id)
    if (!entry) return notFound(id)
    await stopInstance(this.parent.registry, id, 30_000)
    await this.parent.registry.remove(id)
    return {status: 200, body: {id, removed: true}}
  }

  /** Stops every child (the parent is stopping): their own children follow, each stopped by its own supervisor. */
  async stopAll(): Promise<void> {
    for (const controller of this.spawning.values()) controller.abort()
    const alive = (await this.list().catch(() => [])).filter((entry) => entry.alive)
    await Promise.all(
      alive.map((entry) => stopInstance(this.parent.registry, entry.name, 30_000).catch(() => undefined)),
    )
  }
}

/** A child as the guest API shows it (Aegis's instance fields, with aegis-kit's own). */
export function describeChild(entry: InstanceEntry): Record<string, unknown> {
  const state = !entry.alive ? 'stopped' : entry.status === 'starting' ? 'starting' : (entry.life ?? 'running')
  return {
    id: entry.name,
    handle: entry.name.slice(entry.name.lastIndexOf('.') + 1),
    state,
    kit: entry.kit,
    ...(entry.profile ? {profile: entry.profile} : {}),
    memory_mb: entry.memoryMib,
    vcpus: entry.vcpus,
    created_at: entry.startedAt,
    exposes: entry.ports.map((port) => ({
      guest_port: port.guestPort,
      public_port: port.hostPort,
      url: `http://127.0.0.1:${port.hostPort}`,
    })),
    ...(entry.alive ? {} : entry.exitCode === undefined ? {} : {exit_code: entry.exitCode}),
  }
}

/** The child's `run --detach` arguments: its kit, name, resources, ports, secrets, env and command. */
function childArguments(plan: ChildPlan, ports: ExposeMapping[], {dataDir, session}: ParentContext): string[] {
  const {request, kit, kitName, id, profileName, memoryMb, vcpus, secrets} = plan
  return [
    kit ? kit.dir : kitName,
    '--name',
    id,
    ...(profileName === undefined ? [] : ['--profile', profileName]),
    // Checked against allowed_images (checkSpawn); booted instead of the kit's own image.
    ...(request.image_ref === undefined ? [] : ['--image', request.image_ref]),
    '--memory',
    `${memoryMb}mb`,
    '--cpus',
    String(vcpus),
    ...ports.flatMap((port) => ['--expose', `${port.hostPort}:${port.guestPort}`]),
    ...secrets.flatMap((name) => ['--secret', `${name}=AEGIS_KIT_CHILD_SECRET_${name}`]),
    ...Object.entries(request.env ?? {}).flatMap(([name, value]) => ['--env', `${name}=${value}`]),
    ...(request.workspace === undefined ? [] : ['--workspace', path.join(dataDir, 'workspaces', request.workspace)]),
    ...(session === undefined ? [] : ['--session', session]),
    ...(request.command ? ['--', ...request.command] : []),
  ]
}

function notFound(id: string): Answer {
  return {status: 404, body: {error: `no child instance ${id} (GET /v1/instances lists them)`}}
}

/** The request's fields, checked for type and shape (the limits are the claims' job). */
function checkRequest(body: Record<string, unknown>): ChildRequest | {error: string} {
  const strings = (value: unknown): value is string[] =>
    Array.isArray(value) && value.every((item) => typeof item === 'string')
  const whole = (value: unknown): value is number => typeof value === 'number' && Number.isInteger(value) && value > 0
  if (typeof body.handle !== 'string' || !HANDLE.test(body.handle))
    return {
      error: 'handle must be lowercase letters, digits, "_" and "-" (at most 31), starting with a letter or digit',
    }
  if (body.command !== undefined && (!strings(body.command) || body.command.length === 0))
    return {error: 'command must be a non-empty array of strings'}
  for (const field of ['kit', 'profile', 'image_ref'] as const)
    if (body[field] !== undefined && typeof body[field] !== 'string') return {error: `${field} must be a string`}
  if (body.workspace !== undefined && (typeof body.workspace !== 'string' || !WORKSPACE.test(body.workspace)))
    return {
      error: 'workspace must be a name (lowercase letters, digits, ".", "_", "-"): a directory of aegis-kit\'s own',
    }
  if (body.exposes !== undefined && !(Array.isArray(body.exposes) && body.exposes.every((p) => whole(p) && p <= 65535)))
    return {error: 'exposes must be an array of guest ports (1-65535)'}
  for (const field of ['memory_mb', 'vcpus'] as const)
    if (body[field] !== undefined && !whole(body[field])) return {error: `${field} must be a whole number above 0`}
  if (body.secrets !== undefined && !strings(body.secrets)) return {error: 'secrets must be an array of secret names'}
  if (body.env !== undefined) {
    const env = body.env
    if (typeof env !== 'object' || env === null || Array.isArray(env)) return {error: 'env must be an object'}
    for (const [name, value] of Object.entries(env)) {
      if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || typeof value !== 'string')
        return {error: `env ${name}: names are [A-Za-z_][A-Za-z0-9_]*, values strings`}
    }
  }
  if (body.capabilities !== undefined) {
    const capabilities = body.capabilities
    if (typeof capabilities !== 'object' || capabilities === null || Array.isArray(capabilities))
      return {error: 'capabilities must be an object'}
    const wrong = checkCapabilities(capabilities as Record<string, unknown>)
    if (wrong) return {error: wrong}
  }
  return body as unknown as ChildRequest
}

/** A request's own `capabilities`, as the schema types them: a wrong type must not slip past a limit. */
function checkCapabilities(value: Record<string, unknown>): string | undefined {
  for (const [claim, item] of Object.entries(value)) {
    if (claim === 'spawn') {
      if (typeof item !== 'boolean') return 'capabilities.spawn must be true or false'
    } else if (['spawn_depth', 'max_children', 'max_memory_mb', 'max_vcpus', 'max_expose_ports'].includes(claim)) {
      if (typeof item !== 'number' || !Number.isInteger(item) || item < 0)
        return `capabilities.${claim} must be a whole number`
    } else if (['allowed_kits', 'allowed_profiles', 'allowed_images', 'allowed_secrets'].includes(claim)) {
      if (!Array.isArray(item) || !item.every((entry) => typeof entry === 'string'))
        return `capabilities.${claim} must be an array of strings`
    } else if (claim === 'ttl') {
      if (typeof item !== 'string' || parseDuration(item) === undefined) return 'capabilities.ttl must be a duration'
    } else return `capabilities.${claim} is not a claim`
  }
  return undefined
}
