/**
 * Which kernel modules go into the initramfs and in which order to load them. The order
 * comes from each module's own `depends=` field (its .modinfo ELF section, what
 * `modinfo -F depends` prints), so no depmod run and no modules.dep are needed.
 */

import {readFile} from 'node:fs/promises'
import path from 'node:path'

/** What the harness needs: virtio transports, net, rng, serial ports, virtiofs, overlay, block. */
export const GUEST_MODULES = [
  'virtio_mmio',
  'virtio_pci',
  'virtio_net',
  'virtio-rng',
  'virtio_console',
  'virtiofs',
  'overlay',
  'virtio_blk',
] as const

export interface KernelModule {
  name: string
  /** Path relative to the kernel's module directory (lib/modules/<version>). */
  file: string
  depends: string[]
}

/** The key=value strings of an ELF64 little-endian module's .modinfo section. */
export function readModinfo(elf: Buffer): Map<string, string[]> {
  if (elf.toString('latin1', 0, 4) !== '\x7fELF' || elf[4] !== 2 || elf[5] !== 1) {
    throw new Error('not an ELF64 little-endian kernel module')
  }
  const sectionTable = Number(elf.readBigUInt64LE(0x28))
  const entrySize = elf.readUInt16LE(0x3a)
  const count = elf.readUInt16LE(0x3c)
  const namesIndex = elf.readUInt16LE(0x3e)
  const section = (index: number) => {
    const at = sectionTable + index * entrySize
    return {
      name: elf.readUInt32LE(at),
      offset: Number(elf.readBigUInt64LE(at + 0x18)),
      size: Number(elf.readBigUInt64LE(at + 0x20)),
    }
  }
  const names = section(namesIndex)
  const fields = new Map<string, string[]>()
  for (let i = 0; i < count; i++) {
    const {name, offset, size} = section(i)
    const nameEnd = elf.indexOf(0, names.offset + name)
    if (elf.toString('latin1', names.offset + name, nameEnd) !== '.modinfo') continue
    for (const pair of elf.toString('utf8', offset, offset + size).split('\0')) {
      const eq = pair.indexOf('=')
      if (eq <= 0) continue
      const key = pair.slice(0, eq)
      fields.set(key, [...(fields.get(key) ?? []), pair.slice(eq + 1)])
    }
  }
  return fields
}

/** Module names use `-` and `_` interchangeably; the kernel treats them as one. */
function canonical(name: string): string {
  return name.replaceAll('-', '_')
}

/**
 * The modules `wanted` need, dependencies first. `files` maps a canonical module name to
 * its path under `moduleDir`; built-in modules (not in the map) are skipped.
 */
export async function resolveModuleOrder(
  moduleDir: string,
  files: Map<string, string>,
  wanted: readonly string[],
): Promise<KernelModule[]> {
  const ordered: KernelModule[] = []
  const visiting = new Set<string>()
  const done = new Set<string>()
  const visit = async (name: string): Promise<void> => {
    const key = canonical(name)
    if (done.has(key)) return
    if (visiting.has(key)) throw new Error(`kernel module dependency cycle at ${name}`)
    const file = files.get(key)
    if (file === undefined) {
      done.add(key) // built into the kernel
      return
    }
    visiting.add(key)
    const info = readModinfo(await readFile(path.join(moduleDir, file)))
    const depends = (info.get('depends')?.[0] ?? '').split(',').filter(Boolean)
    for (const dependency of depends) await visit(dependency)
    visiting.delete(key)
    done.add(key)
    ordered.push({name: key, file, depends})
  }
  for (const name of wanted) await visit(name)
  return ordered
}
