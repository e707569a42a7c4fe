import {execFileSync} from 'node:child_process'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import {afterAll, describe, expect, it} from 'vitest'

import {buildCpio, type CpioEntry} from '../../src/guest/cpio.js'
import {extractVmlinux} from '../../src/guest/kernel-image.js'
import {readModinfo, resolveModuleOrder} from '../../src/guest/modules.js'

const scratch = mkdtempSync(path.join(os.tmpdir(), 'aegis-initramfs-test-'))
afterAll(() => rmSync(scratch, {recursive: true, force: true}))

describe('buildCpio', () => {
  const entries: CpioEntry[] = [
    {path: 'modules/order', type: 'file', mode: 0o644, data: Buffer.from('a.ko\n')},
    {path: 'init', type: 'file', mode: 0o755, data: Buffer.from('#!/bin/sh\n')},
    {path: 'dev/console', type: 'chardev', mode: 0o600, major: 5, minor: 1},
    {path: 'bin/sh', type: 'symlink', target: 'busybox'},
  ]

  it('gives the same bytes for the same entries in any order', () => {
    expect(buildCpio(entries).equals(buildCpio([...entries].reverse()))).toBe(true)
  })

  it('is a newc archive that cpio lists with parents, modes and device numbers', () => {
    const archive = path.join(scratch, 'test.cpio')
    const bytes = buildCpio(entries)
    writeFileSync(archive, bytes)
    const listing = execFileSync('busybox', ['cpio', '-tv', '-F', archive], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    })
    const lines = listing
      .trim()
      .split('\n')
      .map((line) => line.replace(/\s+/g, ' '))
    expect(lines.map((line) => line.slice(line.indexOf(':00:00 ') + 7))).toEqual([
      'bin',
      'bin/sh -> busybox',
      'dev',
      'dev/console',
      'init',
      'modules',
      'modules/order',
    ])
    expect(lines.find((line) => line.endsWith(' init'))).toMatch(/^-rwxr-xr-x 0\/0 /)
    expect(lines.find((line) => line.endsWith('dev/console'))).toMatch(/^crw------- /)
    // busybox does not print device numbers: read rdevmajor and rdevminor from the header.
    const header = bytes.indexOf('dev/console\0') - 110
    expect([
      bytes.toString('ascii', header + 78, header + 86),
      bytes.toString('ascii', header + 86, header + 94),
    ]).toEqual(['00000005', '00000001'])
  })
})

/** A minimal ELF64 object with a .modinfo section, like a kernel module's. */
function fakeModule(fields: string[]): Buffer {
  const modinfo = Buffer.from(fields.map((field) => field + '\0').join(''))
  const names = Buffer.from('\0.modinfo\0.shstrtab\0')
  const header = Buffer.alloc(64)
  header.write('\x7fELF', 0, 'latin1')
  header[4] = 2
  header[5] = 1
  const sectionTable = 64 + modinfo.length + names.length
  header.writeBigUInt64LE(BigInt(sectionTable), 0x28)
  header.writeUInt16LE(64, 0x3a)
  header.writeUInt16LE(3, 0x3c)
  header.writeUInt16LE(2, 0x3e)
  const section = (name: number, offset: number, size: number) => {
    const entry = Buffer.alloc(64)
    entry.writeUInt32LE(name, 0)
    entry.writeBigUInt64LE(BigInt(offset), 0x18)
    entry.writeBigUInt64LE(BigInt(size), 0x20)
    return entry
  }
  return Buffer.concat([
    header,
    modinfo,
    names,
    section(0, 0, 0),
    section(1, 64, modinfo.length),
    section(10, 64 + modinfo.length, names.length),
  ])
}

describe('kernel modules', () => {
  it('reads .modinfo fields', () => {
    const info = readModinfo(fakeModule(['license=GPL', 'depends=virtio,virtio_ring', 'alias=a', 'alias=b']))
    expect(info.get('depends')).toEqual(['virtio,virtio_ring'])
    expect(info.get('alias')).toEqual(['a', 'b'])
  })

  it('orders modules after their dependencies and skips built-in ones', async () => {
    const dir = path.join(scratch, 'modules')
    execFileSync('mkdir', ['-p', path.join(dir, 'kernel/x')])
    const modules: Record<string, string> = {
      a: 'depends=b,c-d',
      b: 'depends=c_d',
      'c-d': 'depends=',
      e: 'depends=builtin',
    }
    const files = new Map<string, string>()
    for (const [name, depends] of Object.entries(modules)) {
      writeFileSync(path.join(dir, `kernel/x/${name}.ko`), fakeModule([depends]))
      files.set(name.replaceAll('-', '_'), `kernel/x/${name}.ko`)
    }
    const order = await resolveModuleOrder(dir, files, ['a', 'e', 'not_a_module'])
    expect(order.map((module) => module.name)).toEqual(['c_d', 'b', 'a', 'e'])
  })
})

describe('extractVmlinux', () => {
  it('decodes the LZ4 payload of a bzImage, overlapping matches included', () => {
    // Literals "\x7fELF", then an 8-byte match at offset 4, then the closing literals "end".
    const block = Buffer.from([0x44, 0x7f, 0x45, 0x4c, 0x46, 0x04, 0x00, 0x30, 0x65, 0x6e, 0x64])
    const payload = Buffer.alloc(8)
    payload.writeUInt32LE(0x184c2102, 0)
    payload.writeUInt32LE(block.length, 4)
    const trailer = Buffer.alloc(4)
    trailer.writeUInt32LE(15, 0)
    const payloadBytes = Buffer.concat([payload, block, trailer])
    const image = Buffer.alloc(5 * 512 + payloadBytes.length)
    image[0x1f1] = 4
    image.write('HdrS', 0x202, 'latin1')
    image.writeUInt32LE(0, 0x248)
    image.writeUInt32LE(payloadBytes.length, 0x24c)
    payloadBytes.copy(image, 5 * 512)
    expect(extractVmlinux(image)?.toString('latin1')).toBe('\x7fELF\x7fELF\x7fELFend')
  })
})
