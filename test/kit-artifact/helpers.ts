/** What the kit-artifact suites share: a registry read back over plain HTTP, and kit directories to push. */
import {cp, mkdtemp, readFile, writeFile} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {repoRoot} from '../helpers/cli.js'

/** GET a manifest (any OCI type) or blob from a plain-HTTP registry. */
export async function registryGet(
  url: string,
  path: string,
): Promise<{status: number; body: Buffer; contentType: string | null}> {
  const accept = ['application/vnd.oci.image.index.v1+json', 'application/vnd.oci.image.manifest.v1+json'].join(', ')
  const response = await fetch(`${url}/v2/${path}`, {headers: {accept}})
  return {
    status: response.status,
    body: Buffer.from(await response.arrayBuffer()),
    contentType: response.headers.get('content-type'),
  }
}

export async function registryJson<T = Record<string, unknown>>(url: string, path: string): Promise<T> {
  const {status, body} = await registryGet(url, path)
  if (status !== 200) throw new Error(`GET ${path}: ${status} ${body.toString('utf8')}`)
  return JSON.parse(body.toString('utf8')) as T
}

/** A copy of the bundled hello kit in a fresh temp directory, with `extra` files written into it. */
export async function copyHello(extra: Record<string, string> = {}, manifestAppend = ''): Promise<string> {
  const dir = join(await mkdtemp(join(tmpdir(), 'aegis-kit-copy-')), 'hello')
  await cp(join(repoRoot, 'kits/hello'), dir, {recursive: true})
  for (const [name, content] of Object.entries(extra)) await writeFile(join(dir, name), content)
  if (manifestAppend) {
    const manifest = await readFile(join(dir, 'aegis-kit.yaml'), 'utf8')
    await writeFile(
      join(dir, 'aegis-kit.yaml'),
      manifest.replace('  timeout: 5s\n', `${manifestAppend}  timeout: 5s\n`),
    )
  }
  return dir
}
