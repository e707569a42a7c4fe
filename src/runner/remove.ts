/**
 * `rm`: an instance's record goes (its name is free again, `ps --all` no longer lists it); its
 * workspace stays unless asked for, and then only a workspace aegis-kit made itself.
 */
import {rm} from 'node:fs/promises'
import path from 'node:path'
import {AegisError} from '../errors.js'
import {type InstanceEntry, type InstanceRegistry, sessionWorkspaceDir, stopInstance} from './instances.js'
import {workspaceSecretsDir} from './kept-secrets.js'

export interface RemoveOptions {
  /** Stop it first if it runs (otherwise a running instance is an error). */
  force: boolean
  /** Also delete its workspace and the secrets generated for it. */
  workspace: boolean
  /** How long `--force` waits for a clean stop before killing. */
  stopTimeoutMs: number
}

export interface Removed {
  name: string
  /** It was running and was stopped first. */
  stopped: boolean
  /** The workspace deleted, when asked for. */
  workspaceRemoved?: string
  /** Instances it spawned through its guest API (and theirs), whose records went with it. */
  children: string[]
}

export async function removeInstance(
  registry: InstanceRegistry,
  dataDir: string,
  name: string,
  options: RemoveOptions,
): Promise<Removed> {
  const entry = await registry.get(name)
  if (entry.alive && !options.force)
    throw new AegisError(`${name} is running`, {hint: `stop it first (aegis-kit stop ${name}), or rm --force ${name}`})
  // A child's record names its parent: it goes with it, so no record is left pointing at nothing.
  const children = descendantsOf(name, await registry.list())
  const running = children.filter((child) => child.alive)
  if (running.length > 0 && !options.force)
    throw new AegisError(`${name}'s child instance ${running.map((child) => child.name).join(', ')} is running`, {
      hint: `stop it first, or rm --force ${name}`,
    })
  // Checked before anything is stopped or removed: a refused rm loses nothing.
  const workspace = options.workspace ? await removableWorkspace(registry, dataDir, entry) : undefined
  if (entry.alive) await stopInstance(registry, name, options.stopTimeoutMs)
  // Deepest first: a stopping parent stops its own children, but one may outlive it (its
  // supervisor killed), and is stopped here.
  for (const child of children.reverse()) {
    if ((await registry.read(child.name))?.alive) await stopInstance(registry, child.name, options.stopTimeoutMs)
    await registry.remove(child.name)
  }
  await registry.remove(name)
  if (workspace !== undefined) {
    await rm(workspace, {recursive: true, force: true})
    // Generated per-workspace secrets are keyed by the path: a new workspace there gets new ones.
    await rm(path.dirname(workspaceSecretsDir(dataDir, workspace, 'kit')), {recursive: true, force: true})
  }
  return {
    name,
    stopped: entry.alive,
    ...(workspace === undefined ? {} : {workspaceRemoved: workspace}),
    children: children.map((child) => child.name),
  }
}

/** Every instance spawned by `name` and by its children, parents before their children. */
function descendantsOf(name: string, entries: InstanceEntry[]): InstanceEntry[] {
  const found: InstanceEntry[] = []
  const visit = (parent: string) => {
    for (const entry of entries.filter((candidate) => candidate.parent === parent && !found.includes(candidate))) {
      found.push(entry)
      visit(entry.name)
    }
  }
  visit(name)
  return found
}

/**
 * The workspace `rm --workspace` may delete: one under the data directory's `workspaces/` (a
 * directory given with `run --workspace` is the user's, and stays), used by no other instance.
 */
async function removableWorkspace(
  registry: InstanceRegistry,
  dataDir: string,
  entry: InstanceEntry,
): Promise<string | undefined> {
  const workspace = entry.workspace
  if (workspace === undefined) return undefined
  const ours = path.join(dataDir, 'workspaces')
  if (entry.session !== undefined && workspace === sessionWorkspaceDir(dataDir, entry.session))
    throw new AegisError(
      `${entry.name}'s workspace ${workspace} is session ${entry.session}'s, shared by its instances; rm deletes only an instance's own`,
      {hint: `delete it yourself once the session is over`},
    )
  if (path.dirname(workspace) !== ours)
    throw new AegisError(
      `${entry.name}'s workspace ${workspace} was given with run --workspace; rm deletes only workspaces it made`,
      {
        hint: `delete it yourself if you mean to, or leave out --workspace`,
      },
    )
  const sharing = (await registry.list()).filter(
    (other) => other.name !== entry.name && other.alive && other.workspace === workspace,
  )
  if (sharing.length > 0)
    throw new AegisError(`${workspace} is in use by ${sharing.map((other) => other.name).join(', ')}`, {
      hint: 'stop those instances first, or leave out --workspace',
    })
  return workspace
}
