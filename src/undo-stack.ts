/**
 * Cleanup for work that starts several things in a row (a VM's helpers, an instance's record):
 * each step, once it has acquired something, pushes how to give it back; a failure anywhere
 * unwinds the stack once, last acquired first. The shape of TC39's AsyncDisposableStack's `defer`
 * (Node 20 lacks it), plus the reason for the unwinding, which an undo may report.
 */

type Undo = (reason: unknown) => unknown

export class UndoStack {
  private readonly undos: Undo[] = []
  private unwound: Promise<void> | undefined

  /** Adds `undo`, to run before every undo added earlier. */
  defer(undo: Undo): void {
    if (this.unwound) throw new Error('UndoStack used after it was unwound')
    this.undos.push(undo)
  }

  /**
   * Runs every undo, last added first, each once even when called again. An undo that fails does
   * not stop the ones before it; the first failure is thrown after all of them ran.
   */
  unwind(reason?: unknown): Promise<void> {
    this.unwound ??= (async () => {
      const undos = this.undos.splice(0).reverse()
      let failed: {error: unknown} | undefined
      for (const undo of undos) {
        try {
          await undo(reason)
        } catch (error) {
          failed ??= {error}
        }
      }
      if (failed) throw failed.error
    })()
    return this.unwound
  }

  /** Unwinds because of `error`, then throws it (or an undo's failure, which left something behind). */
  async failWith(error: unknown): Promise<never> {
    await this.unwind(error)
    throw error
  }
}

/**
 * Marks `promise` as handled and returns it: it is awaited later, after other work, and a
 * rejection in between must not count as an unhandled rejection (which ends the process).
 * The rejection itself still reaches whoever awaits the returned promise.
 */
export function awaitedLater<T>(promise: Promise<T>): Promise<T> {
  promise.catch(() => undefined)
  return promise
}

/** Awaits every promise, then throws the first failure in order: no work is left running behind an error. */
export async function settleAll<T extends readonly unknown[] | []>(
  promises: T,
): Promise<{-readonly [K in keyof T]: Awaited<T[K]>}> {
  const results = await Promise.allSettled(promises)
  for (const result of results) if (result.status === 'rejected') throw result.reason
  return results.map((result) => (result as PromiseFulfilledResult<unknown>).value) as {
    -readonly [K in keyof T]: Awaited<T[K]>
  }
}

/** A promise settled from outside: for a stage that others wait on before it has started. */
export function deferred<T>(): {promise: Promise<T>; resolve(value: T): void; reject(error: unknown): void} {
  let resolve!: (value: T) => void
  let reject!: (error: unknown) => void
  const promise = new Promise<T>((onValue, onError) => {
    resolve = onValue
    reject = onError
  })
  return {promise, resolve, reject}
}
