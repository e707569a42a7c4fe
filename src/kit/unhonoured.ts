/**
 * Manifest fields aegis-kit accepts but does not act on yet. The schema keeps them so that kits
 * written for the Aegis platform validate, but a user who sets one must not believe it does
 * something: `validate`, `build` and `run` warn for each one a manifest uses, docs/manifest.md
 * marks them (scripts/gen-manifest-doc.mjs reads this list from dist/), and
 * test/kit/unhonoured.test.ts fails when a schema field is neither read by aegis-kit's code nor
 * listed here, or is listed here although the code reads it. When work honours a field, its
 * entry goes.
 */
import {locate, type ManifestDocument} from './document.js'
import {formatPath, type PathSegment} from './problems.js'

const TASK_KINDS =
  "Aegis's kinds of work (stateless tasks, long-running tasks, serving), which aegis-kit does not tell apart: every instance follows the idle rules of its profile (idle_timeout, idle_policy, always_on)"
const SESSION_NETWORK =
  "a private network between a session's instances (`run --session`), which aegis-kit does not have yet: each instance reaches only the host and beyond"
const SESSION_COUNT =
  'a count of sessions per workspace, which aegis-kit does not keep: any number of sessions may share one'
const PLATFORM_ROUTER = "the Aegis platform's router; `run` publishes guest ports on 127.0.0.1 as they are"

/** Field path (`a.b`, `list[].field`, `map.<name>.field`, as in docs/manifest.md) → what would act on it. */
export const UNHONOURED_FIELDS: Readonly<Record<string, string>> = {
  'secrets.required[].user_provided':
    'a prompt or secret store that asks the user for the value; today every secret that is not `generated` is taken from `--secret` whatever this says',
  'routing.scheme': PLATFORM_ROUTER,
  'routing.session_stickiness': PLATFORM_ROUTER,
  'routing.websocket': `${PLATFORM_ROUTER} (WebSocket upgrades pass through them whatever this says)`,
  'networking.inter_vm': SESSION_NETWORK,
  'policies.default_task': TASK_KINDS,
  'policies.default_serve': TASK_KINDS,
  'policies.warm_pool': 'a pool of pre-booted instances, which aegis-kit does not keep',
  'resources.max_sessions_per_workspace': SESSION_COUNT,
}

/** A field the manifest uses that aegis-kit does not act on, located at its first use. */
export interface UnhonouredFieldWarning {
  file: string
  line: number
  column: number
  /** Where it is set, e.g. `profiles.bot.always_on`. */
  path: string
  /** The field as listed in UNHONOURED_FIELDS, e.g. `profiles.<name>.always_on`. */
  field: string
  message: string
  /** Lines of the field's further uses (the same field in other list items or profiles). */
  alsoOnLines: number[]
  /** What would act on it. */
  hint: string
}

/** One warning per listed field the manifest sets, in the order they appear in the file. */
export function unhonouredFieldWarnings(document: ManifestDocument): UnhonouredFieldWarning[] {
  const warnings: UnhonouredFieldWarning[] = []
  for (const [field, hint] of Object.entries(UNHONOURED_FIELDS)) {
    const uses = usesOf(document.data, field.split(/\.|(?=\[\])/), []).map((segments) => ({
      segments,
      ...locate(document, segments, {key: true}),
    }))
    if (uses.length === 0) continue
    uses.sort((a, b) => a.line - b.line || a.column - b.column)
    const [first, ...rest] = uses
    warnings.push({
      file: document.file,
      line: first.line,
      column: first.column,
      path: formatPath(first.segments),
      field,
      message: 'is accepted but not acted on yet',
      alsoOnLines: rest.map((use) => use.line),
      hint,
    })
  }
  return warnings.sort((a, b) => a.line - b.line || a.column - b.column)
}

/** `warning: FILE:LINE:COL PATH is accepted but not acted on yet`, on one line. */
export function formatUnhonouredFieldWarning(warning: UnhonouredFieldWarning): string {
  const also =
    warning.alsoOnLines.length > 0
      ? ` (also on line${warning.alsoOnLines.length === 1 ? '' : 's'} ${warning.alsoOnLines.join(', ')})`
      : ''
  return `warning: ${warning.file}:${warning.line}:${warning.column} ${warning.path} ${warning.message}${also}`
}

/** The concrete paths in `data` that `pattern` (split field path: `[]` any item, `<name>` any key) names. */
function usesOf(data: unknown, pattern: string[], at: PathSegment[]): PathSegment[][] {
  if (pattern.length === 0) return [at]
  const [head, ...rest] = pattern
  if (head === '[]') return Array.isArray(data) ? data.flatMap((item, index) => usesOf(item, rest, [...at, index])) : []
  if (typeof data !== 'object' || data === null || Array.isArray(data)) return []
  const entries = Object.entries(data)
  if (head === '<name>') return entries.flatMap(([key, value]) => usesOf(value, rest, [...at, key]))
  return Object.hasOwn(data, head) ? usesOf((data as Record<string, unknown>)[head], rest, [...at, head]) : []
}
