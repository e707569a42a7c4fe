/**
 * The run spec the host hands the guest harness over the control channel (never the
 * kernel command line: secrets travel here). See images/guest/harness.c for the reader.
 */

import {AegisError} from '../errors.js'

export interface RunSpec {
  /** The workload's argv; argv[0] is looked up on the workload's PATH. */
  command: string[]
  env?: Record<string, string>
  /** Given to the workload as environment variables and as /run/secrets/NAME (0400, its owner). */
  secrets?: Record<string, string>
  /** Numeric ids; resolve an image's USER with `resolveImageUser`. Default 0:0. */
  user?: {uid: number; gid: number; groups?: number[]}
  /** Default "/". */
  workdir?: string
  /** Guest ports the host forwards to; apps bound only to 127.0.0.1 get a relay on the guest IP. */
  ports?: number[]
  /** Default "aegis". */
  hostname?: string
  /**
   * How often the harness sends an activity sample over the control channel (RunningVm.onHeartbeat).
   * Default 5000 (the harness's); 0: never.
   */
  heartbeatMs?: number
}

/** Where the guest's root comes from and how its network is set; chosen by the VM launcher. */
export interface GuestPlumbing {
  root: {kind: 'virtiofs'; tag: string} | {kind: 'block'; device: string}
  /** Extra virtiofs shares: tag → absolute guest path. */
  mounts: {tag: string; guestPath: string}[]
  /** The writable layer's disk, found by its virtio serial; without it the layer is a tmpfs. */
  writableLayerDisk?: {serial: string}
  network?: {
    address: string
    prefixLength: number
    gateway: string
    dns: string
    /** Names added to the guest's /etc/hosts (e.g. internal_hosts names), each with its IPv4 address. */
    hosts?: {name: string; address: string}[]
  }
}

export const CONTROL_PORT_NAME = 'aegis.ctl'

export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/
/** A DNS name as /etc/hosts takes it: dot-separated labels of letters, digits and inner hyphens. */
export const HOST_NAME =
  /^(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/
const IPV4 = /^(?:(?:25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(?:25[0-5]|2[0-4]\d|1?\d?\d)$/

/** `value` as a record value: anything but a NUL byte, which ends a record. */
export function checkSpecValue(what: string, value: string): string {
  if (value.includes('\0'))
    throw new AegisError(`${what} contains a NUL byte`, {
      hint: 'remove the NUL byte; environment values cannot carry one',
    })
  return value
}

/** The bytes the harness reads: a header line, then NUL-terminated "key value" records. */
export function encodeRunSpec(spec: RunSpec, plumbing: GuestPlumbing): Buffer {
  if (spec.command.length === 0)
    throw new AegisError('the run spec has no command', {hint: 'give the command to run in the VM'})
  const records: string[] = []
  const add = (key: string, value: string) => records.push(`${key} ${value}`)
  for (const arg of spec.command) add('arg', checkSpecValue('a command argument', arg))
  for (const [name, value] of Object.entries(spec.env ?? {})) {
    if (!ENV_NAME.test(name))
      throw new AegisError(`bad environment variable name ${JSON.stringify(name)}`, {
        hint: 'use letters, digits and _ only',
      })
    add('env', `${name}=${checkSpecValue(`environment variable ${name}`, value)}`)
  }
  for (const [name, value] of Object.entries(spec.secrets ?? {})) {
    if (!ENV_NAME.test(name))
      throw new AegisError(`bad secret name ${JSON.stringify(name)}`, {hint: 'use letters, digits and _ only'})
    add('secret', `${name}=${checkSpecValue(`secret ${name}`, value)}`)
  }
  const user = spec.user ?? {uid: 0, gid: 0}
  add('user', `${user.uid}:${user.gid}`)
  for (const group of user.groups ?? []) add('group', String(group))
  add('workdir', checkSpecValue('the workdir', spec.workdir ?? '/'))
  add('hostname', checkSpecValue('the hostname', spec.hostname ?? 'aegis'))
  if (spec.heartbeatMs !== undefined) {
    if (!Number.isInteger(spec.heartbeatMs) || spec.heartbeatMs < 0 || spec.heartbeatMs > 3_600_000)
      throw new AegisError(`bad heartbeat interval ${spec.heartbeatMs} ms`, {
        hint: 'give whole milliseconds, 0 to 3600000',
      })
    add('heartbeat_ms', String(spec.heartbeatMs))
  }
  for (const port of spec.ports ?? []) {
    if (!Number.isInteger(port) || port < 1 || port > 65535)
      throw new AegisError(`bad port ${port}`, {hint: 'ports are 1-65535'})
    add('port', String(port))
  }
  add('root', plumbing.root.kind === 'virtiofs' ? `virtiofs:${plumbing.root.tag}` : `block:${plumbing.root.device}`)
  if (plumbing.writableLayerDisk)
    add('rwdisk', checkSpecValue("the writable layer's disk serial", plumbing.writableLayerDisk.serial))
  for (const mount of plumbing.mounts) add('mount', `${mount.tag}:${mount.guestPath}`)
  if (plumbing.network) {
    const net = plumbing.network
    add('net', `${net.address}/${net.prefixLength}`)
    add('gateway', net.gateway)
    add('dns', net.dns)
    for (const host of net.hosts ?? []) {
      if (!HOST_NAME.test(host.name))
        throw new AegisError(`bad host name ${JSON.stringify(host.name)}`, {
          hint: 'use letters, digits, hyphens and dots, e.g. coordinator.internal',
        })
      if (!IPV4.test(host.address))
        throw new AegisError(`bad address ${JSON.stringify(host.address)} for host ${host.name}`, {
          hint: 'give an IPv4 address',
        })
      add('host', `${host.address} ${host.name}`)
    }
  }
  const body = encodeRecords(records)
  return Buffer.concat([Buffer.from(`AEGIS-SPEC/1 ${body.length}\n`, 'ascii'), body])
}

/** "key value" records, each NUL-terminated: the run spec's body and an exec request's payload. */
export function encodeRecords(records: string[]): Buffer {
  return Buffer.from(records.map((record) => record + '\0').join(''), 'utf8')
}
