// The package as a new user gets it: packed, installed into an empty
// project, the demo gateway and `npx gatelock status` run from there.

import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
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

test('without a binary for the platform, loading names it and says how to build', () => {
  const root = path.resolve(path.dirname(script), '..')
  const bare = fs.mkdtempSync(path.join(os.tmpdir(), 'gatelock-bare-'))
  try {
    for (const file of ['index.js', 'binding.js']) {
      fs.copyFileSync(path.join(root, file), path.join(bare, file))
    }
    const probe = `try { require('./index.js') } catch (e) { console.log(JSON.stringify(e)) }`
    const env = { ...process.env }
    delete env.NAPI_RS_NATIVE_LIBRARY_PATH
    const output = execFileSync(process.execPath, ['-e', probe], {
      cwd: bare,
      env,
      encoding: 'utf8',
    })
    const error = JSON.parse(output)
    expect(error).toMatchObject({ name: 'GatewayLockError', code: 'ENOBINARY' })
    const message = execFileSync(
      process.execPath,
      ['-e', probe.replace('JSON.stringify(e)', 'e.message')],
      {
        cwd: bare,
        env,
        encoding: 'utf8',
      },
    )
    expect(message).toContain(`no native binary for ${process.platform}-${process.arch}`)
    expect(message).toMatch(/the package gatelock-\S+ nor a local gatelock\.\S+\.node/)
    expect(message).toContain('npm install && npm run build')
  } finally {
    fs.rmSync(bare, { recursive: true, force: true })
  }
})
