import {describe, expect, it} from 'vitest'

import {AegisError} from '../../src/errors.js'
import {encodeRunSpec, type GuestPlumbing} from '../../src/guest/spec.js'

const plumbing: GuestPlumbing = {
  root: {kind: 'virtiofs', tag: 'root'},
  mounts: [{tag: 'workspace', guestPath: '/workspace'}],
  network: {address: '192.168.127.2', prefixLength: 24, gateway: '192.168.127.1', dns: '192.168.127.1'},
}

function records(bytes: Buffer): string[] {
  const newline = bytes.indexOf(10)
  const header = bytes.toString('ascii', 0, newline)
  const body = bytes.subarray(newline + 1)
  expect(header).toBe(`AEGIS-SPEC/1 ${body.length}`)
  expect(body.at(-1)).toBe(0)
  return body.toString('utf8').slice(0, -1).split('\0')
}

describe('encodeRunSpec', () => {
  it('writes one NUL-terminated record per item, in the order the harness expects', () => {
    const bytes = encodeRunSpec(
      {
        command: ['sh', '-c', 'echo "a b"\nexit 3'],
        env: {FOO: 'bar baz'},
        secrets: {API_KEY: 'k=v'},
        user: {uid: 1000, gid: 100, groups: [27]},
        workdir: '/workspace',
        ports: [8080],
      },
      plumbing,
    )
    expect(records(bytes)).toEqual([
      'arg sh',
      'arg -c',
      'arg echo "a b"\nexit 3',
      'env FOO=bar baz',
      'secret API_KEY=k=v',
      'user 1000:100',
      'group 27',
      'workdir /workspace',
      'hostname aegis',
      'port 8080',
      'root virtiofs:root',
      'mount workspace:/workspace',
      'net 192.168.127.2/24',
      'gateway 192.168.127.1',
      'dns 192.168.127.1',
    ])
  })

  it("names the writable layer's disk and the /etc/hosts entries when the plumbing has them", () => {
    const bytes = encodeRunSpec(
      {command: ['true']},
      {
        ...plumbing,
        writableLayerDisk: {serial: 'aegis-rw'},
        network: {...plumbing.network!, hosts: [{name: 'coordinator.internal', address: '192.168.127.254'}]},
      },
    )
    const written = records(bytes)
    expect(written).toContain('rwdisk aegis-rw')
    expect(written.at(-1)).toBe('host 192.168.127.254 coordinator.internal')
    expect(records(encodeRunSpec({command: ['true']}, plumbing)).some((record) => /^(rwdisk|host) /.test(record))).toBe(
      false,
    )
  })

  it('passes the heartbeat interval only when given, and refuses a bad one', () => {
    expect(records(encodeRunSpec({command: ['x'], heartbeatMs: 500}, plumbing))).toContain('heartbeat_ms 500')
    expect(records(encodeRunSpec({command: ['x']}, plumbing)).some((record) => record.startsWith('heartbeat_ms'))).toBe(
      false,
    )
    expect(() => encodeRunSpec({command: ['x'], heartbeatMs: -1}, plumbing)).toThrow(/heartbeat/)
    expect(() => encodeRunSpec({command: ['x'], heartbeatMs: 1.5}, plumbing)).toThrow(/heartbeat/)
  })

  it('rejects what the guest could not represent', () => {
    expect(() => encodeRunSpec({command: []}, plumbing)).toThrow(AegisError)
    expect(() => encodeRunSpec({command: ['a\0b']}, plumbing)).toThrow(/NUL/)
    expect(() => encodeRunSpec({command: ['x'], env: {'A-B': '1'}}, plumbing)).toThrow(/variable name/)
    expect(() => encodeRunSpec({command: ['x'], secrets: {'../x': '1'}}, plumbing)).toThrow(/secret name/)
    expect(() => encodeRunSpec({command: ['x'], ports: [70000]}, plumbing)).toThrow(/port/)
    const withHost = (name: string, address = '192.168.127.254') =>
      encodeRunSpec({command: ['x']}, {...plumbing, network: {...plumbing.network!, hosts: [{name, address}]}})
    expect(() => withHost('bad name')).toThrow(/bad host name/)
    expect(() => withHost('-x.internal')).toThrow(/bad host name/)
    expect(() => withHost('ok.internal', '192.168.127.254 evil')).toThrow(/bad address/)
  })
})
