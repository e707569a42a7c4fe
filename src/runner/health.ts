/** Waits for a kit's healthcheck to answer 2xx through the exposed port, or through a unix socket that reaches it. */
import http from 'node:http'
import {AegisError} from '../errors.js'

export async function waitHealthy(
  url: string,
  options: {
    timeoutMs: number
    intervalMs: number
    signal: AbortSignal
    stillRunning: () => boolean
    /** Ask through this unix socket (gvproxy's forward of the guest port); `url` then gives only the path. */
    socketPath?: string
  },
): Promise<number> {
  const started = Date.now()
  while (Date.now() - started < options.timeoutMs) {
    if (options.signal.aborted || !options.stillRunning())
      throw new AegisError('the instance stopped before its healthcheck answered')
    try {
      const signal = AbortSignal.any([options.signal, AbortSignal.timeout(5000)])
      if (options.socketPath === undefined) {
        const response = await fetch(url, {signal})
        await response.body?.cancel()
        if (response.ok) return Date.now() - started
      } else if (await answersOk(options.socketPath, new URL(url).pathname, signal)) {
        return Date.now() - started
      }
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs))
  }
  throw new AegisError(`the healthcheck ${url} did not answer within ${options.timeoutMs / 1000}s`, {
    hint: 'see the workload output above; under software emulation (no KVM) Node workloads start 8-14x slower',
  })
}

function answersOk(socketPath: string, pathname: string, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve, reject) => {
    const request = http.get({socketPath, path: pathname, signal}, (response) => {
      response.resume()
      resolve((response.statusCode ?? 0) >= 200 && (response.statusCode ?? 0) < 300)
    })
    request.once('error', reject)
  })
}
