/**
 * `aegis-kit build`: bakes a kit's image recipe into the local store, one cached layer per
 * concern (base, Node runtime, npm packages, kit files, aegis runtime), then an image config and
 * manifest whose digests depend only on those inputs (`created` is the kit's own time, see
 * source-date.ts, never now).
 */
import {createHash} from 'node:crypto'
import {createReadStream, statSync} from 'node:fs'
import {mkdir, readFile, readdir, rm, stat} from 'node:fs/promises'
import path from 'node:path'
import {AegisError} from '../errors.js'
import type {LayerCompression, LayerWriter} from '../image/layer-writer.js'
import type {Kit} from '../kit/kit.js'
import {kitImageReference, pulledKitsRoot} from '../kit/pulled.js'
import {
  ARCHITECTURES,
  fromPlatform,
  hostArchitecture,
  isHostPlatform,
  toNodePackage,
  toPlatformName,
} from '../oci/platform.js'
import {artifactManifest, emptyConfig, imageIndex, jsonBlob, type Blob} from '../oci/artifact.js'
import {parsePlatform} from '../oci/manifest.js'
import {Annotation, MediaType} from '../oci/media-types.js'
import type {Descriptor, ImageConfig, ImageManifest, Platform} from '../oci/types.js'
import type {LocalStore} from '../store/index.js'
import {ownedTempName, sweepStaleTempDirs} from '../store/owned-temp.js'
import {isRegistryReference, loadBaseImage, type BaseImage} from './base-image.js'
import {buildDebianRoot} from './debian-base.js'
import {cacheKey, LayerCache, type CachedLayer, type PackageRecord} from './layer-cache.js'
import {LockState, type DebPackage} from './lock.js'
import {fetchNodeRuntime, NODE_HOME} from './node-runtime.js'
import {applyNpmPatches, installNpmPackages, NPM_PREFIX} from './npm-packages.js'
import {spdxDocument} from './sbom.js'
import {kitSourceDate, type SourceDate, type SourceDateOrigin} from './source-date.js'
import {prepareTargetNode} from './target-node.js'

/** What `build` can make: the Debian archive's and the Node packages' architectures. */
export const SUPPORTED_PLATFORMS = ARCHITECTURES.map(toPlatformName)

const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
const TOOL = 'aegis-kit'

export type BuildEvent =
  | {type: 'step'; platform: string; step: string; index: number; total: number; detail: string}
  | {
      type: 'layer'
      platform: string
      step: string
      cached: boolean
      digest: string
      size: number
      uncompressedSize: number
      ms: number
    }
  | {type: 'log'; platform: string; step: string; line: string}
  | {type: 'warning'; platform: string; step: string; message: string}

export interface BuildOptions {
  store: LocalStore
  /** Build cache and downloads (layer records, Node runtimes, npm cache). */
  cacheDir: string
  /** Tag in the store (default: see kitImageReference). */
  tag?: string
  noCache?: boolean
  /** Resolve the base again (the archive's current Debian packages, the tag's current digest) and rewrite the kit's lock. */
  updateLock?: boolean
  /** Fail instead of updating the lock when the base cannot be built as locked (for CI and releases). */
  locked?: boolean
  compression?: LayerCompression
  platforms?: string[]
  /**
   * Seconds; clamps every mtime and is the image's `created`. Without it mtimes are clamped to 0
   * and `created` is the kit's last commit or newest file (source-date.ts): a commit does not
   * rebuild every cached layer, and the image still says when its kit was made.
   */
  sourceDateEpoch?: number
  onEvent?: (event: BuildEvent) => void
  signal?: AbortSignal
  /**
   * Awaited before any work that costs (a layer to produce, a registry base to load); cached
   * steps go on without it. `run` passes its config check, so a cached image boots meanwhile
   * and a bad config still costs no build.
   */
  beforeWork?: () => Promise<void>
}

export interface BuiltLayer {
  step: string
  digest: string
  size: number
  uncompressedSize: number
  cached: boolean
  ms: number
}

export interface BuiltPlatform {
  platform: string
  manifest: Descriptor
  config: Descriptor
  layers: BuiltLayer[]
  sbom: Descriptor
  packages: {deb: number; npm: number}
}

