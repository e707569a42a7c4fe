/** The guest kernel's command line, shared by real boots and the accelerator probe. */
import {readFile} from 'node:fs/promises'

let hostTscKhz: Promise<number | undefined> | undefined

/**
 * The host's TSC rate. Handing it to the guest (tsc_early_khz) skips the PIT calibration
 * that hangs ~60% of boots under load with TCG ("Unable to calibrate against PIT").
 */
function readHostTscKhz(): Promise<number | undefined> {
  hostTscKhz ??= readFile('/proc/cpuinfo', 'utf8').then(
    (cpuinfo) => {
      const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(cpuinfo)
      return mhz ? Math.round(Number(mhz[1]) * 1000) : undefined
    },
    () => undefined,
  )
  return hostTscKhz
}

/** The guest kernel's command line, `extra` appended. */
export async function guestKernelCommandLine(extra: string[] = []): Promise<string> {
  const tscKhz = await readHostTscKhz()
  // microvm has no PCI bus: pci=off spares a "PCI: Fatal" line on every boot.
  const args = ['console=ttyS0', 'quiet', 'panic=-1', 'rdinit=/init', 'pci=off']
  if (tscKhz) args.push(`tsc_early_khz=${tscKhz}`, 'tsc=reliable')
  return [...args, ...extra].join(' ')
}
