/**
 * Installs the kit's npm packages globally into a staging prefix with the kit's own Node (the
 * host's npm CLI, run by that Node), the way they will sit in the image. Install scripts are
 * deliberate: none run unless `allow_scripts` names the package (npm 11's allow-list). For
 * another platform than the host's they run afterwards, with that platform's Node (target-node.ts).
 */
import {realpathSync} from 'node:fs'
import {readdir, readFile, rm, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {AegisError} from '../errors.js'
import type {NpmPackages} from '../kit/manifest.generated.js'
import {fromPlatform, toNodeArch} from '../oci/platform.js'
import type {PackageRecord} from './layer-cache.js'
import type {TargetNode} from './target-node.js'
import {runTool} from './tools.js'

/** Where the packages go in the image unless the kit sets image.npm.prefix. */
export const NPM_PREFIX = '/opt/aegis/npm'

/** The host's npm CLI script, so any Node can run it. */
export function hostNpmCli(): string {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    try {
      const resolved = realpathSync(path.join(dir, 'npm'))
      if (resolved.endsWith('npm-cli.js')) return resolved
      const sibling = path.join(path.dirname(resolved), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js')
      return realpathSync(sibling)
    } catch {
      // not in this PATH entry
    }
  }
  throw new AegisError('npm was not found on PATH', {
    hint: "install Node.js with npm (the build uses npm to install the kit's packages)",
  })
}

export async function npmVersion(npmCli: string, node: string): Promise<string> {
  return (await runTool(node, [npmCli, '--version'])).trim()
}

/**
 * What every npm call of the build passes: the global prefix in the image, quiet output, and the
 * image's platform, so native modules' optional binaries are the image's, not the host's.
 */
function prefixAndPlatform(prefix: string, platform: string): string[] {
  const cpu = toNodeArch(fromPlatform(platform))
  return [
    '--global',
    '--prefix',
    prefix,
    '--no-audit',
    '--no-fund',
    '--no-update-notifier',
    '--loglevel=warn',
    '--os=linux',
    `--cpu=${cpu}`,
  ]
}

/** `scripts: 'later'`: none run now (they run with the target's Node, see rebuildArgs). */
export function installArgs(
  npm: NpmPackages,
  prefix: string,
  platform: string,
  npmMajor: number,
  scripts: 'now' | 'later' = 'now',
): string[] {
  const allow = npm.allow_scripts ?? []
  if (allow.length > 0 && npmMajor < 11) {
    throw new AegisError(`image.npm.allow_scripts needs npm 11 or newer (this machine has npm ${npmMajor})`, {
      hint: 'upgrade npm (npm install -g npm@11), or empty allow_scripts',
    })
  }
  return [
    'install',
    ...prefixAndPlatform(prefix, platform),
    '--omit=dev',
    ...(allow.length > 0 && scripts === 'now' ? [`--allow-scripts=${allow.join(',')}`] : ['--ignore-scripts']),
    ...npm.packages,
  ]
}

/** Runs the allowed packages' install scripts (preinstall, install, postinstall) in an installed prefix. */
export function rebuildArgs(npm: NpmPackages, prefix: string, platform: string): string[] {
  const allow = npm.allow_scripts ?? []
  return [
    'rebuild',
    // The platform is exported to the scripts' environment: an `npm install` they run picks the same one.
    ...prefixAndPlatform(prefix, platform),
    `--allow-scripts=${allow.join(',')}`,
    ...allow,
  ]
}

export interface InstallOptions {
  prefix: string
  /** The host's build of the kit's Node: it runs npm. */
  node: string
  platform: string
  cacheDir: string
  /**
   * The image's own Node, for a platform other than the host's: the allowed install scripts run
   * with it (after an install that runs none), so they see the image's `process.arch`.
   */
  target?: TargetNode
  onLine?: (line: string) => void
}

export async function installNpmPackages(npm: NpmPackages, options: InstallOptions): Promise<PackageRecord[]> {
  const cli = hostNpmCli()
  const major = Number((await npmVersion(cli, options.node)).split('.')[0])
  const env = (node: string) => ({
    // This Node first on PATH: npm's scripts, and the `node`/`npm` they start, run with it.
    PATH: `${path.dirname(node)}:${process.env.PATH ?? ''}`,
    npm_config_cache: path.join(options.cacheDir, 'npm-cache'),
    npm_config_update_notifier: 'false',
  })
  const deferred = options.target !== undefined && (npm.allow_scripts ?? []).length > 0
  await runTool(
    options.node,
    [cli, ...installArgs(npm, options.prefix, options.platform, major, deferred ? 'later' : 'now')],
    {
      env: env(options.node),
      hint: 'check the package names and versions in image.npm.packages (npm view NAME versions)',
      onLine: options.onLine,
    },
  )
  if (deferred) {
    const target = options.target!
    // npm's own JS runs on the emulated Node too: a script reading process.execPath or $NODE
    // (node-gyp, prebuild-install) gets the target's.
    await runTool(target.node, [cli, ...rebuildArgs(npm, options.prefix, options.platform)], {
      env: {...env(target.node), ...target.env},
      hint: `the install scripts of ${(npm.allow_scripts ?? []).join(', ')} failed when run with the ${toNodeArch(fromPlatform(options.platform))} Node under emulation; see the output above`,
      onLine: options.onLine,
    })
  }
  for (const removed of await pruneForeignPackages(options.prefix, options.platform))
    options.onLine?.(`removed ${removed}`)
  return installedPackages(options.prefix)
}

/** npm's rule for a package.json `os`/`cpu` list: `!value` excludes, and a list of plain values must hold the value. */
function allows(list: unknown, value: string): boolean {
  if (!Array.isArray(list) || list.length === 0) return true
  const entries = list.filter((entry): entry is string => typeof entry === 'string')
  if (entries.includes(`!${value}`)) return false
  const positive = entries.filter((entry) => !entry.startsWith('!'))
  return positive.length === 0 || positive.includes(value)
}

/**
 * Removes packages that declare another os or cpu than the image's (e.g. a Linux x64 binding in
 * an arm64 image). npm does not install them for that platform, but an allowed install script
 * may fetch a binding's build for whichever Node runs it: a safety net, now that a foreign
 * platform's scripts run with the image's own Node. They could never load in the image.
 * Returns what it removed.
 */
export async function pruneForeignPackages(prefix: string, platform: string): Promise<string[]> {
  const cpu = toNodeArch(fromPlatform(platform))
  const removed: string[] = []
  const visit = async (modulesDir: string): Promise<void> => {
    for (const name of (await readdir(modulesDir).catch(() => [] as string[])).sort()) {
      if (name.startsWith('.')) continue
      const dirs = name.startsWith('@')
        ? (await readdir(path.join(modulesDir, name)).catch(() => [] as string[]))
            .sort()
            .map((scoped) => path.join(modulesDir, name, scoped))
        : [path.join(modulesDir, name)]
      for (const dir of dirs) {
        let info: {name?: string; version?: string; os?: unknown; cpu?: unknown}
        try {
          info = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8')) as typeof info
        } catch {
          continue
        }
        if (allows(info.os, 'linux') && allows(info.cpu, cpu)) {
          await visit(path.join(dir, 'node_modules'))
        } else {
          await rm(dir, {recursive: true, force: true})
          removed.push(
            `${info.name ?? path.basename(dir)}@${info.version ?? '?'} (${path.relative(prefix, dir)}: built for another platform than ${platform})`,
          )
        }
      }
    }
  }
  await visit(path.join(prefix, 'lib', 'node_modules'))
  return removed
}

/** Every package npm placed (walking node_modules: a global install keeps no lockfile), for the SBOM. */
export async function installedPackages(prefix: string): Promise<PackageRecord[]> {
  const records = new Map<string, PackageRecord>()
  const visit = async (modulesDir: string): Promise<void> => {
    const names = await readdir(modulesDir).catch(() => [] as string[])
    for (const name of names.sort()) {
      if (name.startsWith('.')) continue
      if (name.startsWith('@')) {
        for (const scoped of (await readdir(path.join(modulesDir, name)).catch(() => [] as string[])).sort())
          await visitPackage(path.join(modulesDir, name, scoped))
      } else {
        await visitPackage(path.join(modulesDir, name))
      }
    }
  }
  const visitPackage = async (dir: string): Promise<void> => {
    try {
      const info = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8')) as {
        name?: string
        version?: string
        license?: unknown
      }
      if (info.name && info.version) {
        records.set(`${info.name}@${info.version}`, {
          kind: 'npm',
          name: info.name,
          version: info.version,
          ...(typeof info.license === 'string' ? {license: info.license} : {}),
        })
      }
    } catch {
      return
    }
    await visit(path.join(dir, 'node_modules'))
  }
  await visit(path.join(prefix, 'lib', 'node_modules'))
  return [...records.values()].sort((a, b) =>
    a.name === b.name ? (a.version < b.version ? -1 : 1) : a.name < b.name ? -1 : 1,
  )
}

