import {BaseCommand} from '../cli/base-command.js'
import {formatReport, runDoctor, type DoctorReport} from '../doctor/index.js'

export default class Doctor extends BaseCommand {
  static override summary = 'Check that this machine has what run and build need.'
  static override description =
    `Probes each part for real and prints one line per part: OK, WARN or MISSING, what was found
(version, path) and, for anything not OK, the fix on this platform. Parts: Node.js, QEMU and the
accelerator a run would use (KVM when a test boot of the guest kernel works, else TCG, and why),
virtiofsd, gvproxy, mmdebstrap, qemu-user emulation for the other architecture (arm64 builds),
apt's package lists and the guest kernel package, free disk under the data directory, the
store's integrity, instance records whose process is gone, and the credential helpers the docker
config names. Exits 1 when a part run or build needs is MISSING; warnings do not fail.`

  static override examples = [
    {description: 'Check this machine', command: '<%= config.bin %> <%= command.id %>'},
    {
      description: 'The same as JSON: {ok, checks: [{part, status, found, fix}]}',
      command: '<%= config.bin %> <%= command.id %> --json',
    },
  ]

  static override enableJsonFlag = true

  async run(): Promise<DoctorReport> {
    await this.parse(Doctor)
    const report = await runDoctor()
    if (this.jsonEnabled()) {
      if (report.ok) return report
      this.logJson(report)
    } else {
      this.log(formatReport(report))
    }
    if (!report.ok) this.exit(1)
    return report
  }
}
