// The upstream TypeScript tests (reference section 7.3 to 7.5 and 7.6.4),
// rebuilt on real processes, files and sockets instead of module spies. A
// lock whose live owner the upstream fixture fakes with `pid: process.pid`
// gets a real child owner here: under SPEC 6 row 3 our own pid without a
// handle of ours is a leftover, not a live owner.

import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import { afterEach, describe, expect, test } from 'vitest'

import {
  cleanupAll,
  deadPid,
  freePort,
  listenOn,
  lockPathFor,
  makeSandbox,
  readLock,
  spawnGateway,
  startTimeOf,
  startUnrelated,
  writeLock,
  GATELOCK_ENTRY,
} from './support/harness.mjs'

const require = createRequire(import.meta.url)
const { acquireGatewayLock, GatewayLockError, readActiveGatewayLockPort } = require('../index.js')

afterEach(cleanupAll)

/** In-process options that point at the sandbox instead of this process's TMPDIR. */
function optsFor(sandbox, extra = {}) {
  return {
    env: { OPENCLAW_CONFIG_PATH: sandbox.cfg, HOME: sandbox.home },
    lockDir: sandbox.lockDir,
    allowInTests: true,
    ...extra,
  }
}

/** A gateway-shaped live process that holds no lock, started before any lock is written. */
async function idleGateway(sandbox) {
  const gw = spawnGateway(sandbox, ['--no-lock'])
  await gw.waitForLine(/^IDLE /)
  return gw
}

function legacyPayload(sandbox, pid, extra = {}) {
  return { pid, createdAt: new Date().toISOString(), configPath: sandbox.cfg, ...extra }
}

/** Runs an acquire in a child whose /proc is an empty tmpfs: no owner identity is readable. */
async function acquireWithoutProc(sandbox, opts) {
  const script = `
    const { acquireGatewayLock } = require(${JSON.stringify(GATELOCK_ENTRY)})
    acquireGatewayLock(${JSON.stringify(opts)})
      .then((h) => { console.log('ACQUIRED'); return h.release() })
      .catch((e) => console.log('ERROR ' + e.code + ' ' + e.message))
  `
  const file = `${sandbox.root}/contender.cjs`
  fs.writeFileSync(file, script)
  const shell = `mount -t tmpfs none /proc && exec ${process.execPath} ${file}`
  const probe = spawnSync('unshare', ['-m', 'sh', '-c', 'mount -t tmpfs none /proc && true'])
  if (probe.status !== 0) return { skipped: 'needs unshare -m and a tmpfs mount (root)' }
  const run = spawnSync('unshare', ['-m', 'sh', '-c', shell], {
    env: sandbox.childEnv(),
    encoding: 'utf8',
    timeout: 15000,
  })
  return { stdout: run.stdout.trim(), stderr: run.stderr }
}

