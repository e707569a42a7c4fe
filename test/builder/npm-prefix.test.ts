// image.npm.prefix: the packages are installed at the kit's prefix in the image, and the image's
// PATH finds their programs there. Checked on the unpacked image, as skopeo and umoci give it.
import {existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, symlinkSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {execa} from 'execa'
import {describe, expect, it} from 'vitest'
import {runCli} from '../helpers/cli.js'
import {nodeKit, testCache} from '../helpers/toolchain.js'

const PREFIX = '/usr/local/lib/custom'

function tempDir(prefix: string): string {
  return mkdtempSync(path.join(tmpdir(), prefix))
}

describe('image.npm.prefix', () => {
  it('installs the packages at the prefix, and the image PATH finds their programs there', async () => {
    const home = tempDir('aegis-kit-prefix-')
    // The Node download is shared with other build tests (fetching it again is slow, not tested).
    mkdirSync(path.join(home, 'cache'), {recursive: true})
    mkdirSync(path.join(testCache, 'build-downloads'), {recursive: true})
    symlinkSync(path.join(testCache, 'build-downloads'), path.join(home, 'cache', 'downloads'))
    const kit = nodeKit('prefixed', `{packages: [semver@7.6.3], prefix: ${PREFIX}}`)
    const built = await runCli(['build', kit, '--json'], {env: {AEGIS_KIT_HOME: home}, timeout: 600_000})
    expect(built.exitCode, built.stderr).toBe(0)

    const work = tempDir('aegis-kit-unpack-')
    await execa('skopeo', [
      'copy',
      `oci:${path.join(home, 'store')}:prefixed:0.1.0`,
      `oci:${path.join(work, 'layout')}:image`,
    ])
    await execa('umoci', ['unpack', '--image', `${path.join(work, 'layout')}:image`, path.join(work, 'bundle')])
    const root = path.join(work, 'bundle', 'rootfs')
    const prefix = path.join(root, PREFIX.slice(1))
    expect(JSON.parse(readFileSync(path.join(prefix, 'lib/node_modules/semver/package.json'), 'utf8'))).toMatchObject({
      name: 'semver',
      version: '7.6.3',
    })
    expect(readlinkSync(path.join(prefix, 'bin/semver'))).toBe('../lib/node_modules/semver/bin/semver.js')
    expect(existsSync(path.join(root, 'opt/aegis/npm'))).toBe(false)

    const bundle = JSON.parse(readFileSync(path.join(work, 'bundle', 'config.json'), 'utf8')) as {
      process: {env: string[]}
    }
    const imagePath = bundle.process.env.find((entry) => entry.startsWith('PATH='))!.slice('PATH='.length)
    expect(imagePath.split(':')[0]).toBe(`${PREFIX}/bin`)
    // The image's own PATH resolves the program to the prefix, and it runs with the image's Node.
    const found = await execa('chroot', [root, '/bin/busybox', 'sh', '-c', 'command -v semver'], {
      env: {PATH: imagePath},
    })
    expect(found.stdout).toBe(`${PREFIX}/bin/semver`)
    const ran = await execa('chroot', [
      root,
      '/opt/aegis/node/bin/node',
      `${PREFIX}/bin/semver`,
      '--increment',
      'minor',
      '1.2.3',
    ])
    expect(ran.stdout).toBe('1.3.0')
  }, 600_000)

  it('a prefix that is not a plain absolute path is a located manifest problem', async () => {
    const kit = nodeKit('prefixed', '{packages: [semver@7.6.3], prefix: /opt/../etc}')
    const result = await runCli(['validate', kit], {env: {AEGIS_KIT_HOME: tempDir('aegis-kit-prefix-')}})
    expect(result.exitCode).not.toBe(0)
    expect(result.stdout + result.stderr).toMatch(/aegis-kit\.yaml:\d+:\d+.*image\.npm\.prefix/)
  })
})
