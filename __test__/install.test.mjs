// The package as a new user gets it: packed, installed into an empty
// project, the demo gateway and `npx gatelock status` run from there.

import { execFileSync } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { expect, test } from 'vitest'

const script = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../scripts/install-test.mjs',
)

test('npm pack, install into an empty project, run the demo and npx gatelock status', () => {
  const env = { ...process.env }
  delete env.VITEST
  const output = execFileSync(process.execPath, [script], {
    env,
    encoding: 'utf8',
    timeout: 120_000,
  })
  expect(output).toContain('install test passed')
  expect(output).toContain('status  alive')
}, 150_000)
