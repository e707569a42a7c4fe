/**
 * The decision to run a pulled kit's code (its hooks, its image), asked for by the commands that
 * do: --trust, a y/N prompt on a terminal, or an error naming the flag without one. Asked once
 * per kit: the answer is kept in the store (src/kit/trust.ts). Kits in the user's own
 * directories need no decision.
 */
import path from 'node:path'
import {createInterface} from 'node:readline/promises'
import {Flags} from '@oclif/core'
import {AegisError} from '../errors.js'
import type {Kit} from '../kit/kit.js'
import {pulledKitsRoot, storeKitOf} from '../kit/pulled.js'
import {describeOrigin, readKitRecord, trustFile, trustKit} from '../kit/trust.js'
import {defaultStoreRoot} from '../paths.js'

export const trustFlag = Flags.boolean({
  description:
    "Run a pulled kit's code (hooks, image) without asking; remembered for this kit (its digest) in the store.",
})

/** Returns when the kit's code may run; throws when the user has not decided (or said no). */
export async function confirmTrust(kit: Kit, trust: boolean): Promise<void> {
  const storeRoot = defaultStoreRoot()
  const key = storeKitOf(kit.dir, storeRoot)
  if (key === undefined) return
  // The store's own path of the kit, also when KIT was a symlink to it.
  const dir = path.join(pulledKitsRoot(storeRoot), key)
  const record = readKitRecord(dir, storeRoot)
  if (record?.trusted) return
  const what = `kit ${kit.manifest.name} ${kit.manifest.version} (${key}), ${describeOrigin(record)}`
  const network = kit.manifest.hooks?.network === true ? ', and its hooks use your network (hooks.network: true)' : ''
  if (trust) {
    await trustKit(dir, 'flag', storeRoot)
    process.stderr.write(
      `aegis-kit: trusting ${what}${network}, from now on (--trust; kept in ${trustFile(storeRoot)})\n`,
    )
    return
  }
  if (process.stdin.isTTY && process.stderr.isTTY) {
    const prompt = createInterface({input: process.stdin, output: process.stderr})
    const answer = await prompt
      .question(`aegis-kit: ${what}, is not trusted yet: run its code (hooks, image) on this machine${network}? [y/N] `)
      .finally(() => prompt.close())
    if (/^y(es)?$/i.test(answer.trim())) {
      await trustKit(dir, 'prompt', storeRoot)
      return
    }
    throw new AegisError(`not running ${what}: you did not trust it`, {
      hint: 'answer y, or pass --trust, once you trust where it came from',
    })
  }
  throw new AegisError(`${what}, is not trusted yet: its hooks and image are code from a registry${network}`, {
    hint: 'pass --trust to run it (remembered for this kit), once you trust where it came from',
  })
}
