// Field failures about who owns the lock (field-failures.md B1, B3, B5, B6, B8): dead owners,
// reused pids, our own pid, torn files and racing reclaims, with real processes and files.

import fs from 'node:fs'
import { createRequire } from 'node:module'
import { afterEach, expect, test } from 'vitest'
import {
  GATELOCK_ENTRY,
  cleanupAll,
  deadPid,
  freePort,
  inodeOf,
  isoAgo,
  lockPathFor,
  makeSandbox,
  pidExists,
  readLock,
  realNow,
  runNode,
  sleep,
  spawnGateway,
  startTimeOf,
  startUnrelated,
  writeLock,
} from './support/harness.mjs'
import { oracleAcquire } from './support/oracle.mjs'

const require = createRequire(import.meta.url)
const { acquireGatewayLock } = require(GATELOCK_ENTRY)

const onLinux = process.platform === 'linux'
const handles = new Set()

afterEach(async () => {
  // A handle left by a failed assertion would keep its kernel lock for the rest of the file.
  for (const handle of handles) await handle.release().catch(() => {})
  handles.clear()
  await cleanupAll()
})

/** A fresh sandbox and LOCK, learnt from a throw-away acquire+release in a child process. */
async function scenario() {
  const sandbox = makeSandbox()
  const script = [
    'const { acquireGatewayLock } = require(process.env.GATELOCK_ENTRY)',
    'acquireGatewayLock({ allowInTests: true }).then(async (handle) => {',
    '  console.log(handle.lockPath)',
    '  await handle.release()',
    '})',
  ].join('\n')
  const run = await runNode(script, { env: sandbox.childEnv(), module: false })
  const lock = run.stdout.trim()
  if (run.code !== 0 || !lock.startsWith(`${sandbox.lockDir}/`)) {
    throw new Error(`no lock path from a child acquire: ${JSON.stringify(run)}`)
  }
  fs.rmSync(sandbox.lockDir, { recursive: true, force: true })
  return { sandbox, lock }
}

function bareScenario() {
  const sandbox = makeSandbox()
  return { sandbox, lock: lockPathFor(sandbox) }
}

/** Options of an in-process acquire that sees the sandbox as its child processes do. */
function inSandbox(sandbox, options = {}) {
  return {
    allowInTests: true,
    lockDir: sandbox.lockDir,
    env: { OPENCLAW_CONFIG_PATH: sandbox.cfg, HOME: sandbox.home },
    ...options,
  }
}

/** Calls start() and times it to settlement: { handle, error, ms }. */
async function settle(start) {
  const startedAt = realNow()
  try {
    const handle = await start()
    if (handle) handles.add(handle)
    return { handle, ms: realNow() - startedAt }
  } catch (error) {
    return { error, ms: realNow() - startedAt }
  }
}

function acquire(sandbox, options) {
  return settle(() => acquireGatewayLock(inSandbox(sandbox, options)))
}

async function release(handle) {
  handles.delete(handle)
  await handle.release()
}

/** UNREL must still run its own program: alive, not stopped, nothing pending or printed. */
function expectNeverSignalled(proc) {
  expect(proc.exitInfo).toBe(null)
  expect(pidExists(proc.pid)).toBe(true)
  const status = fs.readFileSync(`/proc/${proc.pid}/status`, 'utf8')
  expect(status).toMatch(/^State:\s+[RS]/m)
  expect(status).toMatch(/^SigPnd:\s+0+$/m)
  expect(status).toMatch(/^ShdPnd:\s+0+$/m)
  expect(proc.stderr).toBe('')
}

function expectFreshOwnLock(lock) {
  const { payload } = readLock(lock)
  expect(payload.pid).toBe(process.pid)
  const age = Date.now() - Date.parse(payload.createdAt)
  expect(age).toBeGreaterThanOrEqual(0)
  expect(age).toBeLessThan(1000)
}

// B5 comes first: (a) is about a lock naming our pid before this process ever acquired one.

