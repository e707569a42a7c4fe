import {mkdirSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import {afterAll, describe, expect, it} from 'vitest'

import {resolveImageUser} from '../../src/guest/image-user.js'

const root = mkdtempSync(path.join(os.tmpdir(), 'aegis-image-user-'))
mkdirSync(path.join(root, 'etc'))
writeFileSync(
  path.join(root, 'etc/passwd'),
  'root:x:0:0:root:/root:/bin/bash\nnode:x:1000:1000::/home/node:/bin/bash\n',
)
writeFileSync(path.join(root, 'etc/group'), 'root:x:0:\nnode:x:1000:\nsudo:x:27:node\naudio:x:29:other,node\n')
const bare = mkdtempSync(path.join(os.tmpdir(), 'aegis-image-user-bare-'))
afterAll(() => {
  rmSync(root, {recursive: true, force: true})
  rmSync(bare, {recursive: true, force: true})
})

describe('resolveImageUser', () => {
  it('resolves names, numbers and groups from the image', async () => {
    expect(await resolveImageUser(root, 'node')).toEqual({uid: 1000, gid: 1000, groups: [27, 29], home: '/home/node'})
    expect(await resolveImageUser(root, '1000:sudo')).toEqual({uid: 1000, gid: 27, groups: [29], home: '/home/node'})
    expect(await resolveImageUser(root, undefined)).toEqual({uid: 0, gid: 0, groups: [], home: '/root'})
  })

  it('takes numeric ids in an image without /etc/passwd, and rejects unknown names', async () => {
    expect(await resolveImageUser(bare, '65532:65532')).toEqual({uid: 65532, gid: 65532, groups: [], home: '/'})
    await expect(resolveImageUser(bare, 'nonroot')).rejects.toThrow(/no user named nonroot/)
    await expect(resolveImageUser(root, 'node:nogroup')).rejects.toThrow(/no group named nogroup/)
  })
})
