import path from 'node:path'
import {Args, Flags, type Interfaces} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {createStepLines, type StepLines} from '../cli/steps.js'
import {confirmTrust, trustFlag} from '../cli/trust.js'
import {AegisError, messageOf} from '../errors.js'
import {gvproxyNetwork, type AccelChoice} from '../guest/index.js'
import {RESTART_POLICIES, type RestartPolicy} from '../runner/lifecycle.js'
import {hostArchitecture, toPlatformName} from '../oci/platform.js'
import {readConfigFile} from '../hooks/operations.js'
import type {BuildEvent} from '../builder/build.js'
import {loadKit, type Kit} from '../kit/kit.js'
import {parseSecretFlag} from '../kit/secrets.js'
import {parseDuration} from '../kit/units.js'
import {formatUnhonouredFieldWarning} from '../kit/unhonoured.js'
import {
  isSupervisor,
  launchDetached,
  openSupervisorChannel,
  readGrant,
  type SupervisorChannel,
} from '../runner/detach.js'
import {InstanceRegistry} from '../runner/instances.js'
import {parseCapFlag} from '../runner/capabilities.js'
import {describeExit, type RunningInstance, type RunOptions, startInstance} from '../runner/run.js'
import {parseEnv, parseExpose, parseMemory} from '../runner/options.js'
import {defaultStoreRoot} from '../paths.js'
import {printable} from '../printable.js'
import {openStore} from '../store/open.js'

type RunFlags = Interfaces.InferredFlags<typeof Run.flags>

/** The arguments as given (re-run by --detach), parsed and checked. */
interface Invocation {
  given: string[]
  args: {kit: string}
  flags: RunFlags
  /** The workload's command: what follows `--`. */
  command: string[] | undefined
  stopAfterMs: number
}

/** An instance to run in this process: the invocation, its kit, and where it is stored and recorded. */
interface InstanceContext {
  invocation: Invocation
  kit: Kit
  storeRoot: string
  registry: InstanceRegistry
  name: string
  controller: AbortController
}

/** Where start-up statuses and the workload's output go; `steps` are the live step lines until the instance is up. */
interface Progress {
  steps: StepLines | undefined
  status: (message: string) => void
  output: (line: string) => void
}

export default class Run extends BaseCommand {
  static override summary = 'Boot a kit in an isolated microVM and print its URL.'
  static override description =
    `Builds the kit if its image is missing or stale, checks its config (validate_config), renders
the instance environment (render_env), then boots the image in a QEMU microVM: the image's root
read-only under a private writable layer, the workspace at /workspace, secrets only in the
workload's environment and /run/secrets/NAME, ports exposed on 127.0.0.1 only. Waits for the
kit's healthcheck, prints the URL(s), and streams the workload's output until it exits or you
press Ctrl-C (SIGTERM to the workload, a grace period, then power off). The exit code is the
workload's. The guest kernel and initramfs are an artifact in the store (aegis-guest:..., assembled
from Debian's kernel package on first use); --guest, --kernel and --initrd boot others.`

  static override examples = [
    {
      description: 'Run OpenClaw and open its Control UI',
      command:
        'ANTHROPIC_API_KEY=sk-ant-… <%= config.bin %> <%= command.id %> openclaw --expose 18789 --secret ANTHROPIC_API_KEY',
    },
    {
      description: 'The bot profile with a Telegram token, its own workspace',
      command:
        '<%= config.bin %> <%= command.id %> openclaw --profile bot --secret TELEGRAM_BOT_TOKEN --workspace ./claw-bot --expose 18789',
    },
    {
      description: 'The hello kit on host port 8080',
      command: '<%= config.bin %> <%= command.id %> hello --expose 8080',
    },
    {
      description: 'A one-off command in the kit image',
      command: '<%= config.bin %> <%= command.id %> hello -- busybox uname -a',
    },
    {
      description: 'Software emulation without the KVM check (e.g. where /dev/kvm is known not to work)',
      command: '<%= config.bin %> <%= command.id %> hello --accel tcg -- busybox uname -m',
    },
    {
      description: 'In the background: back to the shell once healthy; then ps, logs -f, stop',
      command:
        '<%= config.bin %> <%= command.id %> openclaw --expose 18789 --detach && <%= config.bin %> logs openclaw -f',
    },
  ]

