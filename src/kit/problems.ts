/** A located problem in a kit manifest: what `aegis-kit validate` reports, one per line. */
export interface Problem {
  /** Path of the manifest as the user named it (relative when they gave it relative). */
  file: string
  /** 1-based line and column of the offending key or value. */
  line: number
  column: number
  /** Field path in the manifest, e.g. `routing.expose[1].port`; empty for the document itself. */
  path: string
  /** What is wrong. */
  message: string
  /** What was expected there, when that can be said. */
  expected?: string
  /** How to fix it. */
  hint?: string
}

export type PathSegment = string | number

/** `['routing', 'expose', 1, 'port']` → `routing.expose[1].port` */
export function formatPath(segments: readonly PathSegment[]): string {
  let out = ''
  for (const segment of segments) {
    if (typeof segment === 'number') out += `[${segment}]`
    else if (/^[A-Za-z_][A-Za-z0-9_-]*$/.test(segment)) out += out === '' ? segment : `.${segment}`
    else out += `[${JSON.stringify(segment)}]`
  }
  return out
}

/** Two lines at most: `file:line:col field: message (expected …)` and `  hint: …`. */
export function formatProblem(problem: Problem): string {
  const where = `${problem.file}:${problem.line}:${problem.column}`
  const field = problem.path === '' ? '' : ` ${problem.path}:`
  const expected = problem.expected ? ` (expected ${problem.expected})` : ''
  const first = `${where}:${field} ${problem.message}${expected}`
  return problem.hint ? `${first}\n  hint: ${problem.hint}` : first
}

export function sortProblems(problems: Problem[]): Problem[] {
  return [...problems].sort((a, b) => a.line - b.line || a.column - b.column || a.path.localeCompare(b.path))
}
