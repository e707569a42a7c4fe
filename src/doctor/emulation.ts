/**
 * qemu-user through binfmt_misc, which builds for the other architecture need (an arm64 image's
 * install scripts and Debian maintainer scripts run emulated). The registration is read the way
 * a build reads it (emulationProblem), then proven: a 132-byte static program for the other
 * architecture, which only exits with code 42, is run.
 */
import {existsSync} from 'node:fs'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {messageOf} from '../errors.js'
import {execFileText} from '../exec.js'
import {BINFMT_DIR, emulationProblem} from '../builder/debian-base.js'
import {
  otherArchitecture,
  supportedHostArchitecture,
  toElfMachine,
  toQemuUser,
  type Architecture,
} from '../oci/platform.js'
import {ok, warn, type Check} from './check.js'

const EXIT_CODE = 42

/** Each architecture's machine code for exit(42). */
const EXIT_CODE_PROGRAM: Record<Architecture, Buffer> = {
  // movz x0, #42; movz x8, #93 (exit); svc #0
  arm64: Buffer.from([0x40, 0x05, 0x80, 0xd2, 0xa8, 0x0b, 0x80, 0xd2, 0x01, 0x00, 0x00, 0xd4]),
  // mov edi, 42; mov eax, 60 (exit); syscall
  amd64: Buffer.from([0xbf, EXIT_CODE, 0, 0, 0, 0xb8, 60, 0, 0, 0, 0x0f, 0x05]),
}

/** A static ELF64 executable: one loadable segment holding the header and `code`, entered at `code`. */
export function tinyElf(machine: number, code: Buffer): Buffer {
  const base = 0x400000
  const headerSize = 64 + 56
  const elf = Buffer.alloc(headerSize + code.length)
  elf.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]) // ELF, 64-bit, little-endian, version 1
  elf.writeUInt16LE(2, 16) // ET_EXEC
  elf.writeUInt16LE(machine, 18)
  elf.writeUInt32LE(1, 20)
  elf.writeBigUInt64LE(BigInt(base + headerSize), 24) // entry
  elf.writeBigUInt64LE(64n, 32) // program headers right after this header
  elf.writeUInt16LE(64, 52)
  elf.writeUInt16LE(56, 54)
  elf.writeUInt16LE(1, 56)
  // PT_LOAD, readable and executable, the whole file at `base`.
  elf.writeUInt32LE(1, 64)
  elf.writeUInt32LE(5, 68)
  elf.writeBigUInt64LE(0n, 72)
  elf.writeBigUInt64LE(BigInt(base), 80)
  elf.writeBigUInt64LE(BigInt(base), 88)
  elf.writeBigUInt64LE(BigInt(elf.length), 96)
  elf.writeBigUInt64LE(BigInt(elf.length), 104)
  elf.writeBigUInt64LE(0x10000n, 112)
  code.copy(elf, headerSize)
  return elf
}

/** Runs the tiny program for `arch`: undefined when it exits 42, else what happened. */
async function runForeignProgram(arch: Architecture): Promise<string | undefined> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'aegis-kit-doctor-'))
  try {
    const program = path.join(dir, `exit-${EXIT_CODE}-${arch}`)
    await writeFile(program, tinyElf(toElfMachine(arch), EXIT_CODE_PROGRAM[arch]), {mode: 0o755})
    const result = await execFileText(program, [], {timeoutMs: 10_000})
    if (result.exitCode === EXIT_CODE) return undefined
    return `a test ${arch} program exited with ${result.exitCode ?? result.signal} instead of ${EXIT_CODE}${result.stderr ? `: ${result.stderr.split('\n')[0]}` : ''}`
  } catch (error) {
    return `a test ${arch} program did not run: ${messageOf(error)}`
  } finally {
    await rm(dir, {recursive: true, force: true})
  }
}

export async function checkEmulation(binfmtDir = BINFMT_DIR): Promise<Check> {
  // An unsupported host (neither amd64 nor arm64) is checked as amd64 is: for arm64 emulation.
  const arch = otherArchitecture(supportedHostArchitecture() ?? 'amd64')
  const qemu = toQemuUser(arch)
  const part = `${arch} emulation`
  const problem = await emulationProblem(arch, binfmtDir)
  const fix = `scripts/setup from the checkout, or by hand: ${handFix(problem ?? '', qemu, binfmtDir)} (only ${arch} builds need it)`
  if (problem) return warn(part, problem, fix)
  const registration = await readFile(path.join(binfmtDir, qemu), 'utf8').catch(() => '')
  const interpreter = /^interpreter (.+)$/m.exec(registration)?.[1]
  // With the F flag the kernel holds the interpreter open, so it runs even when the file is gone,
  // but only until the next registration (a reboot): a missing file is a warning of its own.
  if (interpreter && !existsSync(interpreter))
    return warn(
      part,
      `${qemu} is registered with ${interpreter}, which no longer exists`,
      `apt-get install --reinstall qemu-user-static (only ${arch} builds need it)`,
    )
  const failure = await runForeignProgram(arch)
  if (failure) return warn(part, failure, fix)
  return ok(part, `${qemu} through binfmt_misc (${interpreter ?? 'registered'}, F flag); a test ${arch} program ran`)
}

/** The commands that register `qemu` as scripts/setup does, from where `problem` says things stand. */
function handFix(problem: string, qemu: string, binfmtDir: string): string {
  const register = `cat /usr/lib/binfmt.d/${qemu}.conf > ${binfmtDir}/register`
  if (/not mounted/.test(problem))
    return `apt-get install qemu-user-static && mount -t binfmt_misc binfmt_misc ${binfmtDir} && ${register}`
  if (/disabled/.test(problem))
    return `echo 1 > ${/binfmt_misc is disabled/.test(problem) ? `${binfmtDir}/status` : `${binfmtDir}/${qemu}`}`
  if (/without the F/.test(problem)) return `echo -1 > ${binfmtDir}/${qemu} && ${register}`
  return `apt-get install qemu-user-static && ${register}`
}