test('B5 (a): reclaims a leftover lock with its own pid that no handle holds', async () => {
  const { sandbox, lock } = await scenario()
  const leftover = {
    pid: process.pid,
    createdAt: isoAgo(1000),
    configPath: sandbox.cfg,
    ...(onLinux ? { startTime: startTimeOf(process.pid) } : {}),
  }
  writeLock(lock, leftover)

  const { handle, error, ms } = await acquire(sandbox, { timeoutMs: 2000 })

  expect(error).toBeUndefined()
  expect(ms).toBeLessThan(500)
  expect(handle.lockPath).toBe(lock)
  const { payload } = readLock(lock)
  expect(payload.pid).toBe(process.pid)
  expect(Date.parse(payload.createdAt)).toBeGreaterThan(Date.parse(leftover.createdAt))
})

test('B5 (b): refuses a second acquire in the process that holds the lock', async () => {
  const { sandbox, lock } = await scenario()
  writeLock(lock, {
    pid: process.pid,
    createdAt: isoAgo(1000),
    configPath: sandbox.cfg,
    ...(onLinux ? { startTime: startTimeOf(process.pid) } : {}),
  })
  const first = await acquire(sandbox, { timeoutMs: 2000 })
  expect(first.error).toBeUndefined()
  const bytes = readLock(lock).text

  const second = await acquire(sandbox, { timeoutMs: 1000 })

  expect(second.handle).toBeUndefined()
  expect(second.error.name).toBe('GatewayLockError')
  expect(second.error.message).toContain(`gateway already running (pid ${process.pid})`)
  expect(second.ms).toBeLessThanOrEqual(1500)
  expect(readLock(lock).text).toBe(bytes)
})

// Needs a container engine: GW as PID 1 of an image, killed and started five times.
test.skip('B5 (c): a PID-1 gateway restarts in a container (needs a container engine)', () => {})

test('B5 (TypeScript algorithm): its own leftover pid blocks until the timeout', async () => {
  const { sandbox, lock } = await scenario()
  const bytes = writeLock(lock, {
    pid: process.pid,
    createdAt: isoAgo(1000),
    configPath: sandbox.cfg,
    ...(onLinux ? { startTime: startTimeOf(process.pid) } : {}),
  })

  const { error } = await settle(() => oracleAcquire(inSandbox(sandbox, { timeoutMs: 300 })))

  expect(error.message).toBe(
    `gateway already running (pid ${process.pid}); lock timeout after 300ms`,
  )
  expect(readLock(lock).text).toBe(bytes)
})

test('B1: reclaims the lock of a SIGKILLed owner on the first attempt', async () => {
  const { sandbox, lock } = await scenario()
  const owner = spawnGateway(sandbox)
  expect(await owner.firstLine).toBe(`ACQUIRED ${owner.pid}`)
  owner.kill('SIGKILL')
  await owner.waitExit()
  expect(pidExists(owner.pid)).toBe(false)
  expect(readLock(lock).payload.pid).toBe(owner.pid)

  const { handle, error, ms } = await acquire(sandbox, { timeoutMs: 5000 })

  expect(error).toBeUndefined()
  expect(ms).toBeLessThan(500)
  expect(handle.lockPath).toBe(lock)
  expectFreshOwnLock(lock)
  await release(handle)
  expect(fs.existsSync(lock)).toBe(false)
})

test('B1 (with port): reclaims the lock of a SIGKILLed owner that was listening', async () => {
  const { sandbox, lock } = await scenario()
  const port = await freePort()
  const owner = spawnGateway(sandbox, ['--port', port, '--listen', '127.0.0.1'])
  expect(await owner.firstLine).toBe(`ACQUIRED ${owner.pid}`)
  owner.kill('SIGKILL')
  await owner.waitExit()
  expect(pidExists(owner.pid)).toBe(false)
  expect(readLock(lock).payload.pid).toBe(owner.pid)

  const { handle, error, ms } = await acquire(sandbox, { timeoutMs: 5000, port })

  expect(error).toBeUndefined()
  expect(ms).toBeLessThan(500)
  expect(handle.lockPath).toBe(lock)
  expectFreshOwnLock(lock)
  await release(handle)
  expect(fs.existsSync(lock)).toBe(false)
})