export interface BuildResult {
  reference: string
  digest: string
  mediaType: string
  size: number
  platforms: BuiltPlatform[]
  ms: number
  /** The kit's lock file, when this build wrote it (first build, a changed base, --update-lock). */
  lockWritten?: string
  /** The image's `created` (ISO 8601) and where that time came from. */
  created: string
  createdFrom: SourceDateOrigin
}

interface LayerStep {
  step: string
  detail: string
  /** The inputs the layer is cached by; undefined when the step must run (resolving the lock). */
  key: Record<string, unknown> | undefined
  /** The inputs to cache the layer under once its contents are known (the lock they make). */
  keyAfter?(contents: PackageRecord[]): Record<string, unknown>
  produce(writer: LayerWriter, scratch: string): Promise<PackageRecord[] | void>
  /** Sees the layer's contents, cached or produced. */
  done?(contents: PackageRecord[]): void
}

/** How a build refers to the kit's lock in messages. */
interface LockContext {
  state: LockState
  updateLock: boolean
  /** --locked: a lock the archive cannot honour fails the build. */
  strict: boolean
  /** The command that rewrites it, for hints. */
  updateLockHint: string
}

export async function buildKit(kit: Kit, options: BuildOptions): Promise<BuildResult> {
  const started = Date.now()
  const image = kit.manifest.image
  if (!image)
    throw new AegisError(`kit ${kit.manifest.name} has no image recipe`, {
      hint: `add an image: section with at least base: to ${kit.displayFile}`,
    })
  const platforms = options.platforms ?? image.platforms ?? [toPlatformName(hostArchitecture())]
  if (platforms.length === 0)
    throw new AegisError('no platform to build', {
      hint: `give --platform ${SUPPORTED_PLATFORMS.join(',')} or a part of it`,
    })
  for (const platform of platforms) {
    if (!SUPPORTED_PLATFORMS.includes(platform))
      throw new AegisError(`cannot build for ${platform}`, {hint: `platforms are ${SUPPORTED_PLATFORMS.join(' and ')}`})
  }
  if (new Set(platforms).size !== platforms.length)
    throw new AegisError(`a platform is listed twice: ${platforms.join(',')}`)
  const epoch = options.sourceDateEpoch ?? 0
  const sourceDate: Promise<SourceDate> =
    options.sourceDateEpoch === undefined ? kitSourceDate(kit.dir) : Promise.resolve({epoch, from: 'SOURCE_DATE_EPOCH'})
  // Asked of git alongside the layers' cache lookups and awaited for the config; a build that
  // fails before then must not leave its rejection unhandled.
  sourceDate.catch(() => undefined)
  const reference =
    options.tag === undefined ? kitImageReference(kit, options.store.root) : `${kit.manifest.name}:${options.tag}`
  const store = options.store
  await sweepKilledBuilds(options)
  const cache = new LayerCache(path.join(options.cacheDir, 'layers'), store)
  const kitShown = path.dirname(kit.displayFile)
  const lock: LockContext = {
    state: await LockState.load(kit.dir, kitShown, image.base),
    updateLock: options.updateLock ?? false,
    strict: options.locked ?? false,
    updateLockHint: `aegis-kit build ${kitShown} --update-lock`,
  }

  // One lease over both steps: the layers are in the store, unreferenced, until the tag.
  return store.withWriteLease(async () => {
    const image = await buildImage(kit, platforms, {reference, epoch, sourceDate, cache, lock}, options)
    // Only a build that got this far records what it resolved: a failed one leaves the lock as it was.
    const lockWritten = (await lock.state.save()) ? lock.state.displayFile : undefined
    await storeBuiltImage(store, image)
    const {epoch: createdEpoch, from} = await sourceDate
    return {
      reference,
      digest: image.root.digest,
      mediaType: image.root.mediaType,
      size: image.platforms.reduce((sum, p) => sum + p.layers.reduce((s, l) => s + l.size, 0), 0),
      platforms: image.platforms,
      ms: Date.now() - started,
      ...(lockWritten ? {lockWritten} : {}),
      created: isoTime(createdEpoch),
      createdFrom: from,
    }
  })
}

/**
 * A built image as a value (ko's build, before its publish): the config, manifest, SBOM and index
 * blobs, held in memory, over layers that the layer steps put in the store's content (cached or
 * produced) but that nothing references yet. storeBuiltImage files it; until then a prune may
 * take the layers, so both run under one write lease.
 */
