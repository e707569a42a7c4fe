/**
 * Runs a kit's hook in a separate Node process, inside the hook sandbox (sandbox.ts), with a
 * time limit, a clean environment (no variable of the caller's leaks in; secrets arrive only as
 * the hook's arguments), and a JSON contract on stdin/stdout. Every failure becomes one clear
 * error naming the hook and the kit, with secret values masked.
 */
import path from 'node:path'
import {fileURLToPath} from 'node:url'
import {AegisError} from '../errors.js'
import type {ExecResult} from '../exec.js'
import type {Kit} from '../kit/kit.js'
import {maskSecrets} from '../kit/secrets.js'
import {parseDuration} from '../kit/units.js'
import {contractViolation, type HookName} from './contract.js'
import {runSandboxed} from './sandbox.js'

const CHILD = fileURLToPath(new URL('./child.js', import.meta.url))
export const DEFAULT_HOOK_TIMEOUT_MS = 30_000
/** A hook renders a few files; it has no use for more memory than this. */
const HOOK_HEAP_MB = 256

export interface HookRunOptions {
  /** Secret values passed to the hook: masked in anything that comes back. */
  secretValues?: string[]
  timeoutMs?: number
}

export interface HookRun<T> {
  result: T
  /** What the hook logged (stderr), masked. */
  log: string
}

export function hasHook(kit: Kit, hook: HookName): boolean {
  return kit.manifest.hooks?.[hook] !== undefined
}

export async function runHook<T>(
  kit: Kit,
  hook: HookName,
  args: unknown[],
  options: HookRunOptions = {},
): Promise<HookRun<T>> {
  const relative = kit.manifest.hooks?.[hook]
  if (relative === undefined)
    throw new AegisError(`kit ${kit.manifest.name} has no ${hook} hook`, {
      hint: `declare it under hooks.${hook} in ${kit.displayFile}`,
    })
  const call: HookCall = {
    kit,
    hook,
    relative,
    modulePath: path.resolve(kit.dir, relative),
    what: `hook ${hook} of kit ${kit.manifest.name} (${relative})`,
    timeoutMs: options.timeoutMs ?? parseDuration(kit.manifest.hooks?.timeout ?? '') ?? DEFAULT_HOOK_TIMEOUT_MS,
    mask: (text: string) => maskSecrets(text, options.secretValues ?? []),
  }

  const child = await startHook(call, args)
  const log = call.mask(child.stderr)
  const reply = readReply(call, child, summarizeLog(log))
  if (reply.error) throw hookFailed(call, reply.error)
  const violation = contractViolation(hook, reply.result)
  if (violation)
    throw new AegisError(`${call.what} returned an invalid result: ${call.mask(violation)}`, {
      hint: 'see docs/hooks.md for what each hook returns',
    })
  return {result: reply.result as T, log}
}

/** One run of a hook: what its stages need to start it, name it in errors and mask what it says. */
interface HookCall {
  kit: Kit
  hook: HookName
  /** The hook's module as hooks.<name> gives it, relative to the kit directory. */
  relative: string
  modulePath: string
  /** `hook NAME of kit KIT (FILE)`, how errors name the hook. */
  what: string
  timeoutMs: number
  mask: (text: string) => string
}

/** What the child writes to stdout: the hook's result, or why there is none. */
interface HookReply {
  result?: unknown
  error?: HookReplyError
}

interface HookReplyError {
  kind: string
  message: string
  stack?: string
}

/** Runs the child that imports the hook's module and calls it, in the sandbox. */
async function startHook({kit, hook, modulePath, what, timeoutMs}: HookCall, args: unknown[]): Promise<ExecResult> {
  const network = kit.manifest.hooks?.network === true
  // Printed here, whichever command runs the hook: the user must see every hook that gets the
  // network, and stderr keeps --json output intact.
  if (network)
    process.stderr.write(
      `hook ${hook} of kit ${kit.manifest.name} runs with network access (hooks.network in its aegis-kit.yaml)\n`,
    )
  return runSandboxed([process.execPath, `--max-old-space-size=${HOOK_HEAP_MB}`, CHILD], {
    kitDir: path.resolve(kit.dir),
    files: [CHILD],
    network,
    input: JSON.stringify({module: modulePath, hook, args}),
    // Only what Node itself needs: the caller's API keys and tokens stay out of the hook. HOME is
    // the sandbox's private /tmp, for os.homedir() (there is no /etc/passwd to look it up in).
    env: {PATH: '/usr/local/bin:/usr/bin:/bin', LANG: 'C.UTF-8', TZ: 'UTC', HOME: '/tmp', AEGIS_KIT_HOOK: hook},
    timeoutMs,
    what,
  })
}

/** The child's reply; a hook that timed out, wrote nothing or wrote no reply is an AegisError. */
function readReply({what, timeoutMs, mask}: HookCall, child: ExecResult, lastLog: string): HookReply {
  if (child.timedOut) {
    throw new AegisError(`${what} did not finish within ${timeoutMs / 1000}s and was stopped`, {
      hint: 'a hook must return promptly: check for unresolved promises or waits (hooks.timeout raises the limit)',
    })
  }
  const stdout = child.stdout.trim()
  if (stdout === '') {
    const how = child.signal ? `was killed by ${child.signal}` : `exited with code ${child.exitCode}`
    throw new AegisError(`${what} ${how} before returning a result${lastLog ? `: ${lastLog}` : ''}`, {
      hint: 'a hook returns its result; it must not call process.exit()',
    })
  }
  let reply: HookReply
  try {
    reply = JSON.parse(stdout) as typeof reply
    if (typeof reply !== 'object' || reply === null || (!('result' in reply) && !('error' in reply)))
      throw new Error('not a reply')
  } catch {
    const snippet = mask(stdout).slice(0, 80).replace(/\s+/g, ' ')
    throw new AegisError(`${what} wrote non-JSON to stdout: "${snippet}"`, {
      hint: "stdout carries the hook's JSON result: log with console.error (or console.log, which the runner redirects)",
    })
  }
  return reply
}

/** The error for a hook that threw, or whose module is broken or lacks the export. */
function hookFailed({kit, hook, relative, modulePath, what, mask}: HookCall, error: HookReplyError): AegisError {
  const where = error.stack ? locationIn(error.stack, modulePath, kit.dir) : undefined
  return new AegisError(
    `${what} ${error.kind === 'threw' ? 'failed' : 'is broken'}: ${mask(error.message)}${where ? ` (at ${where})` : ''}`,
    {
      hint: error.kind === 'no-export' ? `export function ${hook}(...) from ${relative}` : undefined,
    },
  )
}

/** The first stack frame inside the kit, as `hooks/render_env.mjs:12:5`. */
function locationIn(stack: string, modulePath: string, kitDir: string): string | undefined {
  for (const match of stack.matchAll(/file:\/\/([^\s)]+):(\d+):(\d+)/g)) {
    const file = decodeURIComponent(match[1])
    if (file.startsWith(kitDir)) return `${path.relative(kitDir, file)}:${match[2]}:${match[3]}`
  }
  return stack.includes(modulePath) ? path.relative(kitDir, modulePath) : undefined
}

/** The line of a crashed hook's stderr that says why: its error, else its last words (no stack frames). */
function summarizeLog(log: string): string {
  const lines = log
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line !== '' && !line.startsWith('at ') && !/^Node\.js v\d/.test(line) && !line.startsWith('^'))
  return (lines.find((line) => /^(\w*Error|Error)\b.*:/.test(line)) ?? lines.at(-1) ?? '').slice(0, 200)
}
