#!/usr/bin/env node
// oclif's Node version warning loads semver on every start (~10-20 ms); npm already checks
// package.json's engines on install. Unset again so child processes see the caller's environment.
const ownFlag = process.env.OCLIF_DISABLE_ENGINE_WARNING === undefined
if (ownFlag) process.env.OCLIF_DISABLE_ENGINE_WARNING = '1'
const {execute} = await import('@oclif/core')
if (ownFlag) delete process.env.OCLIF_DISABLE_ENGINE_WARNING

await execute({dir: import.meta.url})
