/**
 * oclif's `command_not_found` hook: `aegis-kit biuld` names the closest command and exits 127,
 * like a shell. Our own rather than @oclif/plugin-not-found, which names its suggestion only in
 * a prompt (nothing in CI, where stdin is not a terminal) and on Enter runs the guessed command:
 * for `psuh` that would be a push.
 */
import {toConfiguredId, type Hook} from '@oclif/core'
import {editDistance} from '../kit/suggest.js'

const hook: Hook.CommandNotFound = async function (options) {
  const visible = options.config.commands.filter((command) => !command.hidden)
  const ids = [...visible.map((command) => command.id), ...visible.flatMap((command) => command.aliases)]
  const match = closestCommand(options.id, ids)
  const bin = options.config.bin
  const typed = toConfiguredId(match?.typed ?? options.id, options.config)
  const didYouMean = match === undefined ? '' : ` Did you mean ${toConfiguredId(match.id, options.config)}?`
  process.stderr.write(`Error: ${typed} is not an ${bin} command.${didYouMean}\n  hint: ${bin} --help lists them\n`)
  this.exit(127)
}

export default hook

/**
 * The command nearest to what was typed, by edit distance, if near enough to be a typo. oclif
 * folds the words that follow into the id (`biuld hello` is `biuld:hello`), so each leading run
 * of words is tried and `typed` says which one matched.
 */
export function closestCommand(id: string, ids: string[]): {typed: string; id: string} | undefined {
  const words = id.split(':')
  let best: {typed: string; id: string; distance: number} | undefined
  for (let count = words.length; count >= 1; count--) {
    const typed = words.slice(0, count).join(':')
    // Same number of words, and not the words themselves: `images lst` is not a typo of `images`.
    for (const candidate of ids.filter((known) => known.split(':').length === count)) {
      const distance = editDistance(typed, candidate)
      if (
        distance > 0 &&
        distance <= Math.max(2, Math.floor(typed.length / 4)) &&
        (best === undefined || distance < best.distance)
      )
        best = {typed, id: candidate, distance}
    }
  }
  return best && {typed: best.typed, id: best.id}
}
