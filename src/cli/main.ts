/**
 * What bin/run.js loads: oclif's entry point, from the bundle (scripts/bundle.mjs) so that the
 * commands and the runner share one copy of oclif (a second copy would fail its `instanceof` checks).
 */
export {execute, settings} from '@oclif/core'
