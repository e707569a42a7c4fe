// The image's created time: the kit's last commit when its checkout is clean, else its newest
// file; the lock the build writes moves neither.
import {mkdtempSync, mkdirSync, utimesSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import path from 'node:path'
import {execa} from 'execa'
import {describe, expect, it} from 'vitest'
import {kitSourceDate} from '../../src/builder/source-date.js'

const COMMITTED = 1_750_000_000

async function committedKit(): Promise<string> {
  const repo = mkdtempSync(path.join(tmpdir(), 'aegis-source-date-'))
  const kit = path.join(repo, 'kits', 'demo')
  mkdirSync(path.join(kit, 'www'), {recursive: true})
  writeFileSync(path.join(kit, 'aegis-kit.yaml'), 'name: demo\nversion: 1.0.0\n')
  writeFileSync(path.join(kit, 'www', 'index.html'), 'hello\n')
  writeFileSync(path.join(repo, 'elsewhere.txt'), 'not the kit\n')
  const git = (...args: string[]) =>
    execa('git', args, {cwd: repo, env: {GIT_AUTHOR_DATE: `@${COMMITTED}`, GIT_COMMITTER_DATE: `@${COMMITTED}`}})
  await git('init', '-q')
  await git('add', '.')
  await git('-c', 'user.name=t', '-c', 'user.email=t@example.com', 'commit', '-q', '-m', 'kit')
  return kit
}

describe('kitSourceDate', () => {
  it('is the last commit of a clean kit, whatever else in the repository changes, and a written lock does not move it', async () => {
    const kit = await committedKit()
    expect(await kitSourceDate(kit)).toEqual({epoch: COMMITTED, from: 'git'})
    writeFileSync(path.join(kit, '..', '..', 'elsewhere.txt'), 'changed outside the kit\n')
    writeFileSync(path.join(kit, 'aegis-kit.lock.json'), '{}\n')
    expect(await kitSourceDate(kit)).toEqual({epoch: COMMITTED, from: 'git'})
  })

  it('is the newest file of a kit with uncommitted changes, leaving out the lock', async () => {
    const kit = await committedKit()
    writeFileSync(path.join(kit, 'www', 'index.html'), 'edited\n')
    utimesSync(path.join(kit, 'www', 'index.html'), 1_800_000_000, 1_800_000_000)
    utimesSync(path.join(kit, 'aegis-kit.yaml'), 1_700_000_000, 1_700_000_000)
    writeFileSync(path.join(kit, 'aegis-kit.lock.json'), '{}\n')
    utimesSync(path.join(kit, 'aegis-kit.lock.json'), 1_900_000_000, 1_900_000_000)
    expect(await kitSourceDate(kit)).toEqual({epoch: 1_800_000_000, from: 'files'})
  })

  it('is the newest file outside git', async () => {
    const kit = mkdtempSync(path.join(tmpdir(), 'aegis-source-date-plain-'))
    writeFileSync(path.join(kit, 'aegis-kit.yaml'), 'name: demo\nversion: 1.0.0\n')
    utimesSync(path.join(kit, 'aegis-kit.yaml'), 1_600_000_000, 1_600_000_000)
    expect(await kitSourceDate(kit)).toEqual({epoch: 1_600_000_000, from: 'files'})
  })
})
