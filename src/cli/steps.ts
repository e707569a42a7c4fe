/**
 * Long work on a terminal (build steps, run's start-up): one live line per step, with a spinner
 * and the time so far, then the step's one-line result. The tools' own
 * output (mmdebstrap, npm) is shown as it comes only with --verbose; otherwise the last lines of
 * the step are kept and shown if it fails. Only for a terminal: commands print their plain lines
 * elsewhere, unchanged.
 */
import {TerminalLine} from './progress.js'

export interface StepLines {
  /** Begins a step; one still open ends with its description and time. */
  start(what: string): void
  /** A line of a tool's own output during the current step. */
  output(line: string): void
  /** Ends the current step with its one-line result: its description, then `outcome`. */
  done(outcome: string): void
  /** Prints a line now (a warning), keeping the live line. */
  note(line: string): void
  /** Writes to a stream on the same terminal (a workload's output) without tearing the live line. */
  above(write: () => void): void
  /**
   * After an error: clears the live line and prints the current step's last tool lines, leaving
   * out those the error message (`reported`) already quotes.
   */
  fail(reported?: string): void
  /** Ends the current step, if any, with its time, and stops the clock: the long work is over. */
  close(): void
  /** Clears the live line and stops its clock. */
  finish(): void
}

/** How many of a failed step's last tool lines are shown. */
export const FAILED_STEP_LINES = 20
const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏']
const TICK_MS = 100

export function createStepLines(stream: NodeJS.WriteStream, options: {verbose: boolean}): StepLines {
  return new LiveSteps(stream, options.verbose)
}

class LiveSteps implements StepLines {
  private readonly line: TerminalLine
  private current?: {what: string; started: number; tail: string[]}
  private timer?: NodeJS.Timeout
  private frame = 0

  constructor(
    private readonly stream: NodeJS.WriteStream,
    private readonly verbose: boolean,
  ) {
    this.line = new TerminalLine(stream)
  }

  start(what: string): void {
    if (this.current) this.done(this.elapsed())
    this.current = {what, started: Date.now(), tail: []}
    // unref: a clock left running must never keep the CLI from exiting.
    this.timer ??= setInterval(() => this.draw(), TICK_MS).unref()
    this.draw()
  }

  output(line: string): void {
    if (this.verbose) this.note(`  ${line}`)
    if (!this.current) return
    this.current.tail.push(line)
    if (this.current.tail.length > FAILED_STEP_LINES) this.current.tail.shift()
  }

  done(outcome: string): void {
    const what = this.current?.what
    this.current = undefined
    this.line.clear()
    this.stream.write(what === undefined ? `${outcome}\n` : `${what}: ${outcome}\n`)
  }

  note(line: string): void {
    this.line.above(() => this.stream.write(`${line}\n`))
  }

  above(write: () => void): void {
    this.line.above(write)
  }

  close(): void {
    if (this.current) this.done(this.elapsed())
    this.finish()
  }

  fail(reported = ''): void {
    const failed = this.current
    this.finish()
    if (!failed || this.verbose) return
    const unseen = failed.tail.filter((line) => !reported.includes(line.trim()))
    this.stream.write(
      `${failed.what}: failed after ${this.elapsed(failed.started)}${unseen.length > 0 ? '; its output before the error:' : ''}\n`,
    )
    for (const line of unseen) this.stream.write(`  ${line}\n`)
  }

  finish(): void {
    this.current = undefined
    clearInterval(this.timer)
    this.timer = undefined
    this.line.clear()
  }

  private draw(): void {
    if (!this.current) return
    this.frame = (this.frame + 1) % FRAMES.length
    // The time stays in view on a narrow terminal: the description gives way.
    const suffix = `  ${this.elapsed()}`
    const room = (this.stream.columns || 100) - 3 - suffix.length
    const what =
      this.current.what.length > room ? `${this.current.what.slice(0, Math.max(0, room - 1))}…` : this.current.what
    this.line.draw(`${FRAMES[this.frame]} ${what}${suffix}`)
  }

  private elapsed(since: number = this.current?.started ?? Date.now()): string {
    return `${((Date.now() - since) / 1000).toFixed(1)}s`
  }
}
