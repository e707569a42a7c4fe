/**
 * Helper processes (QEMU, virtiofsd, network daemons) that must not outlive the CLI, even
 * when the CLI is killed with SIGKILL and runs no cleanup code.
 *
 * Each helper starts in its own process group (so a Ctrl-C aimed at the CLI's group does
 * not tear a VM down half-way). A watchdog shell, in a session of its own and ignoring
 * signals, holds the read end of a pipe whose only writer is this Node process: when Node
 * dies for any reason the pipe reaches EOF and the watchdog kills every group it was told
 * about. A normal shutdown tells it "exit" first.
 */

import {spawn, type ChildProcess, type SpawnOptions} from 'node:child_process'

const WATCHDOG_SCRIPT = `
trap '' INT HUP TERM QUIT PIPE
groups=''
while IFS= read -r line; do
  case "$line" in
    exit) exit 0 ;;
    *) groups="$groups $line" ;;
  esac
done
for g in $groups; do kill -TERM "-$g" 2>/dev/null; done
sleep 1
for g in $groups; do kill -KILL "-$g" 2>/dev/null; done
`

export class ChildProcessGroup {
  private readonly children: ChildProcess[] = []
  private readonly watchdog: ChildProcess
  private readonly killOnExit = () => this.killNow('SIGKILL')
  private released = false

  constructor() {
    // dash and busybox ash both take this script; `kill -SIG -PGID` is the form both parse.
    this.watchdog = spawn('/bin/sh', ['-c', WATCHDOG_SCRIPT], {detached: true, stdio: ['pipe', 'ignore', 'ignore']})
    this.watchdog.on('error', () => {}) // missing /bin/sh: the exit hook below still covers normal exits
    this.watchdog.stdin?.on('error', () => {}) // EPIPE once the watchdog is gone: nothing left to tell it
    this.watchdog.unref()
    process.once('exit', this.killOnExit)
  }

  /** Starts `file` in a new process group that dies with this process. */
  spawn(file: string, args: string[], options: Omit<SpawnOptions, 'detached'> = {}): ChildProcess {
    if (this.released) throw new Error('ChildProcessGroup used after release')
    const child = spawn(file, args, {...options, detached: true})
    if (child.pid !== undefined) this.watchdog.stdin?.write(`${child.pid}\n`)
    this.children.push(child)
    return child
  }

  /** Sends `signal` to every helper's process group right away. */
  killNow(signal: NodeJS.Signals): void {
    for (const child of this.children) {
      // An exited leader's group id may already belong to someone else.
      if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) continue
      try {
        process.kill(-child.pid, signal)
      } catch {
        // The group is gone already.
      }
    }
  }

  /** Stops every helper (TERM, then KILL after `graceMs`) and retires the watchdog. */
  async stopAll(graceMs = 2000): Promise<void> {
    const running = this.children.filter(
      (child) => child.exitCode === null && child.signalCode === null && child.pid !== undefined,
    )
    const exited = Promise.all(
      running.map(
        (child) =>
          new Promise<void>((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) resolve()
            else child.once('exit', () => resolve())
          }),
      ),
    )
    this.killNow('SIGTERM')
    let timer: NodeJS.Timeout | undefined
    const timedOut = new Promise<'timeout'>((resolve) => {
      timer = setTimeout(() => resolve('timeout'), graceMs)
    })
    if ((await Promise.race([exited, timedOut])) === 'timeout') {
      this.killNow('SIGKILL')
      await exited
    }
    clearTimeout(timer)
    await this.release()
  }

  /** Retires the watchdog and waits (a second at most) for it to go, so nothing of ours outlives the CLI. */
  private async release(): Promise<void> {
    if (this.released) return
    this.released = true
    process.removeListener('exit', this.killOnExit)
    if (this.watchdog.exitCode !== null || this.watchdog.signalCode !== null || this.watchdog.pid === undefined) return
    const gone = new Promise<void>((resolve) => this.watchdog.once('exit', () => resolve()))
    this.watchdog.stdin?.end('exit\n')
    let timer: NodeJS.Timeout | undefined
    // The timer is what keeps Node running meanwhile (the watchdog is unref'd): an unref'd one
    // would let a CLI with nothing else left exit with this wait unsettled (exit code 13).
    await Promise.race([
      gone,
      new Promise<void>((resolve) => {
        timer = setTimeout(resolve, 1000)
      }),
    ])
    clearTimeout(timer)
  }
}