  static override strict = false

  static override args = {
    kit: Args.string({description: 'Kit name, kit directory, or aegis-kit.yaml file.', required: true}),
  }

  static override flags = {
    name: Flags.string({description: 'Instance name (default: the kit name); names the default workspace.'}),
    profile: Flags.string({description: 'Instance profile from the kit (e.g. bot, work).'}),
    expose: Flags.string({
      description: 'Expose a guest port on 127.0.0.1: HOST[:GUEST]. Repeatable.',
      multiple: true,
      default: [],
    }),
    secret: Flags.string({
      description: 'Pass a declared secret: NAME (value from $NAME) or NAME=SOURCE_ENV. Repeatable.',
      multiple: true,
      default: [],
    }),
    env: Flags.string({
      description: 'Set an environment variable in the workload: K=V. Repeatable.',
      multiple: true,
      default: [],
    }),
    config: Flags.string({description: "App config file (JSON or YAML) merged over the kit's config."}),
    session: Flags.string({
      description:
        'Session to join: instances of one session share a workspace when the kit says workspace.mode: shared, keep per_session secrets, and are capped by resources.max_agents_per_session.',
    }),
    workspace: Flags.string({
      description:
        "Host directory mounted at /workspace (default: the session's shared one, or a per-name directory in aegis-kit's data dir).",
    }),
    memory: Flags.string({description: "VM memory, e.g. 2048mb or 2gb (default: the profile's or kit's)."}),
    cpus: Flags.integer({description: "vCPUs (default: the profile's or kit's).", min: 1, max: 64}),
    backend: Flags.string({description: 'VM backend.', options: ['auto', 'qemu', 'krun'], default: 'auto'}),
    accel: Flags.string({
      description:
        "QEMU's accelerator: auto is KVM when a test boot shows it works (checked once per host boot), else TCG with a warning.",
      options: ['auto', 'kvm', 'tcg'],
      default: 'auto',
    }),
    verbose: Flags.boolean({
      description:
        "Show the build tools' own output (mmdebstrap, npm) when the image needs building. Without it a terminal shows one live line per start-up step, and a failed step's last lines.",
    }),
    detach: Flags.boolean({
      char: 'd',
      description:
        'Run in the background: return once the instance is healthy, keep its output in a log (aegis-kit logs NAME), stop it with aegis-kit stop NAME.',
    }),
    restart: Flags.string({
      description:
        "What to do when the workload ends: no, on-failure (a non-zero exit) or always; a new VM boots after a backoff (1 s, doubling while it keeps crashing, up to 30 s). A profile's always_on means always.",
      options: RESTART_POLICIES as string[],
      default: 'no',
    }),
    'stop-after': Flags.string({
      description:
        'How long an instance stays paused before its VM is stopped to free its memory; the next connection to an exposed port boots it again.',
      default: '5m',
    }),
    kernel: Flags.string({
      description: 'Boot this kernel (an x86-64 vmlinux or bzImage) instead of the guest kernel in the store.',
    }),
    initrd: Flags.string({
      description: "Boot this initramfs instead of the guest's (it holds the harness and the kernel's modules).",
    }),
    image: Flags.string({
      description:
        "Boot this image from the local store instead of building the kit's (the kit's hooks, profile and settings still apply), e.g. one pulled with images pull.",
    }),
    guest: Flags.string({
      description: 'Boot this guest artifact from the store (see `aegis-kit images`), e.g. one pulled from a registry.',
    }),
    cap: Flags.string({
      description:
        "Lower one of the profile's capability claims (what the instance may ask of the guest API): CLAIM=VALUE, e.g. max_children=1, spawn=false, allowed_secrets=A,B. Repeatable; never above the profile's.",
      multiple: true,
      default: [],
    }),
    trust: trustFlag,
  }

