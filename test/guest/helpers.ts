/** The guest, roots, ports and process checks for the guest tests. */

import {execFileSync} from 'node:child_process'
import {copyFileSync, mkdirSync, readdirSync, readFileSync, statSync, symlinkSync, writeFileSync} from 'node:fs'
import {createHash} from 'node:crypto'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

import {resolveGuest, type StoredGuest} from '../../src/guest/guest-store.js'
import {LocalStore} from '../../src/store/index.js'

/**
 * This host's guest, got the way `run` gets it: from a store, assembled and stored the first time.
 * The store lives in AEGIS_GUEST_CACHE (or a directory in /tmp), so test runs share one assembly.
 */
export async function hostGuest(): Promise<StoredGuest> {
  const cacheDir = process.env.AEGIS_GUEST_CACHE ?? path.join(os.tmpdir(), 'aegis-kit-guest-cache')
  return resolveGuest({store: new LocalStore(path.join(cacheDir, 'store')), cacheDir})
}

const BUSYBOX_APPLETS = [
  'sh',
  'echo',
  'cat',
  'ls',
  'id',
  'httpd',
  'sleep',
  'mkdir',
  'stat',
  'sha256sum',
  'grep',
  'rm',
  'true',
  'dd',
  'head',
  'printf',
  'touch',
  'stty',
  'tty',
  'ps',
  'kill',
]

/**
 * A tiny image root: static busybox in /bin (from busybox-static) and a dynamically
 * linked glibc program, the host's /usr/bin/env with its loader and libc.
 */
export function buildTestRoot(dir: string): void {
  const busybox = readFileSync('/bin/busybox')
  if (busybox.includes('/lib64/ld-linux'))
    throw new Error('/bin/busybox is dynamically linked: apt-get install busybox-static')
  mkdirSync(path.join(dir, 'bin'), {recursive: true})
  copyFileSync('/bin/busybox', path.join(dir, 'bin/busybox'))
  for (const applet of BUSYBOX_APPLETS) symlinkSync('busybox', path.join(dir, 'bin', applet))
  for (const file of ['/usr/bin/env', '/lib64/ld-linux-x86-64.so.2', '/lib/x86_64-linux-gnu/libc.so.6']) {
    mkdirSync(path.join(dir, path.dirname(file)), {recursive: true})
    copyFileSync(file, path.join(dir, file))
  }
  mkdirSync(path.join(dir, 'etc'))
  mkdirSync(path.join(dir, 'www'))
  mkdirSync(path.join(dir, 'www/cgi-bin'))
  writeFileSync(path.join(dir, 'www/index.html'), 'hello-from-guest\n')
  // Echoes the request body: proves large bodies cross the port relay both ways.
  writeFileSync(
    path.join(dir, 'www/cgi-bin/echo'),
    '#!/bin/sh\nprintf "Content-Type: application/octet-stream\\r\\n\\r\\n"\nexec head -c "$CONTENT_LENGTH"\n',
    {mode: 0o755},
  )
  execFileSync('chmod', ['755', path.join(dir, 'bin/busybox'), path.join(dir, 'usr/bin/env')])
}

/** Every path under `dir` with its type, mode and content hash: to prove nothing changed. */
export function snapshotTree(dir: string): string[] {
  const lines: string[] = []
  const walk = (current: string) => {
    for (const name of readdirSync(current).sort()) {
      const full = path.join(current, name)
      const stat = statSync(full, {throwIfNoEntry: false}) ?? {mode: -1, isFile: () => false, isDirectory: () => false}
      const hash = stat.isFile() ? createHash('sha256').update(readFileSync(full)).digest('hex') : ''
      lines.push(`${path.relative(dir, full)} ${stat.mode} ${hash}`)
      if (stat.isDirectory()) walk(full)
    }
  }
  walk(dir)
  return lines
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net
      .createServer()
      .once('error', reject)
      .listen(0, '127.0.0.1', () => {
        const {port} = server.address() as net.AddressInfo
        server.close(() => resolve(port))
      })
  })
}

/** PIDs of live processes whose command line contains `needle` (zombies excluded). */
export function processesMentioning(needle: string): number[] {
  const found: number[] = []
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8')
      const state = /^State:\s+(\S)/m.exec(readFileSync(`/proc/${entry}/status`, 'utf8'))?.[1]
      if (cmdline.includes(needle) && state !== 'Z') found.push(Number(entry))
    } catch {
      // The process ended while we looked.
    }
  }
  return found
}

/**
 * Compiles `sources` (paths under src/) with their imports into `outDir` as plain JavaScript,
 * for a child process that must run our modules without vitest (one killed to see what it leaves).
 */
export function compileForChild(outDir: string, sources: string[]): void {
  const repoRoot = path.resolve(import.meta.dirname, '../..')
  execFileSync(
    path.join(repoRoot, 'node_modules/.bin/tsc'),
    [
      '--outDir',
      outDir,
      '--rootDir',
      path.join(repoRoot, 'src'),
      '--module',
      'NodeNext',
      '--moduleResolution',
      'NodeNext',
      '--target',
      'ES2022',
      '--skipLibCheck',
      ...sources.map((source) => path.join(repoRoot, source)),
    ],
    {cwd: repoRoot},
  )
}

/** CPU time (ms, user + system) a process has used so far, from /proc/PID/stat. */
export function cpuTimeMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after the command name (which may hold spaces): utime and stime are the 12th and 13th.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const ticks = Number(fields[11]) + Number(fields[12])
  return (ticks * 1000) / Number(execFileSync('getconf', ['CLK_TCK'], {encoding: 'utf8'}).trim())
}
