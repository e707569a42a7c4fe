/** What the images CLI tests share: a temp AEGIS_KIT_HOME and DOCKER_CONFIG per file, images made by umoci, skopeo. */
import {randomBytes} from 'node:crypto'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {execa} from 'execa'
import {runCli, type CliResult} from '../helpers/cli.js'

export interface CliSandbox {
  dir: string
  env: Record<string, string>
  /** The built CLI with this sandbox's AEGIS_KIT_HOME and DOCKER_CONFIG. */
  run(args: string[], options?: {input?: string; env?: Record<string, string>}): Promise<CliResult>
  /** `run(...)` that must succeed; returns the parsed stdout of a `--json` command. */
  json<T = Record<string, unknown>>(args: string[], options?: {input?: string}): Promise<T>
  cleanup(): Promise<void>
}

export async function createSandbox(): Promise<CliSandbox> {
  const dir = await mkdtemp(join(tmpdir(), 'aegis-cli-images-'))
  const env = {AEGIS_KIT_HOME: join(dir, 'home'), DOCKER_CONFIG: join(dir, 'docker'), AEGIS_KIT_DEBUG: ''}
  const run = (args: string[], options: {input?: string; env?: Record<string, string>} = {}) =>
    runCli(args, {env: {...env, ...options.env}, ...(options.input === undefined ? {} : {input: options.input})})
  return {
    dir,
    env,
    run,
    json: async <T>(args: string[], options: {input?: string} = {}) => {
      const result = await run([...args, '--json'], options)
      if (result.exitCode !== 0)
        throw new Error(`aegis-kit ${args.join(' ')} failed (${result.exitCode}):\n${result.all}`)
      return JSON.parse(result.stdout) as T
    },
    cleanup: () => rm(dir, {recursive: true, force: true}),
  }
}

/** An OCI layout at DIR/NAME (tag `tag`) with `layers` layers of random bytes, made by umoci. */
export async function makeUmociImage(
  dir: string,
  name: string,
  options: {tag?: string; layers?: number; layerSize?: number} = {},
): Promise<string> {
  const tag = options.tag ?? '1.0'
  const layout = join(dir, name)
  await execa('umoci', ['init', '--layout', layout])
  await execa('umoci', ['new', '--image', `${layout}:${tag}`])
  for (let i = 0; i < (options.layers ?? 2); i++) {
    const file = join(dir, `${name}-layer-${i}.bin`)
    await writeFile(file, randomBytes(options.layerSize ?? 96 * 1024))
    await execa('umoci', ['insert', '--image', `${layout}:${tag}`, file, `/data/layer-${i}.bin`])
  }
  await execa('umoci', ['config', '--image', `${layout}:${tag}`, '--config.cmd', '/bin/true'])
  return layout
}

export async function skopeo(...args: string[]): Promise<string> {
  const {stdout} = await execa('skopeo', args, {timeout: 120_000})
  return stdout
}

/** `skopeo inspect` of a plain-HTTP registry image. */
export async function skopeoInspect(
  reference: string,
  creds?: {username: string; password: string},
): Promise<{Digest: string; Layers: string[]; Architecture: string}> {
  const credsArgs = creds ? ['--creds', `${creds.username}:${creds.password}`] : []
  return JSON.parse(await skopeo('inspect', '--tls-verify=false', ...credsArgs, `docker://${reference}`)) as {
    Digest: string
    Layers: string[]
    Architecture: string
  }
}
