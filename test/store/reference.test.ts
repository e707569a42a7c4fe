import {describe, expect, it} from 'vitest'
import {AegisError} from '../../src/errors.js'
import {parseLocalReference, parseTagReference} from '../../src/oci/reference.js'
import {defaultStoreRoot} from '../../src/store/index.js'
import {describeStore} from '../../src/store/paths.js'
import {safeEntryName} from '../../src/store/tar-io.js'

const digest = `sha256:${'ab'.repeat(32)}`

describe('parseLocalReference', () => {
  it.each([
    ['openclaw', {kind: 'tag', name: 'openclaw', tag: 'latest', explicitTag: false}],
    ['openclaw:1.0.0', {kind: 'tag', name: 'openclaw', tag: '1.0.0', explicitTag: true}],
    ['ghcr.io/acme/openclaw:v2', {kind: 'tag', name: 'ghcr.io/acme/openclaw', tag: 'v2', explicitTag: true}],
    ['localhost:5000/openclaw', {kind: 'tag', name: 'localhost:5000/openclaw', tag: 'latest', explicitTag: false}],
    [digest, {kind: 'digest', digest}],
    [`openclaw@${digest}`, {kind: 'digest', digest, name: 'openclaw'}],
  ])('%s', (reference, expected) => {
    expect(parseLocalReference(reference)).toEqual(expected)
  })

  it.each(['', 'OpenClaw', 'open claw', 'openclaw:', 'openclaw:-x', 'a//b', `openclaw@sha256:abc`, '../x', 'x:_tag'])(
    'refuses %j with an AegisError',
    (reference) => {
      expect(() => parseLocalReference(reference)).toThrow(AegisError)
    },
  )

  it('refuses a digest where a tag is needed', () => {
    expect(() => parseTagReference(digest)).toThrow(/a tag is needed/)
  })
})

describe('defaultStoreRoot', () => {
  const home = '/home/ada'
  it('uses AEGIS_KIT_HOME first, on every platform', () => {
    expect(defaultStoreRoot({AEGIS_KIT_HOME: '/opt/kits', XDG_DATA_HOME: '/xdg'}, 'linux', home)).toBe(
      '/opt/kits/store',
    )
    expect(defaultStoreRoot({AEGIS_KIT_HOME: '/opt/kits'}, 'darwin', home)).toBe('/opt/kits/store')
  })
  it('follows XDG on Linux, ignoring a relative XDG_DATA_HOME', () => {
    expect(defaultStoreRoot({XDG_DATA_HOME: '/xdg'}, 'linux', home)).toBe('/xdg/aegis-kit/store')
    expect(defaultStoreRoot({XDG_DATA_HOME: 'relative'}, 'linux', home)).toBe('/home/ada/.local/share/aegis-kit/store')
    expect(defaultStoreRoot({}, 'linux', home)).toBe('/home/ada/.local/share/aegis-kit/store')
  })
  it('uses Application Support on macOS', () => {
    expect(defaultStoreRoot({XDG_DATA_HOME: '/xdg'}, 'darwin', home)).toBe(
      '/home/ada/Library/Application Support/aegis-kit/store',
    )
  })
  it('names the store by AEGIS_KIT_HOME in messages when that is where it came from', () => {
    expect(describeStore('/opt/kits/store', {AEGIS_KIT_HOME: '/opt/kits'})).toBe('store (AEGIS_KIT_HOME=/opt/kits)')
    expect(describeStore('/elsewhere', {AEGIS_KIT_HOME: '/opt/kits'})).toBe('store at /elsewhere')
  })
})

describe('safeEntryName', () => {
  it('normalises harmless prefixes', () => {
    expect(safeEntryName('./blobs/sha256/')).toBe('blobs/sha256')
    expect(safeEntryName('index.json')).toBe('index.json')
  })
  it.each(['../x', 'blobs/../../x', '/etc/passwd', 'C:/x', 'a\\..\\b', 'a\0b'])('refuses %j', (name) => {
    expect(() => safeEntryName(name)).toThrow(AegisError)
  })
})