describe('7.3-7.5: the upstream conformance list', () => {
  test('blocks concurrent acquisition until release', async () => {
    const sandbox = makeSandbox()
    const first = await acquireGatewayLock(optsFor(sandbox, { timeoutMs: 50 }))
    const second = acquireGatewayLock(optsFor(sandbox, { timeoutMs: 15, pollIntervalMs: 2 }))
    await expect(second).rejects.toBeInstanceOf(GatewayLockError)
    await expect(second).rejects.toMatchObject({ code: 'ELOCKED' })
    await first.release()
    const third = await acquireGatewayLock(optsFor(sandbox, { timeoutMs: 50 }))
    expect(readLock(third.lockPath).payload.pid).toBe(process.pid)
    await third.release()
  })

  test('treats a recycled linux pid as stale when the start time mismatches', async () => {
    const sandbox = makeSandbox()
    const gw = await idleGateway(sandbox)
    const lockPath = lockPathFor(sandbox)
    const startTime = startTimeOf(gw.pid) + 1
    writeLock(lockPath, legacyPayload(sandbox, gw.pid, { startTime }))
    const handle = await acquireGatewayLock(optsFor(sandbox, { timeoutMs: 80, pollIntervalMs: 5 }))
    expect(readLock(lockPath).payload.pid).toBe(process.pid)
    await handle.release()
  })

  test('keeps a linux lock whose start time matches, gateway-shaped or not', async () => {
    const sandbox = makeSandbox()
    const unrelated = startUnrelated()
    const lockPath = lockPathFor(sandbox)
    const payload = legacyPayload(sandbox, unrelated.pid, { startTime: startTimeOf(unrelated.pid) })
    writeLock(lockPath, payload)
    const attempt = acquireGatewayLock(optsFor(sandbox, { timeoutMs: 80, pollIntervalMs: 5 }))
    await expect(attempt).rejects.toThrow(`gateway already running (pid ${unrelated.pid})`)
  })

  test('keeps a lock when /proc cannot be read, whatever its age (SPEC 9)', async (ctx) => {
    const sandbox = makeSandbox()
    const gw = await idleGateway(sandbox)
    const lockPath = lockPathFor(sandbox)
    // TypeScript ages this out once createdAt is older than staleMs; gatelock
    // never ages out an owner whose pid is alive.
    writeLock(lockPath, {
      ...legacyPayload(sandbox, gw.pid, { startTime: 111 }),
      createdAt: new Date(0).toISOString(),
    })
    const before = fs.readFileSync(lockPath)
    const result = await acquireWithoutProc(sandbox, {
      allowInTests: true,
      timeoutMs: 300,
      staleMs: 1,
    })
    if (result.skipped) return ctx.skip(result.skipped)
    expect(result.stdout).toBe(
      `ERROR ELOCKED gateway already running (pid ${gw.pid}); lock timeout after 300ms`,
    )
    expect(fs.readFileSync(lockPath)).toEqual(before)
  })

  test('rejects with the OS code when the lock file exists but cannot be read', async (ctx) => {
    // An unreadable file is not evidence of a dead owner (SPEC 4); upstream
    // could only simulate this with an fs.stat spy. Root reads everything, so
    // the contender runs as uid 65534 against a root-owned 0600 lock file.
    const sandbox = makeSandbox()
    const lockPath = lockPathFor(sandbox)
    writeLock(lockPath, legacyPayload(sandbox, 1))
    for (const dir of [sandbox.root, sandbox.tmp, sandbox.lockDir]) fs.chownSync(dir, 65534, 65534)
    const file = `${sandbox.root}/unprivileged.cjs`
    const opts = { allowInTests: true, timeoutMs: 100, lockDir: sandbox.lockDir }
    fs.writeFileSync(
      file,
      `
      const { acquireGatewayLock } = require(${JSON.stringify(GATELOCK_ENTRY)})
      acquireGatewayLock(${JSON.stringify(opts)})
        .then(() => console.log('ACQUIRED'), (e) => console.log(e.name, e.code, e.message))
    `,
    )
    const run = spawnSync(
      'setpriv',
      ['--reuid=65534', '--regid=65534', '--clear-groups', process.execPath, file],
      { env: sandbox.childEnv(), encoding: 'utf8', timeout: 10000 },
    )
    if (run.error || /setpriv:/.test(run.stderr)) return ctx.skip(`setpriv failed: ${run.stderr}`)
    expect(run.stdout.trim()).toBe(
      `GatewayLockError EACCES failed to read gateway lock at ${lockPath}`,
    )
    expect(readLock(lockPath).payload.pid).toBe(1)
  })

  test('keeps a live, identified owner even when its recorded port is free (SPEC 9)', async () => {
    const sandbox = makeSandbox()
    const port = await freePort()
    const gw = await idleGateway(sandbox)
    const lockPath = lockPathFor(sandbox)
    writeLock(lockPath, legacyPayload(sandbox, gw.pid, { port }))
    // TypeScript reads the free port as "dead" and takes the lock.
    const attempt = acquireGatewayLock(
      optsFor(sandbox, { port, platform: 'darwin', timeoutMs: 50, pollIntervalMs: 5 }),
    )
    await expect(attempt).rejects.toThrow(`gateway already running (pid ${gw.pid})`)
  })

  test('keeps the lock when the configured port is busy and the owner pid is alive', async () => {
    const sandbox = makeSandbox()
    const port = await freePort()
    const gw = spawnGateway(sandbox, ['--port', port, '--listen', '127.0.0.1'])
    expect(await gw.firstLine).toBe(`ACQUIRED ${gw.pid}`)
    const attempt = acquireGatewayLock(
      optsFor(sandbox, { port, platform: 'darwin', timeoutMs: 20, pollIntervalMs: 5 }),
    )
    await expect(attempt).rejects.toThrow(`gateway already running (pid ${gw.pid})`)
  })

  test('returns null when the multi-gateway override is enabled', async () => {
    const sandbox = makeSandbox()
    const env = { OPENCLAW_ALLOW_MULTI_GATEWAY: '1', VITEST: '', OPENCLAW_CONFIG_PATH: sandbox.cfg }
    expect(await acquireGatewayLock({ env, lockDir: sandbox.lockDir })).toBeNull()
    expect(fs.existsSync(sandbox.lockDir)).toBe(false)
  })

  test('returns null in a test environment unless allowInTests is set', async () => {
    const sandbox = makeSandbox()
    const base = { OPENCLAW_CONFIG_PATH: sandbox.cfg }
    expect(
      await acquireGatewayLock({ env: { ...base, VITEST: '1' }, lockDir: sandbox.lockDir }),
    ).toBeNull()
    const nodeTest = { env: { ...base, NODE_ENV: 'test' }, lockDir: sandbox.lockDir }
    expect(await acquireGatewayLock(nodeTest)).toBeNull()
    const allowed = await acquireGatewayLock({ ...nodeTest, allowInTests: true })
    expect(allowed.lockPath).toBe(lockPathFor(sandbox))
    await allowed.release()
  })

  test('wraps file system errors as GatewayLockError with the path and the OS code', async () => {
    const sandbox = makeSandbox()
    const notADir = `${sandbox.root}/plain-file`
    fs.writeFileSync(notADir, '')
    const attempt = acquireGatewayLock(optsFor(sandbox, { lockDir: notADir }))
    await expect(attempt).rejects.toBeInstanceOf(GatewayLockError)
    await expect(attempt).rejects.toMatchObject({
      code: 'ENOTDIR',
      message: `failed to prepare gateway lock directory at ${notADir}`,
    })
  })

  test('cleans up a stale lock left by a dead pid on non-linux platforms', async () => {
    const sandbox = makeSandbox()
    const lockPath = lockPathFor(sandbox)
    writeLock(lockPath, legacyPayload(sandbox, 2147483647))
    const handle = await acquireGatewayLock(
      optsFor(sandbox, { platform: 'darwin', timeoutMs: 200 }),
    )
    expect(readLock(lockPath).payload.pid).toBe(process.pid)
    await handle.release()
  })

  for (const platform of ['win32', 'darwin']) {
    test(`clears a stale lock on ${platform} when the command line is no gateway's`, async () => {
      const sandbox = makeSandbox()
      const unrelated = startUnrelated()
      await new Promise((resolve) => setTimeout(resolve, 200))
      writeLock(lockPathFor(sandbox), legacyPayload(sandbox, unrelated.pid))
      const handle = await acquireGatewayLock(optsFor(sandbox, { platform, timeoutMs: 200 }))
      expect(readLock(handle.lockPath).payload.pid).toBe(process.pid)
      expect(unrelated.exitInfo).toBeFalsy()
      await handle.release()
    })

    test(`keeps the lock on ${platform} when the process command line is a gateway`, async () => {
      const sandbox = makeSandbox()
      const gw = await idleGateway(sandbox)
      writeLock(lockPathFor(sandbox), legacyPayload(sandbox, gw.pid))
      const attempt = acquireGatewayLock(optsFor(sandbox, { platform, timeoutMs: 30 }))
      await expect(attempt).rejects.toThrow(`gateway already running (pid ${gw.pid})`)
    })

    test(`keeps the lock on ${platform} when the command line cannot be read`, async (ctx) => {
      const sandbox = makeSandbox()
      const gw = await idleGateway(sandbox)
      writeLock(lockPathFor(sandbox), legacyPayload(sandbox, gw.pid))
      const result = await acquireWithoutProc(sandbox, {
        allowInTests: true,
        platform,
        timeoutMs: 100,
      })
      if (result.skipped) return ctx.skip(result.skipped)
      expect(result.stdout).toBe(
        `ERROR ELOCKED gateway already running (pid ${gw.pid}); lock timeout after 100ms`,
      )
    })
  }
})