export interface BuiltImage {
  reference: string
  /** The manifest (one platform) or index (several) the tag names. */
  root: Descriptor
  platforms: BuiltPlatform[]
  /** In the order they are stored: each blob after the blobs it points at. */
  blobs: Blob[]
  /** Each platform manifest's SBOM artifact, filed as its referrer. */
  referrers: {subject: Descriptor; artifact: Descriptor}[]
}

/** What building every platform shares. */
interface BuildInputs {
  reference: string
  epoch: number
  sourceDate: Promise<SourceDate>
  cache: LayerCache
  lock: LockContext
}

async function buildImage(
  kit: Kit,
  platforms: string[],
  inputs: BuildInputs,
  options: BuildOptions,
): Promise<BuiltImage> {
  const {reference, sourceDate} = inputs
  const created = isoTime((await sourceDate).epoch)
  const built: PlatformImage[] = []
  for (const platform of platforms) built.push(await buildPlatform(kit, platform, inputs, options))
  const blobs = built.flatMap((entry) => entry.blobs)
  let root: Descriptor
  if (built.length === 1) {
    root = built[0].platform.manifest
  } else {
    const manifests = built.map(({platform}) => ({...platform.manifest, platform: platformOf(platform.platform)}))
    const index = imageIndex(manifests, imageAnnotations(kit, created))
    blobs.push(index)
    root = index.descriptor
  }
  return {
    reference,
    root,
    platforms: built.map((entry) => entry.platform),
    blobs,
    referrers: built.map(({platform}) => ({
      subject: platform.manifest,
      artifact: {...platform.sbom, artifactType: MediaType.SpdxJson},
    })),
  }
}

/** ko's publish, to the local store: the image's blobs, its SBOMs as referrers (`NAME:sha256-<hex>`, as a pull files them), then the tag. */
async function storeBuiltImage(store: LocalStore, image: BuiltImage): Promise<void> {
  for (const blob of image.blobs) await store.push(blob.descriptor, blob.bytes)
  for (const {subject, artifact} of image.referrers) await store.addReferrers(subject, [artifact], image.reference)
  await store.setTags([{desc: image.root, reference: image.reference}])
}

/**
 * One platform's image, in the order a reader follows it: the base (a stored or pulled image, or
 * a Debian root built as the first layer step), the layer steps the manifest asks for, each
 * cached or produced, then the image config, manifest and SBOM stored.
 */
async function buildPlatform(
  kit: Kit,
  platform: string,
  inputs: BuildInputs,
  options: BuildOptions,
): Promise<PlatformImage> {
  const {epoch, sourceDate, cache, lock} = inputs
  const context: StepContext = {kit, platform, epoch, lock, options, emit: (event) => options.onEvent?.(event)}
  const {base, steps: baseSteps} = await baseOf(context)
  const steps = [
    ...baseSteps,
    ...nodeSteps(context),
    ...npmSteps(context),
    ...(await filesSteps(context)),
    aegisStep(context),
  ]
  const built = await runSteps(context, steps, base, cache)
  return describeImage(context, built, base, isoTime((await sourceDate).epoch))
}

/** One platform's image: what it is, and the blobs (config, manifest, SBOM) that make it. */
interface PlatformImage {
  platform: BuiltPlatform
  blobs: Blob[]
}

/** What every step builder reads. */
interface StepContext {
  kit: Kit
  platform: string
  epoch: number
  lock: LockContext
  options: BuildOptions
  emit(event: BuildEvent): void
}

/** The layers, diff ids and contents of a platform's image once every step ran. */
interface BuiltSteps {
  layers: Descriptor[]
  diffIds: string[]
  builtLayers: BuiltLayer[]
  packages: PackageRecord[]
}