  async run(): Promise<void> {
    const invocation = await this.checkInvocation()
    const {args, flags} = invocation
    const kit = await loadKit(args.kit)
    // Before --detach hands over: the supervisor finds the decision in the store.
    await confirmTrust(kit, flags.trust)
    // A detached supervisor is this command run again: the user saw the warnings from the launcher.
    if (!isSupervisor())
      for (const warning of kit.warnings) process.stderr.write(`${formatUnhonouredFieldWarning(warning)}\n`)
    const storeRoot = defaultStoreRoot()
    const registry = InstanceRegistry.forDataDir(path.dirname(storeRoot))
    const name = flags.name ?? kit.manifest.name
    const controller = new AbortController()
    if (flags.detach && !isSupervisor()) return this.launch(invocation.given, registry, name, controller, flags.verbose)
    await this.runInstance({invocation, kit, storeRoot, registry, name, controller})
  }

  /** Parses the arguments and checks what needs no kit: the workload's command, --backend, --stop-after. */
  private async checkInvocation(): Promise<Invocation> {
    // Everything after `--` is the workload's command, never flags of ours (read before parse(),
    // which replaces this.argv with what it parsed: the `--` and the command are gone after it).
    const given = [...this.argv]
    const dash = given.indexOf('--')
    const command = dash >= 0 ? given.slice(dash + 1) : undefined
    const {args, flags, argv} = await this.parse(Run, dash >= 0 ? given.slice(0, dash) : given)
    if (argv.length > 1)
      throw new AegisError(`unexpected argument ${String(argv[1])}`, {
        hint: 'put the command to run after --, e.g. aegis-kit run hello -- busybox uname -a',
      })
    if (flags.backend === 'krun')
      throw new AegisError('the krun backend needs libkrun, which is not installed here (Debian does not package it)', {
        hint: 'use --backend qemu (the default on Linux)',
      })
    if (command !== undefined && command.length === 0)
      throw new AegisError('nothing after --', {hint: 'give the command to run, e.g. -- busybox uname -a'})
    const stopAfterMs = parseDuration(flags['stop-after'])
    if (stopAfterMs === undefined || stopAfterMs <= 0)
      throw new AegisError(`--stop-after ${flags['stop-after']} is not a duration`, {hint: 'e.g. 5m, 30s or 1h'})
    return {given, args, flags, command, stopAfterMs}
  }

  /** The instance in this process (in the foreground, or as a detached supervisor): started, then watched until its workload ends. */
  private async runInstance(context: InstanceContext): Promise<void> {
    const {controller} = context
    // A detached supervisor's stderr is the instance's log; its progress also goes to the launcher.
    const channel = isSupervisor() ? openSupervisorChannel() : undefined
    // A child spawned through its parent's guest API: its token comes on a private pipe.
    const grant = readGrant()
    const progress = this.createProgress(context.name, channel, context.invocation.flags.verbose)
    let instance: RunningInstance | undefined
    let interrupts = 0
    const onSignal = () => {
      interrupts++
      controller.abort()
      if (!instance) return
      progress.status(
        interrupts === 1
          ? `stopping ${instance.name} (Ctrl-C again to power off now)`
          : `powering off ${instance.name}`,
      )
      void instance.stop(interrupts === 1 ? 10_000 : 0)
    }
    await underSignals(
      onSignal,
      () => progress.steps,
      async () => {
        instance = await startInstance(await this.instanceOptions(context, channel, grant, progress))
        if (controller.signal.aborted) onSignal()
        progress.steps?.close()
        progress.steps = undefined
        reportUp(instance, context.kit, channel, progress.status)
        const result = await instance.result
        progress.status(describeExit(instance.name, result, instance.memoryMib))
        if (result.exitCode !== 0) this.exit(result.exitCode)
      },
    )
  }