test.skipIf(!onLinux)(
  'B3 (a): reclaims a lock whose pid an unrelated process with another start time now holds',
  async () => {
    const { sandbox, lock } = await scenario()
    const unrelated = startUnrelated()
    writeLock(lock, {
      pid: unrelated.pid,
      createdAt: isoAgo(5000),
      configPath: sandbox.cfg,
      startTime: startTimeOf(unrelated.pid) + 1,
    })

    const { handle, error, ms } = await acquire(sandbox, { timeoutMs: 3000 })

    expect(error).toBeUndefined()
    expect(ms).toBeLessThan(500)
    expect(handle.lockPath).toBe(lock)
    expectNeverSignalled(unrelated)
  },
)

test.skipIf(!onLinux)(
  'B3 (b): reclaims a lock with no start time whose pid an unrelated process now holds',
  async () => {
    const { sandbox, lock } = await scenario()
    const unrelated = startUnrelated()
    writeLock(lock, { pid: unrelated.pid, createdAt: isoAgo(5000), configPath: sandbox.cfg })

    const { handle, error, ms } = await acquire(sandbox, { timeoutMs: 3000 })

    expect(error).toBeUndefined()
    expect(ms).toBeLessThan(500)
    expect(handle.lockPath).toBe(lock)
    expectNeverSignalled(unrelated)
  },
)

test.skipIf(!onLinux)(
  'B3 (c): keeps the lock of a live gateway-shaped owner that recorded no start time',
  async () => {
    const { sandbox, lock } = await scenario()
    const owner = spawnGateway(sandbox, ['--no-lock'])
    expect(await owner.firstLine).toBe(`IDLE ${owner.pid}`)
    // The owner must have started well before the lock it is named in was written.
    await sleep(1000)
    const bytes = writeLock(lock, {
      pid: owner.pid,
      createdAt: isoAgo(0),
      configPath: sandbox.cfg,
    })

    const { handle, error, ms } = await acquire(sandbox, { timeoutMs: 1500 })

    expect(handle).toBeUndefined()
    expect(error.name).toBe('GatewayLockError')
    expect(error.message).toContain(`gateway already running (pid ${owner.pid})`)
    expect(ms).toBeGreaterThanOrEqual(1500)
    expect(ms).toBeLessThanOrEqual(2000)
    expect(readLock(lock).text).toBe(bytes)
    expect(owner.exitInfo).toBe(null)
  },
)

test.each([
  ['(a)', 'an empty lock file 10 s old', ''],
  ['(b)', 'a lock torn after `{"pid":`, 10 s old', '{"pid":'],
])('B6 %s: reclaims %s at once', async (_, __, content) => {
  const { sandbox, lock } = await scenario()
  writeLock(lock, content, { mtimeMsAgo: 10_000 })

  const { handle, error, ms } = await acquire(sandbox)

  expect(error).toBeUndefined()
  expect(ms).toBeLessThan(1000)
  expect(handle.lockPath).toBe(lock)
  const { text, payload } = readLock(lock)
  expect(() => JSON.parse(text)).not.toThrow()
  expect(payload).toMatchObject({ pid: process.pid, configPath: sandbox.cfg })
})

test('B6 (c): leaves a brand-new empty lock file alone until the timeout', async () => {
  const { sandbox, lock } = await scenario()
  writeLock(lock, '')

  const { handle, error, ms } = await acquire(sandbox, { timeoutMs: 800 })

  expect(handle).toBeUndefined()
  expect(error.name).toBe('GatewayLockError')
  expect(error.message).toContain('gateway already running')
  expect(error.message).toContain('lock timeout after 800ms')
  expect(ms).toBeGreaterThanOrEqual(800)
  expect(ms).toBeLessThanOrEqual(1300)
  expect(fs.existsSync(lock)).toBe(true)
})