/** An image base is loaded (and locked to its digest); a Debian base is the first layer step. */
async function baseOf(context: StepContext): Promise<{base: BaseImage | undefined; steps: LayerStep[]}> {
  const {kit, platform, epoch, lock, options, emit} = context
  const store = options.store
  const image = kit.manifest.image!
  let base: BaseImage | undefined
  const steps: LayerStep[] = []
  if (typeof image.base === 'string') {
    emit({type: 'step', platform, step: 'base', index: 1, total: 0, detail: image.base})
    // Registry bases are locked to the platform manifest's digest; local imports are what they are.
    const registry = isRegistryReference(image.base)
    const digest = registry && !lock.updateLock ? lock.state.imageDigest(platform) : undefined
    await options.beforeWork?.()
    base = await loadBaseImage(
      store,
      image.base,
      platform,
      digest ? {digest, lockFile: lock.state.displayFile, updateLockHint: lock.updateLockHint} : undefined,
    )
    if (registry) lock.state.setImageDigest(platform, base.manifestDescriptor.digest)
  } else {
    const debian = image.base.debian
    const locked = lock.updateLock ? undefined : lock.state.debianPackages(platform)
    // The lock is an input: a changed lock rebuilds the base, and the same lock reuses it.
    const keyFor = (packages: DebPackage[]) => ({
      step: 'debian',
      v: 2,
      debian,
      platform,
      epoch,
      lock: packages.map((p) => `${p.name}:${p.architecture}=${p.version}`).sort(),
    })
    steps.push({
      step: 'base',
      detail: `debian ${debian.suite} (${debian.variant ?? 'minbase'}${debian.packages?.length ? ` + ${debian.packages.join(', ')}` : ''})${locked ? '' : ', resolving the lock'}`,
      // Resolving asks the archive what it has now, never a cache.
      key: locked ? keyFor(locked) : undefined,
      keyAfter: (contents) => keyFor(debPackages(contents)),
      produce: async (writer, scratch) => {
        const root = path.join(scratch, 'root')
        const packages = await buildDebianRoot(debian, root, {
          platform,
          sourceDateEpoch: epoch,
          locked,
          lockFile: lock.state.displayFile,
          updateLockHint: lock.updateLockHint,
          strict: lock.strict,
          onWarning: (message) => emit({type: 'warning', platform, step: 'base', message}),
          onLine: (line) => emit({type: 'log', platform, step: 'base', line}),
        })
        writer.addTree(root)
        return packages.map((p) => ({kind: 'deb' as const, ...p}))
      },
      done: (contents) => lock.state.setDebianPackages(platform, debPackages(contents)),
    })
  }
  return {base, steps}
}

function nodeSteps(context: StepContext): LayerStep[] {
  const {kit, platform, epoch, options} = context
  const image = kit.manifest.image!
  const steps: LayerStep[] = []
  if (image.node) {
    const version = image.node
    steps.push({
      step: 'node',
      detail: `Node.js ${version}`,
      key: {step: 'node', v: 1, version, platform, epoch},
      produce: async (writer) => {
        const runtime = await fetchNodeRuntime(
          version,
          fromPlatform(platform),
          path.join(options.cacheDir, 'downloads'),
        )
        writer.addFile(`${NODE_HOME}/bin/node`, path.join(runtime, 'bin', 'node'), {mode: 0o755})
        writer.addFile(`${NODE_HOME}/LICENSE`, path.join(runtime, 'LICENSE'), {mode: 0o644})
        writer.addSymlink('usr/local/bin/node', `${NODE_HOME}/bin/node`)
        return [{kind: 'npm', name: toNodePackage(fromPlatform(platform)), version}]
      },
    })
  }
  return steps
}

function npmSteps(context: StepContext): LayerStep[] {
  const {kit, platform, epoch, options, emit} = context
  const image = kit.manifest.image!
  const steps: LayerStep[] = []
  if (image.npm) {
    const npm = image.npm
    if (!image.node)
      throw new AegisError("image.npm needs image.node: the packages are installed with the kit's own Node", {
        hint: 'add image.node, e.g. node: 24.21.0',
      })
    const node = image.node
    const allow = npm.allow_scripts ?? []
    const prefix = npm.prefix ?? NPM_PREFIX
    // Another platform's install scripts run with that platform's Node, emulated (target-node.ts).
    const emulatedScripts = !isHostPlatform(platform) && allow.length > 0
    steps.push({
      step: 'npm',
      detail: npm.packages.join(', '),
      // The host platform's key is unchanged: its layer is built exactly as before.
      key: {
        step: 'npm',
        v: 3,
        packages: npm.packages,
        allow,
        patches: npm.patches ?? [],
        node,
        platform,
        epoch,
        ...(emulatedScripts ? {scripts: 'target-node-v1'} : {}),
        ...(prefix !== NPM_PREFIX ? {prefix} : {}),
      },
      produce: async (writer, scratch) => {
        const onLine = (line: string) => emit({type: 'log', platform, step: 'npm', line})
        // Checked first: a missing emulator fails before any download.
        const target = emulatedScripts
          ? await prepareTargetNode(node, platform, {cacheDir: options.cacheDir, packages: allow, onLine})
          : undefined
        // npm runs on the host: with the host's build of the kit's Node version.
        const runtime = await fetchNodeRuntime(node, hostArchitecture(), path.join(options.cacheDir, 'downloads'))
        // Staged on the host, then placed at the image's prefix: npm's bin links are relative.
        const staging = path.join(scratch, 'prefix')
        const packages = await installNpmPackages(npm, {
          prefix: staging,
          node: path.join(runtime, 'bin', 'node'),
          platform,
          cacheDir: options.cacheDir,
          ...(target ? {target} : {}),
          onLine,
        })
        for (const applied of await applyNpmPatches(staging, npm.patches ?? []))
          emit({type: 'log', platform, step: 'npm', line: `patched ${applied}`})
        writer.addTree(staging, {at: prefix.slice(1)})
        return packages
      },
    })
  }
  return steps
}

