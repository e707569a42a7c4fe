import {Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {formatAge, renderTable} from '../cli/format.js'
import {InstanceRegistry, type InstanceEntry} from '../runner/instances.js'
import {defaultDataDir} from '../paths.js'
import type {LifeStatus} from '../runner/lifecycle.js'
import {callSupervisor} from '../runner/supervisor-api.js'

export default class Ps extends BaseCommand {
  static override summary = 'List the kit instances on this machine.'
  static override description =
    `Shows the instances started with \`aegis-kit run\` (in the foreground or with --detach) that
are still running: name, kit, status (starting, running, healthy, paused, or stopped: its VM gone
until the next connection boots it; with the idle time, restarts and any lease that keeps it
awake), the process that owns the VM,
the ports exposed on 127.0.0.1 and the UI URLs (without their token); an instance spawned through
another's guest API is listed under it, with its PARENT; --json adds \`state\` (one of
starting, running, paused, stopped, exited), memory, vCPUs, the accelerator (kvm or tcg), the
workspace and the live idle status. --all adds the instances that have exited, with how they
ended (\`lost\` when their supervisor was killed before it could say).`

  static override examples = [
    {description: 'List running instances', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'Include exited instances, as JSON', command: '<%= config.bin %> <%= command.id %> --all --json'},
  ]

  static override enableJsonFlag = true

  static override flags = {
    all: Flags.boolean({char: 'a', description: 'Also list instances that have exited.'}),
  }

  async run(): Promise<{instances: ListedInstance[]}> {
    const {flags} = await this.parse(Ps)
    const entries = (await InstanceRegistry.forDataDir(defaultDataDir()).list()).filter(
      (entry) => flags.all || entry.alive,
    )
    const instances = await Promise.all(entries.map(withLife))
    if (this.jsonEnabled()) return {instances}
    if (instances.length === 0) {
      this.log(flags.all ? 'No instances.' : 'No running instances (aegis-kit ps --all shows exited ones).')
      return {instances}
    }
    const tree = instances.some((entry) => entry.parent !== undefined)
    this.log(
      renderTable(
        // The PARENT column only when an instance has one (spawned through another's guest API).
        ['NAME', 'KIT', ...(tree ? ['PARENT'] : []), 'STATUS', 'PID', 'PORTS', 'STARTED', 'URL'],
        inTreeOrder(instances).map((entry) => [
          entry.parent === undefined ? entry.name : `${'  '.repeat(depthOf(entry, instances))}└ ${entry.name}`,
          entry.kit,
          ...(tree ? [entry.parent ?? '-'] : []),
          describeStatus(entry),
          entry.alive ? String(entry.pid) : '-',
          entry.ports.map((port) => `127.0.0.1:${port.hostPort}->${port.guestPort}`).join(',') || '-',
          formatAge(entry.startedAt),
          entry.urls[0]?.url ?? '-',
        ]),
      ),
    )
    return {instances}
  }
}

/**
 * An instance with what its supervisor says of its life now (paused, idle time, leases), and its
 * state in one word: starting, running, paused, stopped (its VM gone until a connection) or exited.
 */
type ListedInstance = InstanceEntry & {state: InstanceLifeWord; lifeNow?: LifeStatus}
type InstanceLifeWord = 'starting' | 'running' | 'paused' | 'stopped' | 'exited'

async function withLife(entry: InstanceEntry): Promise<ListedInstance> {
  if (!entry.alive || entry.apiSocket === undefined) return {...entry, state: stateOf(entry)}
  // A supervisor busy booting may not answer at once; the record alone is shown then.
  const lifeNow = await callSupervisor(entry.apiSocket, entry.name, 'GET', '/v1/status', undefined, 2000).catch(
    () => undefined,
  )
  return lifeNow ? {...entry, state: stateOf(entry, lifeNow), lifeNow} : {...entry, state: stateOf(entry)}
}

function stateOf(entry: InstanceEntry, lifeNow?: LifeStatus): InstanceLifeWord {
  if (entry.status === 'exited' || !entry.alive) return 'exited'
  if (entry.status === 'starting') return 'starting'
  return lifeNow?.state ?? entry.life ?? 'running'
}

function describeStatus(entry: ListedInstance): string {
  // The owner died without recording an end (SIGKILL, reboot).
  if (entry.lost) return 'exited (supervisor killed)'
  if (entry.status === 'exited') return `exited (${entry.exitCode ?? '?'})`
  const life = entry.lifeNow
  const state = life?.state ?? entry.life
  // A sleeping instance says so; an awake one says how far it got (running, healthy).
  const parts: string[] = [state === 'paused' || state === 'stopped' ? state : entry.status]
  const restarts = life?.restarts ?? entry.restarts ?? 0
  if (restarts > 0) parts.push(`${restarts} restart${restarts === 1 ? '' : 's'}`)
  if (life && life.state === 'running' && life.rules.idlePausing && life.idleMs >= 1000)
    parts.push(`idle ${Math.round(life.idleMs / 1000)}s`)
  for (const lease of life?.leases ?? []) parts.push(`lease ${lease.id} ${Math.ceil(lease.expiresInMs / 1000)}s`)
  if (entry.detached) parts.push('detached')
  return parts.join(', ')
}

/** Each instance followed by the children it spawned (guest API), theirs after them. */
function inTreeOrder<T extends InstanceEntry>(instances: T[]): T[] {
  const names = new Set(instances.map((entry) => entry.name))
  const ordered: T[] = []
  const visit = (entry: T) => {
    ordered.push(entry)
    for (const child of instances) if (child.parent === entry.name) visit(child)
  }
  // Roots: no parent, or a parent no longer listed (removed, or exited and not asked for).
  for (const entry of instances) if (entry.parent === undefined || !names.has(entry.parent)) visit(entry)
  return ordered
}

function depthOf(entry: InstanceEntry, instances: InstanceEntry[]): number {
  let depth = 0
  let parent = entry.parent
  while (parent !== undefined && depth < 16) {
    const found = instances.find((candidate) => candidate.name === parent)
    if (!found) break
    depth++
    parent = found.parent
  }
  return Math.max(depth - 1, 0)
}
