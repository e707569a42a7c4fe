/**
 * The checks a JSON Schema cannot express: unique ports, secrets referenced by profiles exist,
 * sizes parse and are positive, hook and image files exist inside the kit.
 */
import {type Stats, statSync} from 'node:fs'
import path from 'node:path'
import {isInside} from '../fs-util.js'
import {locate, type ManifestDocument} from './document.js'
import type {AegisKitManifest, Profile} from './manifest.generated.js'
import {formatPath, type PathSegment, type Problem} from './problems.js'
import {closest} from './suggest.js'
import {parseDuration, parseSize} from './units.js'

/** Records one problem at the field `segments` names. */
type Report = (segments: PathSegment[], message: string, hint: string, expected?: string) => void

export function semanticProblems(document: ManifestDocument, manifest: AegisKitManifest, kitDir: string): Problem[] {
  const problems: Problem[] = []
  const report: Report = (segments, message, hint, expected) =>
    problems.push({
      file: document.file,
      ...locate(document, segments),
      path: formatPath(segments),
      message,
      hint,
      expected,
    })

  const exposedPorts = checkExposedPorts(manifest, report)
  checkSecrets(manifest, report)
  checkSizes(manifest, report)
  checkDurations(manifest, report)
  checkHookAndImageFiles(manifest, kitDir, report)
  const secretNames = (manifest.secrets?.required ?? []).map((secret) => secret.name)
  for (const [name, profile] of Object.entries(manifest.profiles ?? {})) {
    checkProfileSecrets(name, profile, secretNames, report)
    checkProfilePorts(name, profile, exposedPorts, report)
  }
  return problems
}

/** Reports each port routing.expose lists twice; returns the exposed ports, each once, in order. */
function checkExposedPorts(manifest: AegisKitManifest, report: Report): number[] {
  return reportRepeats(
    manifest.routing?.expose ?? [],
    (entry) => entry.port,
    (entry, index, first) =>
      report(
        ['routing', 'expose', index, 'port'],
        `port ${entry.port} is exposed twice (also routing.expose[${first}])`,
        'list each port once',
      ),
  )
}

function checkSecrets(manifest: AegisKitManifest, report: Report): void {
  const secrets = manifest.secrets?.required ?? []
  reportRepeats(
    secrets,
    (secret) => secret.name,
    (secret, index, first) =>
      report(
        ['secrets', 'required', index, 'name'],
        `secret ${secret.name} is declared twice (also secrets.required[${first}])`,
        'declare each secret once',
      ),
  )
  secrets.forEach((secret, index) => {
    if (secret.generated && secret.user_provided) {
      report(
        ['secrets', 'required', index],
        `secret ${secret.name} is both generated and user_provided`,
        'keep one: aegis-kit generates it, or the user provides it',
      )
    }
    if (secret.name.startsWith('AEGIS_')) {
      report(
        ['secrets', 'required', index, 'name'],
        `secret name ${secret.name} uses the reserved AEGIS_ prefix`,
        'rename it; AEGIS_* variables are set by aegis-kit itself',
      )
    }
  })
}

/** Calls `repeated` for each item whose key an earlier item has; returns the keys, each once, in order. */
function reportRepeats<T, K>(
  items: T[],
  keyOf: (item: T) => K,
  repeated: (item: T, index: number, firstIndex: number) => void,
): K[] {
  const firstAt = new Map<K, number>()
  items.forEach((item, index) => {
    const first = firstAt.get(keyOf(item))
    if (first === undefined) firstAt.set(keyOf(item), index)
    else repeated(item, index, first)
  })
  return [...firstAt.keys()]
}