export type NpmPatch = NonNullable<NpmPackages['patches']>[number]

/**
 * Applies the kit's patches to the installed packages under `prefix`. Every `find` must occur
 * exactly once in every file its glob matches, and the glob must match: an upstream change
 * makes the build fail loudly instead of shipping an unpatched image.
 */
export async function applyNpmPatches(prefix: string, patches: NpmPatch[]): Promise<string[]> {
  const applied: string[] = []
  for (const patch of patches) {
    const packageDir = path.join(prefix, 'lib', 'node_modules', patch.package)
    const files = await globInside(packageDir, patch.file)
    if (files.length === 0)
      throw new AegisError(`patch for ${patch.package}: no file matches ${patch.file}`, {
        hint: 'the package changed: update or drop the patch in image.npm.patches',
      })
    for (const file of files) {
      const text = await readFile(file, 'utf8')
      const count = text.split(patch.find).length - 1
      if (count !== 1) {
        throw new AegisError(
          `patch for ${patch.package}: "${patch.find.slice(0, 60)}" occurs ${count} times in ${path.relative(packageDir, file)}, not once`,
          {hint: 'the package changed: update or drop the patch in image.npm.patches'},
        )
      }
      await writeFile(
        file,
        text.replace(patch.find, () => patch.replace),
      )
      applied.push(`${patch.package}/${path.relative(packageDir, file)}: ${patch.reason}`)
    }
  }
  return applied
}

/** Files under `root` matching a relative pattern whose `*` stays within one path segment. */
async function globInside(root: string, pattern: string): Promise<string[]> {
  const segments = pattern.split('/')
  let matches = [root]
  for (const segment of segments) {
    const regex = new RegExp(
      `^${segment
        .split('*')
        .map((part) => part.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
        .join('[^/]*')}$`,
    )
    const next: string[] = []
    for (const dir of matches) {
      for (const name of await readdir(dir).catch(() => [] as string[]))
        if (regex.test(name)) next.push(path.join(dir, name))
    }
    matches = next.sort()
  }
  return matches
}
