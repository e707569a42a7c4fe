/**
 * Generated secrets of scope `per_workspace` and `per_session`: made once and kept for as long as
 * the workspace (or the session, `run --session`) is used, so a webhook secret or a token survives
 * restarts of the instances that share it.
 *
 * They are kept in aegis-kit's data directory, never in or next to the workspace: the workspace is
 * shared with the guest over virtiofs, and a file inside it would let the workload (or anything it
 * runs) read every kit's stored secrets, while a file beside a user's directory ends up in backups
 * and commits. The layout is `secrets/workspaces/<sha256 of the workspace's absolute path, 32
 * hex>/<kit>/<NAME>` and `secrets/sessions/<session>/<kit>/<NAME>`, directories 0700, files 0600.
 * Moving a workspace therefore means new values, as a new workspace would get.
 */
import {createHash, randomBytes} from 'node:crypto'
import {linkSync, mkdirSync, readFileSync, unlinkSync, writeFileSync} from 'node:fs'
import path from 'node:path'
import {AegisError} from '../errors.js'
import type {KeptSecretStore} from '../kit/secrets.js'
import {errorCode} from '../fs-util.js'

/** Where the secrets kept for `workspace` (an absolute path) live under the data directory. */
export function workspaceSecretsDir(dataDir: string, workspace: string, kitName: string): string {
  const key = createHash('sha256').update(workspace).digest('hex').slice(0, 32)
  return path.join(dataDir, 'secrets', 'workspaces', key, kitName)
}

export function workspaceSecretStore(dataDir: string, workspace: string, kitName: string): KeptSecretStore {
  return keptSecretStore(workspaceSecretsDir(dataDir, workspace, kitName), `workspace ${workspace}`)
}

/** Where the secrets kept for session `session` (a checked session name) live under the data directory. */
export function sessionSecretsDir(dataDir: string, session: string, kitName: string): string {
  return path.join(dataDir, 'secrets', 'sessions', session, kitName)
}

export function sessionSecretStore(dataDir: string, session: string, kitName: string): KeptSecretStore {
  return keptSecretStore(sessionSecretsDir(dataDir, session, kitName), `session ${session}`)
}

/** Values kept one file per secret in `dir`; `owner` names the workspace or session in errors. */
function keptSecretStore(dir: string, owner: string): KeptSecretStore {
  return {
    valueFor(name, generate) {
      const file = path.join(dir, name)
      const kept = readKept(file, name, owner)
      if (kept !== undefined) return kept
      mkdirSync(dir, {recursive: true, mode: 0o700})
      // Written whole under a temp name, then linked into place: link fails when another run
      // got there first, and then both use that run's value.
      const temp = path.join(dir, `.${process.pid}-${randomBytes(8).toString('hex')}`)
      const value = generate()
      writeFileSync(temp, value, {mode: 0o600, flag: 'wx'})
      try {
        linkSync(temp, file)
        return value
      } catch (error) {
        if (errorCode(error) !== 'EEXIST') throw error
        return readKept(file, name, owner)!
      } finally {
        unlinkSync(temp)
      }
    },
  }
}

function readKept(file: string, name: string, owner: string): string | undefined {
  let value: string
  try {
    value = readFileSync(file, 'utf8')
  } catch (error) {
    if (errorCode(error) === 'ENOENT') return undefined
    throw error
  }
  // Never shown: an error names the file, not what it holds.
  if (value === '')
    throw new AegisError(`the kept value of secret ${name} for ${owner} is empty`, {
      hint: `delete ${file} to generate a new one`,
    })
  return value
}