test.each([
  ['an empty lock', ''],
  ['a torn lock', '{"pid":'],
])('B6 (TypeScript algorithm): %s blocks until staleMs', async (_, content) => {
  const { sandbox, lock } = await scenario()
  writeLock(lock, content, { mtimeMsAgo: 10_000 })
  const inode = inodeOf(lock)

  const { error } = await settle(() => oracleAcquire(inSandbox(sandbox, { timeoutMs: 300 })))

  expect(error.message).toBe('gateway already running; lock timeout after 300ms')
  expect(inodeOf(lock)).toBe(inode)
  expect(readLock(lock).text).toBe(content)
})

/**
 * One B8 round in a fresh sandbox: eight GW contenders, held back until a common instant, race
 * for a lock whose owner is dead. Returns each contender's line (null if none within 6 s) and
 * LOCK's pid before they are stopped.
 */
async function raceRound({ entry = 'gatelock', timeoutMs = 3000, leadMs = 1500 } = {}) {
  // The TypeScript side has no addon to ask for LOCK; oracle.test.mjs checks the same name.
  const { sandbox, lock } = entry === 'gatelock' ? await scenario() : bareScenario()
  writeLock(lock, { pid: await deadPid(), createdAt: isoAgo(60_000), configPath: sandbox.cfg })

  const flags = ['--timeout', timeoutMs, '--poll', 10]
  const env = { GO_AT: Date.now() + leadMs }
  const contenders = Array.from({ length: 8 }, () => spawnGateway(sandbox, flags, { entry, env }))
  // "After 6 s" counts from the common start, so a slow spawn under load cannot cut a round short.
  const giveUpAt = realNow() + leadMs + 6000
  await Promise.all(
    contenders.map((gw) => gw.waitForLine(/^/, Math.max(0, giveUpAt - realNow())).catch(() => {})),
  )
  const lines = contenders.map((gw) => gw.lines[0] ?? null)
  const lockPid = readLock(lock)?.payload?.pid ?? null
  await Promise.all(contenders.map((gw) => gw.stop()))
  sandbox.cleanup()
  return { pids: contenders.map((gw) => gw.pid), lines, lockPid }
}

function winnersOf(round) {
  return round.lines.filter((line) => /^ACQUIRED \d+$/.test(line ?? ''))
}

test('B8: exactly one of eight contenders wins a dead lock, in 50 of 50 rounds', async () => {
  // Rounds have their own sandboxes, so five run at once; the losers' 3 s timeouts overlap.
  const rounds = []
  for (let batch = 0; batch < 10; batch += 1) {
    rounds.push(
      ...(await Promise.all(Array.from({ length: 5 }, () => raceRound({ leadMs: 2500 })))),
    )
  }
  const dirty = []
  for (const [index, round] of rounds.entries()) {
    const winners = winnersOf(round)
    const winner = winners.length === 1 ? Number(winners[0].split(' ')[1]) : null
    const errors = round.lines.filter((line) => line?.startsWith('ERROR '))
    const clean =
      winner !== null &&
      round.pids.includes(winner) &&
      errors.length === 7 &&
      errors.every((line) => line.includes(`gateway already running (pid ${winner})`)) &&
      round.lockPid === winner
    if (!clean) dirty.push({ index, ...round })
  }
  expect(dirty).toEqual([])
}, 600_000)

test('B8 (TypeScript algorithm): contenders racing for a dead lock can both win', async () => {
  // Reproducible: on this 2-core runner 37 of 60 measured rounds had two or more winners, so
  // none in 10 is about a 1-in-10,000 event. Short timeouts only cut the losers' wait after it.
  let crowded = 0
  for (let index = 0; index < 10; index += 1) {
    const round = await raceRound({ entry: 'oracle', timeoutMs: 500, leadMs: 1000 })
    if (winnersOf(round).length > 1) crowded += 1
  }
  expect(crowded).toBeGreaterThanOrEqual(1)
}, 120_000)
