import {defineConfig} from 'vitest/config'

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    // Real VMs, registries and npm installs: generous per-test limits, set lower in fast tests.
    testTimeout: 60_000,
    hookTimeout: 600_000,
    // Suites that start registries or VMs pick free ports themselves; files may run in parallel.
    pool: 'forks',
  },
})
