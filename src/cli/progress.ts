/**
 * Progress of a push or pull, written to stderr so stdout keeps only the result: on a terminal
 * one line redrawn in place (blobs in flight with their bytes, then the overall count); in CI one
 * quiet line per blob finished; nothing at all under --json.
 */
import type {CopyProgress} from '../registry/index.js'
import {formatBytes, shortDigest} from './format.js'

export type ProgressMode = 'tty' | 'lines' | 'silent'

export interface TransferReporter {
  /** Pass to copyGraph/pushImage/pullImage as `progress`. */
  readonly progress: (event: CopyProgress) => void
  /** Pass to RemoteRepository as `notify`: prints a status line (a registry's Retry-After wait) on a line of its own. */
  readonly notice: (line: string) => void
  /** Clears the live line (call before printing the result or an error). */
  finish(): void
}

const REDRAW_MS = 100
const SHOWN_IN_FLIGHT = 3

/** The mode for a stream: `silent` under --json, `tty` on a terminal, `lines` otherwise. */
export function progressMode(stream: NodeJS.WriteStream, json: boolean): ProgressMode {
  if (json) return 'silent'
  return stream.isTTY ? 'tty' : 'lines'
}

/** `verb` names what happens to a blob: `pushed`, `pulled`. */
export function createTransferReporter(stream: NodeJS.WriteStream, mode: ProgressMode, verb: string): TransferReporter {
  if (mode === 'silent') return {progress: () => undefined, notice: () => undefined, finish: () => undefined}
  if (mode === 'lines') {
    return {
      progress: (event) => {
        const outcome =
          event.kind === 'done'
            ? verb
            : event.kind === 'skipped'
              ? 'exists'
              : event.kind === 'mounted'
                ? 'mounted'
                : undefined
        if (outcome === undefined) return
        stream.write(
          `${outcome.padEnd(8)} ${shortDigest(event.descriptor.digest)}  ${formatBytes(event.descriptor.size).padStart(8)}  ${kindOf(event.descriptor.mediaType)}\n`,
        )
      },
      notice: (line) => stream.write(`${line}\n`),
      finish: () => undefined,
    }
  }
  return new LiveLine(stream, verb)
}

/**
 * One line at the foot of a terminal, redrawn in place: what the transfer line and the step
 * lines (steps.ts) both draw with. Anything else printed to the same terminal goes through
 * `above`, so it lands on lines of its own and the live line comes back under it.
 */
export class TerminalLine {
  private drawn = false
  private text = ''

  constructor(private readonly stream: NodeJS.WriteStream) {}

  draw(text: string): void {
    const columns = this.stream.columns || 100
    this.text = text.length >= columns ? text.slice(0, columns - 1) : text
    this.stream.write(`\r\x1b[K${this.text}`)
    this.drawn = true
  }

  /** Clears the line (call before printing a result or an error). */
  clear(): void {
    if (this.drawn) this.stream.write('\r\x1b[K')
    this.drawn = false
  }

  /** Runs `write` (whole lines, to any stream on this terminal) with the live line lifted out of the way. */
  above(write: () => void): void {
    const redraw = this.drawn
    this.clear()
    write()
    if (redraw) this.draw(this.text)
  }
}

class LiveLine implements TransferReporter {
  private readonly inFlight = new Map<string, {bytes: number; size: number}>()
  private readonly line: TerminalLine
  private last?: CopyProgress['totals']
  private drawnAt = 0

  constructor(
    private readonly stream: NodeJS.WriteStream,
    private readonly verb: string,
  ) {
    this.line = new TerminalLine(stream)
  }

  readonly notice = (line: string): void => {
    this.line.above(() => this.stream.write(`${line}\n`))
  }

  readonly progress = (event: CopyProgress): void => {
    const {digest, size} = event.descriptor
    if (event.kind === 'start' || event.kind === 'bytes') this.inFlight.set(digest, {bytes: event.bytes, size})
    else this.inFlight.delete(digest)
    this.last = event.totals
    const now = Date.now()
    if (event.kind === 'bytes' && now - this.drawnAt < REDRAW_MS) return
    this.drawnAt = now
    this.draw()
  }

  finish(): void {
    this.line.clear()
  }

  private draw(): void {
    const totals = this.last
    if (!totals) return
    const blobs = [...this.inFlight]
      .slice(0, SHOWN_IN_FLIGHT)
      .map(([digest, {bytes, size}]) => `${shortDigest(digest).slice(7)} ${formatBytes(bytes)}/${formatBytes(size)}`)
    const more = this.inFlight.size > SHOWN_IN_FLIGHT ? ` +${this.inFlight.size - SHOWN_IN_FLIGHT}` : ''
    const overall = `${this.verb} ${totals.nodesDone}/${totals.nodesKnown} blobs, ${formatBytes(totals.bytesDone)} of ${formatBytes(totals.bytesKnown)}`
    this.line.draw(blobs.length > 0 ? `${overall}  [${blobs.join(', ')}${more}]` : overall)
  }
}

function kindOf(mediaType: string): string {
  if (/manifest\.list|image\.index/.test(mediaType)) return 'index'
  if (/manifest/.test(mediaType)) return 'manifest'
  if (/config|empty/.test(mediaType)) return 'config'
  if (/report/.test(mediaType)) return 'report'
  return 'layer'
}
