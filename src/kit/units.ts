/** Sizes (`2048mb`, `1gb`) and durations (`60s`, `5m`) as written in manifests. */

const SIZE = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgt]?)(i?)(b?)\s*$/i
const SIZE_FACTORS: Record<string, number> = {'': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4}

/** Bytes in a size string, or undefined when it does not parse. A bare number is bytes. */
export function parseSize(text: string): number | undefined {
  const match = SIZE.exec(text)
  if (!match) return undefined
  const [, number, unit] = match
  return Math.round(Number(number) * SIZE_FACTORS[unit.toLowerCase()])
}

/** Whole MiB in a size string (what QEMU and Aegis take as memory_mb). */
export function sizeToMiB(text: string): number | undefined {
  const bytes = parseSize(text)
  return bytes === undefined ? undefined : Math.floor(bytes / 1024 ** 2)
}

const DURATION = /^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)$/
const DURATION_FACTORS: Record<string, number> = {ms: 1, s: 1000, m: 60_000, h: 3_600_000}

/** Milliseconds in a duration string, or undefined when it does not parse. */
export function parseDuration(text: string): number | undefined {
  const match = DURATION.exec(text)
  if (!match) return undefined
  return Math.round(Number(match[1]) * DURATION_FACTORS[match[2]])
}
