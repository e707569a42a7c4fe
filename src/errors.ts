/**
 * Errors meant for the person at the terminal. The CLI prints `message` (and `hint`, when
 * there is one) without a stack trace; anything that is not an AegisError is a bug and
 * prints a stack only under --debug.
 */
export class AegisError extends Error {
  /** One short line on how to fix it, printed after the message. */
  readonly hint?: string
  /** Process exit code the CLI uses for this error. */
  readonly exitCode: number

  constructor(message: string, options: {hint?: string; exitCode?: number; cause?: unknown} = {}) {
    super(message, options.cause === undefined ? undefined : {cause: options.cause})
    this.name = 'AegisError'
    this.hint = options.hint
    this.exitCode = options.exitCode ?? 1
  }
}

export function isAegisError(error: unknown): error is AegisError {
  return error instanceof AegisError
}

/** The message of anything thrown, for wrapping into a clearer error. */
export function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message
  return String(error)
}
