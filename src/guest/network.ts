/**
 * How a VM's NIC reaches the host. Every backend gives the guest the same addresses
 * (gvproxy's layout: guest .2, gateway .1 on 192.168.127.0/24; DNS wherever the backend
 * serves it), so the harness never cares which one is in use. QEMU's built-in user networking is the first backend;
 * gvproxy plugs in here as another implementation of NetworkBackend.
 */

import type {ChildProcessGroup} from './child-processes.js'
import type {GuestPlumbing} from './spec.js'

export type GuestNetwork = NonNullable<GuestPlumbing['network']>

export const GUEST_NETWORK: GuestNetwork = {
  address: '192.168.127.2',
  prefixLength: 24,
  gateway: '192.168.127.1',
  dns: '192.168.127.1',
}
/** gvproxy hands this MAC the .2 lease; kept the same for every backend. */
export const GUEST_MAC = '5a:94:ef:e4:0c:ee'

export interface PortForward {
  /** Host port to listen on (on 127.0.0.1 unless hostAddress says otherwise). */
  hostPort: number
  guestPort: number
  hostAddress?: string
}

export interface AttachedNetwork {
  /** QEMU arguments adding the NIC (a netdev with id "net0" and its device). */
  qemuArgs: string[]
  /** Undefined when the VM has no NIC. */
  guest?: GuestNetwork
  /**
   * Settles once the host side carries the guest's traffic (its helper up, ports exposed). QEMU
   * starts before: a guest sends nothing until its harness has booted.
   */
  ready?: Promise<void>
  /** Called after QEMU exits; helpers started through the group are stopped with it anyway. */
  detach(): Promise<void>
}

export interface NetworkBackend {
  /**
   * Fails when the backend cannot work here (a helper not installed, a host port taken), before
   * anything is built or started. attach() checks again: the world may change in between.
   */
  check?(): Promise<void>
  /** Prepares the host side; `runDir` is private to this VM for sockets and logs. */
  attach(context: {runDir: string; processes: ChildProcessGroup}): Promise<AttachedNetwork>
  /**
   * Present when the caller owns the host ports (gvproxy's `relayed`): the unix socket that
   * reaches `guestPort` in the attached VM, once its forwards are up; undefined otherwise.
   */
  forwardSocket?(guestPort: number): string | undefined
  /**
   * With forwardSocket: the unix socket for a guest port the VM was not started with (one exposed
   * at run time), made on first use in the attached VM; the known one otherwise.
   */
  openForwardSocket?(guestPort: number): Promise<string>
}

function nicArgs(netdev: string): string[] {
  return ['-netdev', netdev, '-device', `virtio-net-device,netdev=net0,mac=${GUEST_MAC}`]
}

/** QEMU's built-in user-mode network (slirp): no helper process, host forwards via hostfwd. */
export function userNetwork(options: {forwards?: PortForward[]} = {}): NetworkBackend {
  return {
    async attach() {
      const forwards = (options.forwards ?? []).map(
        (forward) =>
          `,hostfwd=tcp:${forward.hostAddress ?? '127.0.0.1'}:${forward.hostPort}-${GUEST_NETWORK.address}:${forward.guestPort}`,
      )
      // slirp refuses a DNS address equal to its gateway's, so its resolver sits at .3.
      const guest = {...GUEST_NETWORK, dns: '192.168.127.3'}
      const netdev = `user,id=net0,net=192.168.127.0/24,host=${guest.gateway},dns=${guest.dns}${forwards.join('')}`
      return {qemuArgs: nicArgs(netdev), guest, detach: async () => {}}
    },
  }
}

/** No NIC at all: only loopback inside the guest. */
export function noNetwork(): NetworkBackend {
  return {
    async attach() {
      return {qemuArgs: [], detach: async () => {}}
    },
  }
}