function checkSizes(manifest: AegisKitManifest, report: Report): void {
  const sizes: Array<[PathSegment[], string | undefined]> = [
    [['resources', 'memory'], manifest.resources?.memory],
    [['resources', 'disk'], manifest.resources?.disk],
  ]
  for (const [segments, value] of sizes) {
    if (value === undefined) continue
    const bytes = parseSize(value)
    if (bytes === undefined)
      report(segments, `size "${value}" does not parse`, 'write a number and a unit, e.g. 2048mb or 2gb')
    else if (bytes <= 0) report(segments, `size "${value}" must be greater than zero`, 'e.g. 2048mb')
  }
}

function checkDurations(manifest: AegisKitManifest, report: Report): void {
  const durations: Array<[PathSegment[], string | undefined]> = [
    [['policies', 'idle_timeout'], manifest.policies?.idle_timeout],
    [['hooks', 'timeout'], manifest.hooks?.timeout],
    [['healthcheck', 'interval'], manifest.healthcheck?.interval],
    [['healthcheck', 'timeout'], manifest.healthcheck?.timeout],
  ]
  for (const [segments, value] of durations) {
    if (value !== undefined && !(parseDuration(value)! > 0))
      report(segments, `duration "${value}" must be greater than zero`, 'e.g. 30s')
  }
}

function checkHookAndImageFiles(manifest: AegisKitManifest, kitDir: string, report: Report): void {
  for (const hook of ['render_env', 'validate_config', 'on_publish'] as const) {
    const file = manifest.hooks?.[hook]
    if (file !== undefined) checkKitFile(kitDir, file, ['hooks', hook], 'file', report)
  }
  for (const [index, entry] of (manifest.image?.files ?? []).entries()) {
    checkKitFile(kitDir, entry.src, ['image', 'files', index, 'src'], 'any', report)
  }
}

function checkProfileSecrets(name: string, profile: Profile, secretNames: string[], report: Report): void {
  profile.secrets?.forEach((secret, index) => {
    if (secretNames.includes(secret)) return
    const suggestion = closest(secret, secretNames)
    report(
      ['profiles', name, 'secrets', index],
      `profile "${name}" uses secret ${secret}, which the kit does not declare`,
      suggestion ? `did you mean ${suggestion}?` : 'declare it under secrets.required, or remove it from the profile',
      secretNames.length > 0 ? `one of ${secretNames.join(', ')}` : undefined,
    )
  })
}

function checkProfilePorts(name: string, profile: Profile, exposedPorts: number[], report: Report): void {
  const exposes = profile.exposes ?? []
  reportRepeats(
    exposes,
    (port) => port,
    (port, index) =>
      report(['profiles', name, 'exposes', index], `port ${port} is listed twice`, 'list each port once'),
  )
  exposes.forEach((port, index) => {
    if (!exposedPorts.includes(port)) {
      report(
        ['profiles', name, 'exposes', index],
        `profile "${name}" exposes port ${port}, which routing.expose does not declare`,
        'add it to routing.expose (with its protocol) or remove it here',
        exposedPorts.length > 0 ? `one of ${exposedPorts.join(', ')}` : undefined,
      )
    }
  })
}

function checkKitFile(
  kitDir: string,
  relative: string,
  segments: PathSegment[],
  kind: 'file' | 'any',
  report: Report,
): void {
  if (path.isAbsolute(relative)) {
    report(segments, `"${relative}" is an absolute path`, 'give a path relative to the kit directory')
    return
  }
  const resolved = path.resolve(kitDir, relative)
  if (!isInside(kitDir, resolved)) {
    report(
      segments,
      `"${relative}" points outside the kit directory`,
      'kits are published as a unit: keep every file inside the kit directory',
    )
    return
  }
  let info: Stats
  try {
    info = statSync(resolved)
  } catch {
    report(
      segments,
      `"${relative}" does not exist (looked for ${resolved})`,
      'create it or fix the path (relative to the kit directory)',
    )
    return
  }
  if (kind === 'file' && !info.isFile())
    report(segments, `"${relative}" is not a file`, 'a hook is a JavaScript module file (.mjs or .js)')
}
