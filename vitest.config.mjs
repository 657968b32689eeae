import { defineConfig } from 'vitest/config'

// Tests start real processes and assert "at once versus after a timeout"
// bounds, so files run one at a time on these small machines.
export default defineConfig({
  test: {
    include: ['__test__/**/*.test.mjs'],
    exclude: ['__test__/jest/**', '**/node_modules/**'],
    pool: 'forks',
    fileParallelism: false,
    testTimeout: 30000,
    hookTimeout: 30000,
  },
})
