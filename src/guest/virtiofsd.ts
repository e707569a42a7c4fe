/** One virtiofsd per shared directory; QEMU connects to its vhost-user socket. */

import {existsSync} from 'node:fs'
import {setTimeout as sleep} from 'node:timers/promises'

import {AegisError} from '../errors.js'
import type {ChildProcessGroup} from './child-processes.js'

export interface Share {
  tag: string
  dir: string
  /** "always" for the image root (nothing else changes it), "auto" where the host may write too. */
  cache: 'always' | 'auto'
  socketPath: string
}

/** Starts virtiofsd for `share` and resolves once its socket exists. */
export async function startVirtiofsd(processes: ChildProcessGroup, binary: string, share: Share): Promise<string> {
  if (!existsSync(share.dir))
    throw new AegisError(`the directory to share as ${share.tag} does not exist: ${share.dir}`, {
      hint: 'create it or fix the path',
    })
  const child = processes.spawn(
    binary,
    [
      `--socket-path=${share.socketPath}`,
      '-o',
      `source=${share.dir}`,
      '-o',
      `cache=${share.cache}`,
      '-o',
      'sandbox=chroot',
    ],
    {stdio: ['ignore', 'ignore', 'pipe']},
  )
  let errors = ''
  child.stderr?.setEncoding('utf8').on('data', (text: string) => {
    errors = (errors + text).slice(-4096)
  })
  let exited = false
  child.once('exit', () => {
    exited = true
  })
  child.once('error', () => {
    exited = true
  })
  const deadline = Date.now() + 10_000
  while (!existsSync(share.socketPath)) {
    if (exited || Date.now() > deadline) {
      throw new AegisError(`virtiofsd for ${share.tag} did not start: ${errors.trim() || 'no output'}`, {
        hint: 'virtiofsd with sandbox=chroot needs root; run as root or install a virtiofsd that supports unprivileged use',
      })
    }
    await sleep(10)
  }
  return share.socketPath
}
