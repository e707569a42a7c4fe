/** How commands print sizes, digests, dates and tables: one place, so every command looks alike. */

/** `1.5 kB`, `212.4 MB`: decimal units, as docker and skopeo print them. */
export function formatBytes(bytes: number): string {
  if (bytes < 1000) return `${bytes} B`
  const units = ['kB', 'MB', 'GB', 'TB']
  let value = bytes
  let unit = -1
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000
    unit++
  }
  return `${value >= 100 ? value.toFixed(0) : value.toFixed(1)} ${units[unit]}`
}

/** `sha256:0123456789ab` (12 hex digits), enough to tell images apart in a listing. */
export function shortDigest(digest: string): string {
  const colon = digest.indexOf(':')
  return colon === -1 ? digest.slice(0, 12) : digest.slice(0, colon + 13)
}

/** `3 days ago`, `2 hours ago`; the ISO date itself when it does not parse or is in the future. */
export function formatAge(iso: string | undefined, now: number = Date.now()): string {
  if (!iso) return '-'
  const time = Date.parse(iso)
  if (Number.isNaN(time)) return iso
  const seconds = Math.floor((now - time) / 1000)
  if (seconds < 0) return iso
  const steps: Array<[number, string]> = [
    [365 * 86_400, 'year'],
    [30 * 86_400, 'month'],
    [7 * 86_400, 'week'],
    [86_400, 'day'],
    [3600, 'hour'],
    [60, 'minute'],
  ]
  for (const [size, name] of steps) {
    const count = Math.floor(seconds / size)
    if (count >= 1) return `${count} ${name}${count === 1 ? '' : 's'} ago`
  }
  return 'just now'
}

/** Left-aligned columns separated by two spaces, with a header row. */
export function renderTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, column) =>
    Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)),
  )
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)))
      .join('  ')
      .trimEnd()
  return [line(headers), ...rows.map(line)].join('\n')
}