async function filesSteps(context: StepContext): Promise<LayerStep[]> {
  const {kit, epoch} = context
  const image = kit.manifest.image!
  const steps: LayerStep[] = []
  if (image.files && image.files.length > 0) {
    const files = image.files
    steps.push({
      step: 'files',
      detail: files.map((file) => `${file.src} → ${file.dest}`).join(', '),
      key: {
        step: 'files',
        v: 1,
        files,
        content: await hashKitFiles(
          kit.dir,
          files.map((file) => file.src),
        ),
        epoch,
      },
      produce: async (writer) => {
        for (const file of files) {
          const source = path.resolve(kit.dir, file.src)
          const mode = file.mode === undefined ? undefined : parseInt(file.mode, 8)
          if (statSync(source).isDirectory()) writer.addTree(source, {at: file.dest.slice(1)})
          else writer.addFile(file.dest.slice(1), source, mode === undefined ? {} : {mode})
        }
      },
    })
  }
  return steps
}

function aegisStep(context: StepContext): LayerStep {
  const {kit, epoch} = context
  const image = kit.manifest.image!
  const owner = numericOwner(image.user)
  return {
    step: 'aegis',
    detail: 'workspace mount point',
    key: {step: 'aegis', v: 1, owner, epoch},
    produce: async (writer) => {
      // The instance mounts the workspace here; the directory must exist in any base.
      writer.addDirectory('workspace', {mode: 0o755, ...(owner ?? {})})
    },
  }
}

/** Each step's layer from the cache, or produced and cached, on top of the base's layers. */
async function runSteps(
  context: StepContext,
  steps: LayerStep[],
  base: BaseImage | undefined,
  cache: LayerCache,
): Promise<BuiltSteps> {
  const {platform, options, emit} = context
  const store = options.store
  const layers: Descriptor[] = base ? [...base.manifest.layers] : []
  const diffIds: string[] = base ? [...base.config.rootfs.diff_ids] : []
  const builtLayers: BuiltLayer[] = []
  const packages: PackageRecord[] = []
  const total = steps.length + (base ? 1 : 0)
  for (const [offset, step] of steps.entries()) {
    options.signal?.throwIfAborted()
    emit({type: 'step', platform, step: step.step, index: offset + 1 + (base ? 1 : 0), total, detail: step.detail})
    const compression = options.compression ?? 'gzip'
    const stepStarted = Date.now()
    let layer = options.noCache || !step.key ? undefined : await cache.get(cacheKey({...step.key, compression}))
    const cached = layer !== undefined
    if (!layer) {
      await options.beforeWork?.()
      layer = await produceLayer(step, store, options)
      const key = step.keyAfter ? step.keyAfter(layer.contents ?? []) : step.key
      if (key) await cache.put(cacheKey({...key, compression}), layer)
    }
    step.done?.(layer.contents ?? [])
    const ms = Date.now() - stepStarted
    emit({
      type: 'layer',
      platform,
      step: step.step,
      cached,
      digest: layer.descriptor.digest,
      size: layer.descriptor.size,
      uncompressedSize: layer.uncompressedSize,
      ms,
    })
    layers.push(layer.descriptor)
    diffIds.push(layer.diffId)
    packages.push(...(layer.contents ?? []))
    builtLayers.push({
      step: step.step,
      digest: layer.descriptor.digest,
      size: layer.descriptor.size,
      uncompressedSize: layer.uncompressedSize,
      cached,
      ms,
    })
  }

  return {layers, diffIds, builtLayers, packages}
}

