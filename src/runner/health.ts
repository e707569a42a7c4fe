/** Waits for a kit's healthcheck to answer 2xx through the exposed port. */
import {AegisError} from '../errors.js'

export async function waitHealthy(
  url: string,
  options: {timeoutMs: number; intervalMs: number; signal: AbortSignal; stillRunning: () => boolean},
): Promise<number> {
  const started = Date.now()
  while (Date.now() - started < options.timeoutMs) {
    if (options.signal.aborted || !options.stillRunning())
      throw new AegisError('the instance stopped before its healthcheck answered')
    try {
      const response = await fetch(url, {signal: AbortSignal.any([options.signal, AbortSignal.timeout(5000)])})
      await response.body?.cancel()
      if (response.ok) return Date.now() - started
    } catch {
      // not listening yet
    }
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs))
  }
  throw new AegisError(`the healthcheck ${url} did not answer within ${options.timeoutMs / 1000}s`, {
    hint: 'see the workload output above; under software emulation (no KVM) Node workloads start 8-14x slower',
  })
}
