/**
 * A kit on disk: where `KIT` points (a kit name, a directory or a manifest file), its parsed
 * manifest, and the full validation (syntax, schema, semantic checks) every command relies on.
 */
import {existsSync, readdirSync, statSync} from 'node:fs'
import path from 'node:path'
import {AegisError} from '../errors.js'
import {bundledKitsDir} from '../paths.js'
import {semanticProblems} from './checks.js'
import {readManifestDocument} from './document.js'
import type {AegisKitManifest} from './manifest.generated.js'
import {formatProblem, sortProblems, type Problem} from './problems.js'
import {findPulledKit} from './pulled.js'
import {schemaProblems} from './schema.js'
import {unhonouredFieldWarnings, type UnhonouredFieldWarning} from './unhonoured.js'

export const MANIFEST_NAMES = ['aegis-kit.yaml', 'aegis-kit.yml'] as const

export interface KitLocation {
  /** Absolute kit directory (where hooks and files are resolved). */
  dir: string
  /** Absolute manifest path. */
  manifestFile: string
  /** The manifest path as shown to the user (relative to the working directory when inside it). */
  displayFile: string
}

export interface Kit extends KitLocation {
  manifest: AegisKitManifest
  /** Fields the manifest sets that aegis-kit does not act on yet (commands print them). */
  warnings: UnhonouredFieldWarning[]
}

export interface KitValidation {
  location: KitLocation
  problems: Problem[]
  /** Present when there are no problems. */
  manifest?: AegisKitManifest
  /** Fields set but not acted on yet; empty when the YAML could not be read. */
  warnings: UnhonouredFieldWarning[]
}

/** Problems in a kit, bundled into one error for commands that need a valid kit. */
export class InvalidKitError extends AegisError {
  constructor(
    readonly problems: Problem[],
    location: KitLocation,
  ) {
    const shown = problems.slice(0, 10).map(formatProblem).join('\n')
    const more =
      problems.length > 10 ? `\n(${problems.length - 10} more: run \`aegis-kit validate ${location.displayFile}\`)` : ''
    super(
      `${location.displayFile} is not a valid kit (${problems.length} problem${problems.length === 1 ? '' : 's'}):\n${shown}${more}`,
    )
  }
}

/**
 * KIT may be a manifest file, a kit directory, a kit name looked up in `./kits/NAME` and then
 * among the kits bundled with aegis-kit, or a reference the kit was pulled as (`aegis-kit pull`).
 * No argument means the current directory.
 */
export function locateKit(kit: string | undefined, cwd = process.cwd()): KitLocation {
  const candidates: string[] = []
  const target = kit ?? '.'
  const direct = path.resolve(cwd, target)
  const looksLikeName = /^[a-z0-9][a-z0-9-]*$/.test(target)
  // A bare name that happens to match an unrelated directory (say /tmp/openclaw, OpenClaw's log
  // directory) still means the kit of that name.
  if (existsSync(direct) && !(looksLikeName && !isKitPath(direct))) return fromPath(direct, cwd, target)
  candidates.push(direct)
  if (looksLikeName) {
    for (const root of [path.join(cwd, 'kits'), bundledKitsDir]) {
      const dir = path.join(root, target)
      if (existsSync(dir)) return fromPath(dir, cwd, target)
      if (!candidates.includes(dir)) candidates.push(dir)
    }
  }
  const pulled = findPulledKit(target)
  if (pulled) return fromPath(pulled, cwd, target)
  throw new AegisError(`no kit "${target}": nothing at ${candidates.join(', ')}, and no pulled kit of that reference`, {
    hint: `give a kit directory, an aegis-kit.yaml, a kit name (bundled: ${bundledKitNames().join(', ') || 'none'}) or a reference from \`aegis-kit pull\`; \`aegis-kit init ${target}\` creates one`,
  })
}

function isKitPath(candidate: string): boolean {
  const info = statSync(candidate)
  return info.isFile() || MANIFEST_NAMES.some((name) => existsSync(path.join(candidate, name)))
}

function fromPath(found: string, cwd: string, asGiven: string): KitLocation {
  const info = statSync(found)
  let manifestFile = found
  if (info.isDirectory()) {
    const name = MANIFEST_NAMES.find((candidate) => existsSync(path.join(found, candidate)))
    if (!name) {
      throw new AegisError(`${asGiven}: no aegis-kit.yaml in ${found}`, {
        hint: 'a kit directory holds an aegis-kit.yaml; `aegis-kit init NAME` writes one',
      })
    }
    manifestFile = path.join(found, name)
  } else if (!info.isFile()) {
    throw new AegisError(`${asGiven} is not a file or directory`)
  }
  const relative = path.relative(cwd, manifestFile)
  const displayFile = relative.startsWith('..') || path.isAbsolute(relative) ? manifestFile : relative
  return {dir: path.dirname(manifestFile), manifestFile, displayFile}
}

export function bundledKitNames(): string[] {
  try {
    return readdirSync(bundledKitsDir)
      .filter((name) => existsSync(path.join(bundledKitsDir, name, 'aegis-kit.yaml')))
      .sort()
  } catch {
    return []
  }
}

export async function validateKit(kit: string | undefined, cwd = process.cwd()): Promise<KitValidation> {
  const location = locateKit(kit, cwd)
  const parsed = await readManifestDocument(location.manifestFile)
  if (!parsed.ok) return {location, problems: withDisplayFile(parsed.problems, location), warnings: []}
  const document = {...parsed.document, file: location.displayFile}
  const warnings = unhonouredFieldWarnings(document)
  const problems = schemaProblems(document)
  if (problems.length > 0) return {location, problems: sortProblems(problems), warnings}
  const manifest = document.data as AegisKitManifest
  const semantic = semanticProblems(document, manifest, location.dir)
  if (semantic.length > 0) return {location, problems: sortProblems(semantic), warnings}
  return {location, problems: [], manifest, warnings}
}

/** A valid kit, or an InvalidKitError listing its problems. */
export async function loadKit(kit: string | undefined, cwd = process.cwd()): Promise<Kit> {
  const result = await validateKit(kit, cwd)
  if (!result.manifest) throw new InvalidKitError(result.problems, result.location)
  return {...result.location, manifest: result.manifest, warnings: result.warnings}
}

function withDisplayFile(problems: Problem[], location: KitLocation): Problem[] {
  return problems.map((problem) => ({...problem, file: location.displayFile}))
}
