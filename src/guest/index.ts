/**
 * The guest side of a kit run: the kernel and initramfs (assembled, kept in the store), the run spec the
 * harness reads, and a bare QEMU boot (startVm/runVm) with a pluggable network backend.
 */

export {checkAccelChoice, chooseAccel, type Accel, type AccelChoice} from './accel.js'
export {type GuestArch, type GuestImage} from './assemble.js'
export {checkInitrdFile, checkKernelFile} from './boot-files.js'
export {loadGuest, resolveGuest, type StoredGuest} from './guest-store.js'
export {resolveImageUser, type ImageUser} from './image-user.js'
export {
  GUEST_MAC,
  GUEST_NETWORK,
  noNetwork,
  userNetwork,
  type AttachedNetwork,
  type GuestNetwork,
  type NetworkBackend,
  type PortForward,
} from './network.js'
export {checkVmTools, runVm, startVm, type RunningVm, type VmOptions, type VmResult} from './qemu.js'
export {encodeRunSpec, type GuestPlumbing, type RunSpec} from './spec.js'
export {
  TUNNEL_PORT,
  type ExecRequest,
  type ExecSession,
  type HeartbeatSample,
  type TunnelStream,
} from './control-channel.js'
export {checkWritableLayerSize} from './writable-layer.js'
export {ChildProcessGroup} from './child-processes.js'
export {
  checkHostPortFree,
  findGvproxy,
  gvproxyNetwork,
  parseInternalHosts,
  type GvproxyBackend,
  type GvproxyOptions,
} from './gvproxy.js'
