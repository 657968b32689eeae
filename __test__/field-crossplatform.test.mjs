// Field failure B4: pid reuse off Linux, where there is no /proc, and an
// identity that cannot be read. Runs on the macOS and Windows CI runners.

import fs from 'node:fs'
import { createRequire } from 'node:module'
import { afterEach, describe, expect, test } from 'vitest'

import {
  cleanupAll,
  lockPathFor,
  makeSandbox,
  realNow,
  readLock,
  sleep,
  spawnGateway,
  startUnrelated,
  isoAgo,
  writeLock,
} from './support/harness.mjs'

const require = createRequire(import.meta.url)
const { acquireGatewayLock } = require('../index.js')

const offLinux = process.platform === 'darwin' || process.platform === 'win32'

afterEach(cleanupAll)

function optsFor(sandbox, extra) {
  return {
    env: { OPENCLAW_CONFIG_PATH: sandbox.cfg, HOME: sandbox.home },
    lockDir: sandbox.lockDir,
    allowInTests: true,
    ...extra,
  }
}

describe.skipIf(!offLinux)('B4: pid reuse and unreadable identity off Linux', () => {
  test('B4a: a live pid that is no gateway and started after the lock is reclaimed', async () => {
    const sandbox = makeSandbox()
    const unrelated = startUnrelated()
    await sleep(500)
    const lockPath = lockPathFor(sandbox)
    writeLock(lockPath, { pid: unrelated.pid, createdAt: isoAgo(5000), configPath: sandbox.cfg })
    const started = realNow()
    const handle = await acquireGatewayLock(optsFor(sandbox, { timeoutMs: 3000 }))
    expect(realNow() - started).toBeLessThan(1000)
    expect(readLock(lockPath).payload.pid).toBe(process.pid)
    expect(unrelated.exitInfo).toBeFalsy()
    await handle.release()
  })

  test('B4b: a live gateway owner is kept and named', async () => {
    const sandbox = makeSandbox()
    const gw = spawnGateway(sandbox)
    expect(await gw.firstLine).toBe(`ACQUIRED ${gw.pid}`)
    const before = fs.readFileSync(lockPathFor(sandbox))
    const started = realNow()
    const attempt = acquireGatewayLock(optsFor(sandbox, { timeoutMs: 1500 }))
    await expect(attempt).rejects.toThrow(`gateway already running (pid ${gw.pid})`)
    expect(realNow() - started).toBeLessThanOrEqual(2000)
    expect(fs.readFileSync(lockPathFor(sandbox))).toEqual(before)
  })

  // The elevated-owner case needs an Administrator console next to a normal
  // one, which a CI runner does not offer.
  test.skip('B4c: an elevated owner whose command line cannot be read (needs two consoles)')
})
