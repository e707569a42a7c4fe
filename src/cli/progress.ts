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
  if (mode === 'silent') return {progress: () => undefined, finish: () => undefined}
  if (mode === 'lines') {
    return {
      progress: (event) => {
        const outcome = event.kind === 'done' ? verb : event.kind === 'skipped' ? 'exists' : event.kind === 'mounted' ? 'mounted' : undefined
        if (outcome === undefined) return
        stream.write(`${outcome.padEnd(8)} ${shortDigest(event.descriptor.digest)}  ${formatBytes(event.descriptor.size).padStart(8)}  ${kindOf(event.descriptor.mediaType)}\n`)
      },
      finish: () => undefined,
    }
  }
  return new LiveLine(stream, verb)
}

class LiveLine implements TransferReporter {
  private readonly inFlight = new Map<string, {bytes: number; size: number}>()
  private last?: CopyProgress['totals']
  private drawnAt = 0
  private drawn = false

  constructor(private readonly stream: NodeJS.WriteStream, private readonly verb: string) {}

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
    if (this.drawn) this.stream.write('\r\x1b[K')
    this.drawn = false
  }

  private draw(): void {
    const totals = this.last
    if (!totals) return
    const blobs = [...this.inFlight].slice(0, SHOWN_IN_FLIGHT).map(([digest, {bytes, size}]) => `${shortDigest(digest).slice(7)} ${formatBytes(bytes)}/${formatBytes(size)}`)
    const more = this.inFlight.size > SHOWN_IN_FLIGHT ? ` +${this.inFlight.size - SHOWN_IN_FLIGHT}` : ''
    const overall = `${this.verb} ${totals.nodesDone}/${totals.nodesKnown} blobs, ${formatBytes(totals.bytesDone)} of ${formatBytes(totals.bytesKnown)}`
    let line = blobs.length > 0 ? `${overall}  [${blobs.join(', ')}${more}]` : overall
    const columns = this.stream.columns || 100
    if (line.length >= columns) line = line.slice(0, columns - 1)
    this.stream.write(`\r\x1b[K${line}`)
    this.drawn = true
  }
}

function kindOf(mediaType: string): string {
  if (/manifest\.list|image\.index/.test(mediaType)) return 'index'
  if (/manifest/.test(mediaType)) return 'manifest'
  if (/config|empty/.test(mediaType)) return 'config'
  if (/report/.test(mediaType)) return 'report'
  return 'layer'
}
