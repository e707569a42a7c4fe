import {AegisError} from '../errors.js'
import type {Kit} from '../kit/kit.js'
import type {AppContext} from './contract.js'
import {validateConfig} from './operations.js'
import {hasHook} from './run-hook.js'

/** Runs validate_config on the app's merged config (when the kit has the hook) and fails with its problems. */
export async function checkConfigOrThrow(kit: Kit, app: AppContext): Promise<void> {
  if (!hasHook(kit, 'validate_config')) return
  const result = await validateConfig(kit, app.config, app)
  if (result.ok) return
  const lines = result.problems.map((problem) => `  ${problem.path || '(config)'}: ${problem.message}`).join('\n')
  throw new AegisError(
    `the ${kit.manifest.name} config has ${result.problems.length} problem${result.problems.length === 1 ? '' : 's'} (validate_config):\n${lines}`,
    {
      hint: `fix them in the config file, then check again with \`aegis-kit hooks validate-config ${kit.manifest.name} FILE\``,
    },
  )
}