/** The image config, the manifest and its SBOM (an artifact whose subject is the manifest), as blobs. */
function describeImage(
  context: StepContext,
  built: BuiltSteps,
  base: BaseImage | undefined,
  created: string,
): PlatformImage {
  const {kit, platform} = context
  const image = kit.manifest.image!
  const {layers, diffIds, builtLayers, packages} = built
  const config = imageConfig(kit, platform, created, diffIds, base, builtLayers)
  const configBlob = jsonBlob(MediaType.ImageConfig, config)
  const configDesc = configBlob.descriptor
  const manifest: ImageManifest = {
    schemaVersion: 2,
    mediaType: MediaType.ImageManifest,
    config: configDesc,
    layers,
    annotations: {
      ...imageAnnotations(kit, created),
      [Annotation.BaseName]: typeof image.base === 'string' ? image.base : `debian:${image.base.debian.suite}`,
      ...(base ? {[Annotation.BaseDigest]: base.manifestDescriptor.digest} : {}),
    },
  }
  const manifestBlob = jsonBlob(MediaType.ImageManifest, manifest)
  const manifestDesc = manifestBlob.descriptor

  const sbom = spdxDocument(
    {
      name: kit.manifest.name,
      version: kit.manifest.version,
      platform,
      configDigest: configDesc.digest,
      created,
      tool: TOOL,
    },
    packages,
  )
  const sbomBlob = jsonBlob(MediaType.SpdxJson, sbom)
  const sbomArtifact = artifactManifest(MediaType.SpdxJson, [sbomBlob.descriptor], {
    subject: manifestDesc,
    annotations: {[Annotation.Created]: created},
  })
  const platformImage: BuiltPlatform = {
    platform,
    manifest: manifestDesc,
    config: configDesc,
    layers: builtLayers,
    sbom: sbomArtifact.descriptor,
    packages: {
      deb: packages.filter((p) => p.kind === 'deb').length,
      npm: packages.filter((p) => p.kind === 'npm').length,
    },
  }
  return {platform: platformImage, blobs: [configBlob, manifestBlob, sbomBlob, emptyConfig(), sbomArtifact]}
}

/**
 * Removes the scratch directories (a Debian base's is ~118 MB) and kit unpacks that killed
 * commands left: those of dead owners, unless something is mounted under one.
 */
async function sweepKilledBuilds(options: BuildOptions): Promise<void> {
  const swept = await Promise.all([
    sweepStaleTempDirs(scratchRoot(options.cacheDir)),
    sweepStaleTempDirs(path.join(pulledKitsRoot(options.store.root), '.tmp')),
  ])
  for (const kept of swept.flatMap((result) => result.kept)) {
    options.onEvent?.({
      type: 'warning',
      platform: toPlatformName(hostArchitecture()),
      step: 'cleanup',
      message: `left ${kept.path} of a killed command: ${kept.reason}`,
    })
  }
}

/** Where steps make their layers: `<label>-<pid>@<start>-<random>` directories (see owned-temp.ts). */
export function scratchRoot(cacheDir: string): string {
  return path.join(cacheDir, 'tmp')
}

async function produceLayer(step: LayerStep, store: LocalStore, options: BuildOptions): Promise<CachedLayer> {
  const scratch = path.join(scratchRoot(options.cacheDir), ownedTempName(step.step))
  await mkdir(scratch, {recursive: true})
  try {
    const {LayerWriter} = await import('../image/layer-writer.js') // only for a layer to make: a cached build skips it
    const writer = new LayerWriter({
      compression: options.compression ?? 'gzip',
      sourceDateEpoch: options.sourceDateEpoch ?? 0,
    })
    const contents = (await step.produce(writer, scratch)) ?? undefined
    const blobFile = path.join(scratch, 'layer.blob')
    const blob = await writer.write(blobFile)
    await store.push(blob.descriptor, createReadStream(blobFile))
    return {
      descriptor: blob.descriptor,
      diffId: blob.diffId,
      uncompressedSize: blob.uncompressedSize,
      ...(contents ? {contents} : {}),
    }
  } finally {
    await rm(scratch, {recursive: true, force: true})
  }
}

