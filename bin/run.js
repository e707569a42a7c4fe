#!/usr/bin/env node
import {createRequire} from 'node:module'
import {fileURLToPath} from 'node:url'
import {installCompileCache} from '../dist/cli/compile-cache.js'

// oclif's Node version warning loads semver on every start (~10-20 ms); npm already checks
// package.json's engines on install. Unset again so child processes see the caller's environment.
const ownFlag = process.env.OCLIF_DISABLE_ENGINE_WARNING === undefined
if (ownFlag) process.env.OCLIF_DISABLE_ENGINE_WARNING = '1'
// oclif and the commands as bundled by scripts/bundle.mjs (`npm run build`), compiled with V8's
// code cache from earlier runs.
installCompileCache(fileURLToPath(new URL('../dist/bundle', import.meta.url)))
const {execute, settings} = createRequire(import.meta.url)('../dist/bundle/main.cjs')
if (ownFlag) delete process.env.OCLIF_DISABLE_ENGINE_WARNING
// The commands are built JavaScript: oclif must not look for TypeScript sources to run instead
// (it would under NODE_ENV=test or development).
settings.enableAutoTranspile = false

await execute({dir: import.meta.url})
