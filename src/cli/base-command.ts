/**
 * What every aegis-kit command shares: `--debug`, one-line errors without stack traces, and a
 * JSON error object on stdout under `--json`. Commands stay thin: parse flags, call a module,
 * print.
 */
import {Command, Errors, Flags, type Interfaces} from '@oclif/core'
import {isAegisError, messageOf} from '../errors.js'
import {printable} from '../printable.js'

export abstract class BaseCommand extends Command {
  static override baseFlags = {
    debug: Flags.boolean({description: 'Show stack traces and internal detail on errors.', helpGroup: 'GLOBAL'}),
  }

  protected get debugEnabled(): boolean {
    return this.argv.includes('--debug') || Boolean(process.env.AEGIS_KIT_DEBUG)
  }

  protected override async catch(error: Interfaces.CommandError): Promise<unknown> {
    // oclif's own exits (this.exit) and --help pass straight through.
    if (error instanceof Errors.ExitError) throw error
    const aegis = isAegisError(error)
    const exitCode = aegis ? error.exitCode : ((error as {oclif?: {exit?: number}}).oclif?.exit ?? 1)
    // Messages quote archive entry names, registry answers and hook errors: nothing from outside reaches the terminal raw.
    const message = printable(messageOf(error).replace(/\n*See more help with --help$/, ''), {multiline: true})
    const hint = aegis && error.hint !== undefined ? printable(error.hint, {multiline: true}) : undefined
    if (this.jsonEnabled()) {
      this.logJson({error: {message, ...(hint ? {hint} : {})}})
    } else {
      process.stderr.write(`Error: ${message}\n${hint ? `  hint: ${hint}\n` : ''}`)
      const isParseError = error instanceof Errors.CLIError && !aegis
      if (this.debugEnabled && error.stack) process.stderr.write(`${error.stack}\n`)
      else if (!aegis && !isParseError)
        process.stderr.write('  (an internal error: run again with --debug for the stack trace)\n')
    }
    this.exit(exitCode)
  }
}
