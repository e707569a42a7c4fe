/**
 * A QMP client (QEMU's machine protocol, JSON lines over the VM's `-qmp` unix socket): what the
 * lifecycle needs of a running VM, pausing its vCPUs (`stop`), resuming them (`cont`) and asking
 * which of the two it is (`query-status`). QEMU answers each command with `return` or `error`,
 * tagged with the command's `id`; events (`STOP`, `RESUME`, ...) arrive in between and are
 * ignored here. One connection per VM, opened on first use and kept.
 */
import net from 'node:net'
import {AegisError} from '../errors.js'

/** `query-status`'s `status`: `running`, `paused`, `shutdown`, `inmigrate`, ... */
export interface VmStatus {
  status: string
  running: boolean
}

interface Pending {
  resolve(value: unknown): void
  reject(error: Error): void
}

const COMMAND_TIMEOUT_MS = 10_000

export class QmpClient {
  private connection: Promise<net.Socket> | undefined
  private readonly pending = new Map<string, Pending>()
  private nextId = 1
  private buffered = ''

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

  close(): void {
    void this.connection?.then((socket) => socket.destroy()).catch(() => undefined)
    this.connection = undefined
  }

  async execute(command: string, args?: Record<string, unknown>): Promise<unknown> {
    const socket = await this.connect()
    const id = String(this.nextId++)
    return new Promise<unknown>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new AegisError(`QEMU did not answer ${command} within ${COMMAND_TIMEOUT_MS / 1000}s`))
      }, COMMAND_TIMEOUT_MS)
      this.pending.set(id, {
        resolve: (value) => {
          clearTimeout(timer)
          resolve(value)
        },
        reject: (error) => {
          clearTimeout(timer)
          reject(error)
        },
      })
      socket.write(`${JSON.stringify({execute: command, ...(args ? {arguments: args} : {}), id})}\n`)
    })
  }

  private connect(): Promise<net.Socket> {
    this.connection ??= new Promise<net.Socket>((resolve, reject) => {
      const socket = net.createConnection(this.socketPath)
      let greeted = false
      socket.setEncoding('utf8')
      socket.once('error', (error) => {
        this.connection = undefined
        reject(new AegisError(`cannot reach QEMU's monitor at ${this.socketPath}: ${error.message}`))
      })
      socket.on('close', () => {
        this.connection = undefined
        for (const waiter of this.pending.values()) waiter.reject(new AegisError('QEMU closed its monitor'))
        this.pending.clear()
      })
      socket.on('data', (text: string) => {
        this.buffered += text
        let newline = this.buffered.indexOf('\n')
        while (newline >= 0) {
          const line = this.buffered.slice(0, newline).trim()
          this.buffered = this.buffered.slice(newline + 1)
          newline = this.buffered.indexOf('\n')
          if (line === '') continue
          const message = JSON.parse(line) as {
            QMP?: unknown
            return?: unknown
            error?: {desc?: string}
            id?: string
          }
          if (message.QMP !== undefined && !greeted) {
            greeted = true
            // Capabilities negotiation: QEMU takes no other command before it.
            socket.write(`${JSON.stringify({execute: 'qmp_capabilities', id: 'capabilities'})}\n`)
            continue
          }
          if (message.id === 'capabilities') {
            if (message.error) reject(new AegisError(`QEMU refused QMP: ${message.error.desc ?? 'unknown error'}`))
            else resolve(socket)
            continue
          }
          const waiter = message.id === undefined ? undefined : this.pending.get(message.id)
          if (!waiter) continue // an event, or an answer that timed out
          this.pending.delete(message.id!)
          if (message.error) waiter.reject(new AegisError(`QEMU: ${message.error.desc ?? 'command failed'}`))
          else waiter.resolve(message.return)
        }
      })
    })
    return this.connection
  }
}