  /** Start-up statuses and the workload's output, on the terminal (and a supervisor's statuses to its launcher). */
  private createProgress(name: string, channel: SupervisorChannel | undefined, verbose: boolean): Progress {
    const prefix = `${name} | `
    const progress: Progress = {
      // On a terminal each start-up step is a live line until the instance is up; a supervisor's stderr is a log.
      steps: channel === undefined && process.stderr.isTTY ? createStepLines(process.stderr, {verbose}) : undefined,
      status: (message) => {
        if (progress.steps) showStatus(progress.steps, message)
        else process.stderr.write(`aegis-kit: ${message}\n`)
        channel?.status(message)
      },
      output: (line) => {
        // Kernel messages and the harness's protocol lines are plumbing, shown only with --debug.
        if (!this.debugEnabled && (/^\[\s*\d+\.\d+\] /.test(line) || /^AEGIS_[A-Z]+(=.*)?$/.test(line))) return
        if (progress.steps) progress.steps.above(() => process.stdout.write(`${prefix}${line}\n`))
        else process.stdout.write(`${prefix}${line}\n`)
      },
    }
    return progress
  }

  /** What startInstance is given: the flags read into the instance's settings, and where its progress goes. */
  private async instanceOptions(
    context: InstanceContext,
    channel: SupervisorChannel | undefined,
    grant: RunOptions['grant'],
    progress: Progress,
  ): Promise<RunOptions> {
    const {kit, storeRoot} = context
    const {flags, command, stopAfterMs} = context.invocation
    return {
      kit,
      store: openStore(storeRoot),
      dataDir: path.dirname(storeRoot),
      name: flags.name,
      profile: flags.profile,
      expose: flags.expose.map(parseExpose),
      secrets: flags.secret.map(parseSecretFlag),
      env: Object.fromEntries(flags.env.map(parseEnv)),
      workspace: flags.workspace,
      session: flags.session,
      memoryMib: flags.memory ? parseMemory(flags.memory) : undefined,
      cpus: flags.cpus,
      kernel: flags.kernel === undefined ? undefined : path.resolve(flags.kernel),
      initrd: flags.initrd === undefined ? undefined : path.resolve(flags.initrd),
      guest: flags.guest,
      image: flags.image,
      accel: flags.accel as AccelChoice,
      restart: flags.restart as RestartPolicy,
      stopAfterMs,
      caps: Object.fromEntries(flags.cap.map(parseCapFlag)),
      ...(grant ? {grant} : {}),
      command,
      config: flags.config ? await readConfigFile(flags.config) : undefined,
      registry: context.registry,
      detached: channel !== undefined,
      network: this.instanceNetwork(kit, channel, command, progress.status),
      onBuild: (event) => showBuildEvent(progress, flags.verbose, event),
      onStatus: progress.status,
      onOutput: progress.output,
      signal: context.controller.signal,
    }
  }

  /** The instance's network: gvproxy with the kit's forwards, and only the host services it declares. */
  private instanceNetwork(
    kit: Kit,
    channel: SupervisorChannel | undefined,
    command: string[] | undefined,
    status: (message: string) => void,
  ): RunOptions['network'] {
    return (forwards) =>
      gvproxyNetwork({
        forwards: forwards.map((f) => ({hostPort: f.hostPort, guestPort: f.guestPort})),
        // The instance listens on its host ports itself, to wake a paused VM (runner/port-relay.ts).
        relayed: true,
        // A detached instance's launcher waits for its healthcheck, asked on the guest port
        // also when no host port publishes it (a one-off command has no healthcheck to wait for).
        socketOnly:
          kit.manifest.healthcheck && channel !== undefined && command === undefined
            ? [kit.manifest.healthcheck.port]
            : [],
        // Host services the kit declares; every other host address stays unreachable.
        allowHostLoopback: kit.manifest.networking?.internal_hosts ?? [],
        egress: kit.manifest.networking?.egress !== 'deny',
        onBlocked: this.debugEnabled
          ? (reason, egress) =>
              status(
                `blocked guest ${reason} (${egress ? 'the kit sets networking.egress: deny' : 'declare it in networking.internal_hosts to allow'})`,
              )
          : undefined,
      })
  }

