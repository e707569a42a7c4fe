/**
 * Turning an image's `USER` (OCI config: "name", "uid", "name:group", "uid:gid") into the
 * numeric ids the harness needs, from the image's own /etc/passwd and /etc/group, the way
 * container runtimes do. Done on the host: the harness must not depend on image files.
 */

import {readFile} from 'node:fs/promises'
import path from 'node:path'

import {AegisError} from '../errors.js'

export interface ImageUser {
  uid: number
  gid: number
  /** Supplementary groups listing the user by name in /etc/group. */
  groups: number[]
  /** From /etc/passwd; "/" when the user has no entry. */
  home: string
}

async function readTable(rootDir: string, file: string): Promise<string[][]> {
  try {
    const text = await readFile(path.join(rootDir, file), 'utf8')
    return text
      .split('\n')
      .filter((line) => line && !line.startsWith('#'))
      .map((line) => line.split(':'))
  } catch {
    return [] // distroless and scratch images may have neither file
  }
}

const NUMERIC = /^\d+$/

/** Resolves `user` (empty means root) against the image root at `rootDir`. */
export async function resolveImageUser(rootDir: string, user: string | undefined): Promise<ImageUser> {
  const [userPart = '', groupPart] = (user || '0').split(':', 2)
  const passwd = await readTable(rootDir, 'etc/passwd')
  const groupTable = await readTable(rootDir, 'etc/group')
  const entry = passwd.find((fields) => (NUMERIC.test(userPart) ? fields[2] === userPart : fields[0] === userPart))
  if (!entry && !NUMERIC.test(userPart)) {
    throw new AegisError(`the image has no user named ${userPart}`, {
      hint: "use a numeric uid[:gid] or a user listed in the image's /etc/passwd",
    })
  }
  const uid = entry ? Number(entry[2]) : Number(userPart)
  let gid = entry ? Number(entry[3]) : uid
  if (groupPart !== undefined) {
    const group = groupTable.find((fields) =>
      NUMERIC.test(groupPart) ? fields[2] === groupPart : fields[0] === groupPart,
    )
    if (!group && !NUMERIC.test(groupPart)) {
      throw new AegisError(`the image has no group named ${groupPart}`, {
        hint: "use a numeric gid or a group listed in the image's /etc/group",
      })
    }
    gid = group ? Number(group[2]) : Number(groupPart)
  }
  const name = entry?.[0]
  const groups =
    name === undefined
      ? []
      : groupTable
          .filter((fields) => (fields[3] ?? '').split(',').includes(name))
          .map((fields) => Number(fields[2]))
          .filter((id) => id !== gid)
  return {uid, gid, groups: [...new Set(groups)].sort((a, b) => a - b), home: entry?.[5] || '/'}
}
