/** Polling for a condition in tests: for what a test cannot be told about, only look at. */

/**
 * Calls `probe` every `intervalMs` until it gives a value other than `undefined` or `false`, and
 * returns that value; throws "timed out waiting for <what>" after `timeoutMs`.
 */
export async function waitFor<T>(
  what: string,
  probe: () => T | undefined | false | Promise<T | undefined | false>,
  timeoutMs: number,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const value = await probe()
    if (value !== undefined && value !== false) return value
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, intervalMs))
  }
}
