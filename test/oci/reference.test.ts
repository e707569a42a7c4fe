// The one reference grammar read two ways: what only the store's reading does (the registry's is
// in test/registry/client-units.test.ts, the shared cases in test/store/reference.test.ts).
import {describe, expect, it} from 'vitest'
import {formatRefName, parseLocalReference, parseReference, splitRefName} from '../../src/oci/reference.js'

const digest = `sha256:${'ab'.repeat(32)}`

describe('one grammar, two readings', () => {
  it('keeps a local name as written where a registry reference is normalised', () => {
    expect(parseLocalReference('alpine:3')).toEqual({kind: 'tag', name: 'alpine', tag: '3', explicitTag: true})
    expect(parseReference('alpine:3')).toMatchObject({registry: 'docker.io', repository: 'library/alpine', tag: '3'})
  })

  it('says what is wrong with a local reference, as with a registry one', () => {
    expect(() => parseLocalReference('ghcr.io/Acme/kit')).toThrow(
      /invalid image reference "ghcr.io\/Acme\/kit": repository names must be lowercase/,
    )
    expect(() => parseLocalReference('kit@sha256:abc')).toThrow(/is not a sha256 digest/)
  })

  it('refuses a tag and a digest together in the store, which looks an image up by one of them', () => {
    expect(() => parseLocalReference(`kit:1@${digest}`)).toThrow(/both a tag and a digest/)
    expect(parseReference(`kit:1@${digest}`)).toMatchObject({tag: '1', digest})
  })

  it('round-trips ref.name annotations, a registry port not taken for a tag', () => {
    expect(splitRefName(formatRefName('localhost:5000/app', '1.0'))).toEqual({name: 'localhost:5000/app', tag: '1.0'})
    expect(splitRefName('localhost:5000/app')).toEqual({name: '', tag: 'localhost:5000/app'})
    expect(splitRefName('v1')).toEqual({name: '', tag: 'v1'})
  })
})