  /** `--detach`: this same command, re-run as a supervisor in the background; back once it is healthy. */
  private async launch(
    given: string[],
    registry: InstanceRegistry,
    name: string,
    controller: AbortController,
    verbose: boolean,
  ): Promise<void> {
    const steps = process.stderr.isTTY ? createStepLines(process.stderr, {verbose}) : undefined
    const onSignal = () => controller.abort()
    await underSignals(
      onSignal,
      () => steps,
      async () => {
        const dash = given.indexOf('--')
        const ours = dash >= 0 ? given.slice(0, dash) : given
        const args = [
          ...ours.filter((arg) => arg !== '--detach' && arg !== '-d'),
          ...(dash >= 0 ? given.slice(dash) : []),
        ]
        const onStatus = (message: string) =>
          steps ? showStatus(steps, message) : process.stderr.write(`aegis-kit: ${message}\n`)
        const started = await launchDetached({registry, name, args, signal: controller.signal, onStatus})
        steps?.close()
        for (const url of started.urls) process.stdout.write(`${printable(url.label)}: ${printable(url.url)}\n`)
        process.stderr.write(
          `aegis-kit: ${name} is running in the background (pid ${started.pid}): aegis-kit logs ${name} -f, aegis-kit stop ${name}\n`,
        )
      },
    )
  }
}

/** A start-up status on a terminal: a new step's live line, or (warnings, built layers) a line of its own. */
function showStatus(steps: StepLines, message: string): void {
  if (message.startsWith('warning:') || message.startsWith(' ')) steps.note(`aegis-kit: ${message}`)
  else steps.start(`aegis-kit: ${message}`)
}

/** An image build's event as start-up progress: a layer built, a warning, or (on a terminal or with --verbose) the tools' output. */
function showBuildEvent(progress: Progress, verbose: boolean, event: BuildEvent): void {
  if (event.type === 'layer' && !event.cached)
    progress.status(`  built ${event.step} layer in ${(event.ms / 1000).toFixed(1)}s`)
  else if (event.type === 'warning') progress.status(`warning: ${event.message}`)
  else if (event.type === 'log' && progress.steps) progress.steps.output(event.line)
  else if (event.type === 'log' && verbose) process.stderr.write(`  ${event.line}\n`)
}

/** The instance has started: how long it took to be healthy, and its URLs once it is up. */
function reportUp(
  instance: RunningInstance,
  kit: Kit,
  channel: SupervisorChannel | undefined,
  status: (message: string) => void,
): void {
  if (instance.healthyMs !== undefined)
    status(
      `${instance.name} is healthy after ${(instance.healthyMs / 1000).toFixed(1)}s (${toPlatformName(hostArchitecture())}, QEMU ${instance.accel.toUpperCase()})`,
    )
  // URLs only for an instance that is up: healthy, or without a healthcheck to wait for.
  const up = instance.healthyMs !== undefined || !kit.manifest.healthcheck
  // A supervisor hands the URLs (the gateway token in them is a secret) to its launcher only.
  if (up && channel) channel.ready(instance.urls, instance.healthyMs)
  else if (up) for (const url of instance.urls) process.stdout.write(`${printable(url.label)}: ${printable(url.url)}\n`)
}

/** Runs `action` with SIGINT and SIGTERM handed to `onSignal`; a failure first ends the live step line. */
async function underSignals(
  onSignal: () => void,
  steps: () => StepLines | undefined,
  action: () => Promise<void>,
): Promise<void> {
  process.on('SIGINT', onSignal)
  process.on('SIGTERM', onSignal)
  try {
    await action()
  } catch (error) {
    steps()?.fail(messageOf(error))
    throw error
  } finally {
    process.off('SIGINT', onSignal)
    process.off('SIGTERM', onSignal)
  }
}
