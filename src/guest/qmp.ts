/**
 * A QMP client (QEMU's machine protocol, JSON lines over the VM's `-qmp` unix socket): what the
 * lifecycle needs of a running VM, pausing its vCPUs (`stop`), resuming them (`cont`) and asking
 * which of the two it is (`query-status`). QEMU answers each command with `return` or `error`,
 * tagged with the command's `id`; events (`STOP`, `RESUME`, ...) arrive in between and are
 * ignored here. A connection per command: QEMU serves one monitor client at a time, so a held
 * connection would lock out anyone else looking (a debugging user, the tests).
 */
import net from 'node:net'
import {AegisError} from '../errors.js'

/** `query-status`'s `status`: `running`, `paused`, `shutdown`, `inmigrate`, ... */
export interface VmStatus {
  status: string
  running: boolean
}

const COMMAND_TIMEOUT_MS = 10_000

export class QmpClient {
  private queue: Promise<unknown> = Promise.resolve()

  constructor(private readonly socketPath: string) {}

  /** Pauses the vCPUs: the guest's clock, timers and processes stand still until resume(). */
  async pause(): Promise<void> {
    await this.execute('stop')
  }

  async resume(): Promise<void> {
    await this.execute('cont')
  }

  async status(): Promise<VmStatus> {
    const answer = (await this.execute('query-status')) as {status?: unknown; running?: unknown}
    return {status: String(answer.status), running: answer.running === true}
  }

  /** One command at a time, each on a connection of its own that is closed after its answer. */
  execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const run = this.queue.then(() => executeOnce(this.socketPath, command, args))
    this.queue = run.catch(() => undefined)
    return run
  }
}

/** Connects, negotiates capabilities (QEMU takes no other command before), runs `command`, disconnects. */
function executeOnce(socketPath: string, command: string, args?: Record<string, unknown>): Promise<unknown> {
  return new Promise<unknown>((resolve, reject) => {
    const socket = net.createConnection(socketPath)
    let buffered = ''
    const finish = (error: Error | undefined, value?: unknown) => {
      clearTimeout(timer)
      socket.destroy()
      if (error) reject(error)
      else resolve(value)
    }
    // Also covers a monitor busy with another client: QEMU greets the next one only after.
    const timer = setTimeout(
      () => finish(new AegisError(`QEMU did not answer ${command} within ${COMMAND_TIMEOUT_MS / 1000}s`)),
      COMMAND_TIMEOUT_MS,
    )
    socket.once('error', (error) =>
      finish(new AegisError(`cannot reach QEMU's monitor at ${socketPath}: ${error.message}`)),
    )
    socket.once('close', () => finish(new AegisError(`QEMU closed its monitor before answering ${command}`)))
    socket.setEncoding('utf8').on('data', (text: string) => {
      buffered += text
      let newline = buffered.indexOf('\n')
      while (newline >= 0) {
        const line = buffered.slice(0, newline).trim()
        buffered = buffered.slice(newline + 1)
        newline = buffered.indexOf('\n')
        if (line === '') continue
        const message = JSON.parse(line) as {QMP?: unknown; return?: unknown; error?: {desc?: string}; id?: string}
        if (message.QMP !== undefined) {
          socket.write(`${JSON.stringify({execute: 'qmp_capabilities', id: 'capabilities'})}\n`)
        } else if (message.id === 'capabilities') {
          if (message.error) return finish(new AegisError(`QEMU refused QMP: ${message.error.desc ?? 'unknown error'}`))
          socket.write(`${JSON.stringify({execute: command, ...(args ? {arguments: args} : {}), id: 'command'})}\n`)
        } else if (message.id === 'command') {
          if (message.error) return finish(new AegisError(`QEMU: ${message.error.desc ?? `${command} failed`}`))
          return finish(undefined, message.return)
        }
        // Anything else is an event (STOP, RESUME, ...): not ours to act on.
      }
    })
  })
}
