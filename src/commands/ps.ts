import {Flags} from '@oclif/core'
import {BaseCommand} from '../cli/base-command.js'
import {formatAge, renderTable} from '../cli/format.js'
import {InstanceRegistry, type InstanceEntry} from '../runner/instances.js'
import {defaultDataDir} from '../paths.js'

export default class Ps extends BaseCommand {
  static override summary = 'List the kit instances on this machine.'
  static override description =
    `Shows the instances started with \`aegis-kit run\` (in the foreground or with --detach) that
are still running: name, kit, status (starting, running, healthy), the process that owns the VM,
the ports exposed on 127.0.0.1 and the UI URLs (without their token); --json adds memory, vCPUs,
the accelerator (kvm or tcg) and the workspace. --all adds the detached instances that have
exited, with how they ended.`

  static override examples = [
    {description: 'List running instances', command: '<%= config.bin %> <%= command.id %>'},
    {description: 'Include exited instances, as JSON', command: '<%= config.bin %> <%= command.id %> --all --json'},
  ]

  static override enableJsonFlag = true

  static override flags = {
    all: Flags.boolean({char: 'a', description: 'Also list instances that have exited.'}),
  }

  async run(): Promise<{instances: InstanceEntry[]}> {
    const {flags} = await this.parse(Ps)
    const instances = (await InstanceRegistry.forDataDir(defaultDataDir()).list()).filter(
      (entry) => flags.all || entry.alive,
    )
    if (this.jsonEnabled()) return {instances}
    if (instances.length === 0) {
      this.log(flags.all ? 'No instances.' : 'No running instances (aegis-kit ps --all shows exited ones).')
      return {instances}
    }
    this.log(
      renderTable(
        ['NAME', 'KIT', 'STATUS', 'PID', 'PORTS', 'STARTED', 'URL'],
        instances.map((entry) => [
          entry.name,
          entry.kit,
          describeStatus(entry),
          entry.alive ? String(entry.pid) : '-',
          entry.ports.map((port) => `127.0.0.1:${port.hostPort}->${port.guestPort}`).join(',') || '-',
          formatAge(entry.startedAt),
          entry.urls[0]?.url ?? '-',
        ]),
      ),
    )
    return {instances}
  }
}

function describeStatus(entry: InstanceEntry): string {
  if (entry.status === 'exited') return `exited (${entry.exitCode ?? '?'})`
  // The owner died without recording an end (SIGKILL, reboot).
  if (!entry.alive) return 'lost'
  return entry.detached ? `${entry.status}, detached` : entry.status
}