function imageConfig(
  kit: Kit,
  platform: string,
  created: string,
  diffIds: string[],
  base: BaseImage | undefined,
  layers: BuiltLayer[],
): ImageConfig {
  const image = kit.manifest.image!
  const baseConfig = base?.config.config ?? {}
  const env = new Map<string, string>()
  for (const entry of baseConfig.Env ?? []) {
    const at = entry.indexOf('=')
    if (at > 0) env.set(entry.slice(0, at), entry.slice(at + 1))
  }
  // Also without image.npm: images that install nothing keep the PATH (and digest) they always had.
  const npmBin = `${image.npm?.prefix ?? NPM_PREFIX}/bin`
  env.set('PATH', `${npmBin}:${NODE_HOME}/bin:${env.get('PATH') ?? SYSTEM_PATH}`)
  for (const [name, value] of Object.entries(image.env ?? {})) env.set(name, value)
  const argv = (command: string | string[] | undefined) =>
    command === undefined ? undefined : typeof command === 'string' ? ['/bin/sh', '-c', command] : command
  const ports = (kit.manifest.routing?.expose ?? []).map((entry) => `${entry.port}/tcp`)
  const {os, architecture, variant} = platformOf(platform)
  return {
    created,
    architecture,
    os,
    ...(variant ? {variant} : {}),
    config: {
      ...((image.user ?? baseConfig.User) ? {User: image.user ?? baseConfig.User} : {}),
      ...(ports.length > 0 ? {ExposedPorts: Object.fromEntries(ports.map((port) => [port, {}]))} : {}),
      Env: [...env.entries()].map(([name, value]) => `${name}=${value}`),
      ...((argv(image.entrypoint) ?? baseConfig.Entrypoint)
        ? {Entrypoint: argv(image.entrypoint) ?? baseConfig.Entrypoint}
        : {}),
      ...((argv(image.command) ?? baseConfig.Cmd) ? {Cmd: argv(image.command) ?? baseConfig.Cmd} : {}),
      WorkingDir: image.workdir ?? baseConfig.WorkingDir ?? '/',
      Labels: {
        ...(baseConfig.Labels ?? {}),
        ...(image.labels ?? {}),
        'dev.aegis.kit.name': kit.manifest.name,
        'dev.aegis.kit.version': kit.manifest.version,
      },
    },
    rootfs: {type: 'layers', diff_ids: diffIds},
    history: [
      ...(base?.config.history ?? []),
      ...layers.map((layer) => ({created, created_by: `${TOOL} build: ${layer.step}`})),
    ],
  }
}

function isoTime(epoch: number): string {
  return new Date(epoch * 1000).toISOString()
}

function imageAnnotations(kit: Kit, created: string): Record<string, string> {
  return {
    [Annotation.Title]: kit.manifest.name,
    [Annotation.Version]: kit.manifest.version,
    [Annotation.Created]: created,
    ...(kit.manifest.description ? {[Annotation.Description]: kit.manifest.description} : {}),
    ...(kit.manifest.homepage ? {[Annotation.Source]: kit.manifest.homepage} : {}),
  }
}

function debPackages(contents: PackageRecord[]): DebPackage[] {
  return contents
    .filter((p) => p.kind === 'deb')
    .map((p) => ({name: p.name, version: p.version, architecture: p.architecture ?? 'unknown'}))
}

function platformOf(platform: string): Platform {
  return parsePlatform(platform)
}

function numericOwner(user: string | undefined): {uid: number; gid: number} | undefined {
  const match = /^(\d+)(?::(\d+))?$/.exec(user ?? '')
  return match ? {uid: Number(match[1]), gid: Number(match[2] ?? match[1])} : undefined
}

/** Content hash of the kit files a layer copies: changing one file rebuilds only this layer. */
async function hashKitFiles(kitDir: string, sources: string[]): Promise<string> {
  const hash = createHash('sha256')
  const visit = async (absolute: string, relative: string): Promise<void> => {
    const info = await stat(absolute)
    hash.update(`${relative}\0${info.mode & 0o7777}\0`)
    if (info.isDirectory()) {
      for (const name of (await readdir(absolute)).sort()) await visit(path.join(absolute, name), `${relative}/${name}`)
    } else {
      hash.update(await readFile(absolute))
    }
  }
  for (const source of sources) await visit(path.resolve(kitDir, source), source)
  return hash.digest('hex')
}
