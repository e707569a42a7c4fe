/**
 * An HTTP server at an address beyond this host, for egress tests that need no internet: a
 * network namespace of its own, joined to the host by a veth pair on a /30 of 198.18.0.0/15
 * (RFC 2544's benchmarking range, which no real network here uses). A guest's connection to it
 * leaves through gvproxy's NAT like any other egress. Needs root and iproute2's `ip`.
 */
import {execFileSync, spawn} from 'node:child_process'

export interface ServerBeyondHost {
  address: string
  port: number
  /** How many requests it has answered. */
  hits(): number
  /** Stops the server and deletes the namespace (and with it both ends of the veth pair). */
  close(): void
}

let made = 0

function ip(...args: string[]): void {
  execFileSync('ip', args, {stdio: ['ignore', 'ignore', 'pipe']})
}

export async function serverBeyondHost(answer: string): Promise<ServerBeyondHost> {
  const id = `${process.pid}${made}`
  const block = made++ * 4
  const subnet = `198.18.${(process.pid % 254) + 1}`
  const [hostAddress, address] = [`${subnet}.${block + 1}`, `${subnet}.${block + 2}`]
  const namespace = `aegis-egress-${id}`
  const [hostEnd, farEnd] = [`aeh${id}`.slice(0, 15), `aef${id}`.slice(0, 15)]
  let server: ReturnType<typeof spawn> | undefined
  ip('netns', 'add', namespace)
  const close = () => {
    server?.kill('SIGKILL')
    try {
      ip('netns', 'del', namespace)
    } catch {
      // already gone
    }
  }
  try {
    ip('link', 'add', hostEnd, 'type', 'veth', 'peer', 'name', farEnd)
    ip('link', 'set', farEnd, 'netns', namespace)
    ip('addr', 'add', `${hostAddress}/30`, 'dev', hostEnd)
    ip('link', 'set', hostEnd, 'up')
    ip('-n', namespace, 'addr', 'add', `${address}/30`, 'dev', farEnd)
    ip('-n', namespace, 'link', 'set', farEnd, 'up')
    const program = `
      let hits = 0
      require('node:http')
        .createServer((request, response) => { hits++; response.end(${JSON.stringify(answer)}); console.log('hit ' + hits) })
        .listen(0, ${JSON.stringify(address)}, function () { console.log('port ' + this.address().port) })`
    server = spawn('ip', ['netns', 'exec', namespace, process.execPath, '-e', program], {
      stdio: ['ignore', 'pipe', 'inherit'],
    })
    let hits = 0
    const port = await new Promise<number>((resolve, reject) => {
      server!.once('exit', (code) => reject(new Error(`the server beyond the host exited with ${code}`)))
      server!.stdout!.setEncoding('utf8').on('data', (text: string) => {
        for (const line of text.split('\n')) {
          if (line.startsWith('port ')) resolve(Number(line.slice(5)))
          if (line.startsWith('hit ')) hits = Number(line.slice(4))
        }
      })
    })
    return {address, port, hits: () => hits, close}
  } catch (error) {
    close()
    throw error
  }
}