describe('7.6.4: the active runtime port', () => {
  test('records and reads the active runtime port from a verified gateway lock', async () => {
    const sandbox = makeSandbox()
    const port = await freePort()
    const gw = spawnGateway(sandbox, ['--port', port])
    expect(await gw.firstLine).toBe(`ACQUIRED ${gw.pid}`)
    expect(readLock(lockPathFor(sandbox)).payload.port).toBe(port)
    expect(await readActiveGatewayLockPort(optsFor(sandbox))).toBe(port)
  })

  test('reads no port when there is no lock, or its owner is dead', async () => {
    const sandbox = makeSandbox()
    expect(await readActiveGatewayLockPort(optsFor(sandbox))).toBeUndefined()
    writeLock(lockPathFor(sandbox), legacyPayload(sandbox, await deadPid(), { port: 48789 }))
    expect(await readActiveGatewayLockPort(optsFor(sandbox))).toBeUndefined()
  })

  test('ignores the port of an owner whose command line cannot be verified', async () => {
    const sandbox = makeSandbox()
    const server = await listenOn('127.0.0.1')
    const unrelated = startUnrelated()
    await new Promise((resolve) => setTimeout(resolve, 200))
    const payload = legacyPayload(sandbox, unrelated.pid, { port: server.port })
    writeLock(lockPathFor(sandbox), payload)
    expect(await readActiveGatewayLockPort(optsFor(sandbox))).toBeUndefined()
  })
})
