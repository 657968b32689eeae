// The package in the places it runs: plain CJS and ESM scripts (B26), Jest and Vitest with fake
// timers or a frozen Date (B27), and Vitest's thread and process pools. Each lock here belongs
// to a sandbox, and in-process acquires pass the sandbox's lock dir and env, because the
// runner's own TMPDIR and NODE_ENV/VITEST would point elsewhere.

import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, expect, test, vi } from 'vitest'
import {
  GATELOCK_ENTRY,
  cleanupAll,
  makeSandbox,
  readLock,
  realNow,
  runNode,
  spawnGateway,
  spawnTracked,
  withTimeout,
} from './support/harness.mjs'

const REPO = path.dirname(GATELOCK_ENTRY)
const JEST_BIN = path.join(REPO, 'node_modules', 'jest', 'bin', 'jest.js')
const VITEST_BIN = path.join(REPO, 'node_modules', 'vitest', 'vitest.mjs')
const POOL_FIXTURES = path.join(
  path.dirname(fileURLToPath(import.meta.url)),
  'fixtures',
  'runtime-env',
)
const CRASH_MARKS = ['Check failed', 'panicked', 'FATAL ERROR', 'Segmentation fault']
const CHILD_RUNNER_TEST_MS = 120000
// How long a script may linger past its marker before it counts as hung, not merely slow.
const HUNG_AFTER_MS = 4000

afterEach(async () => {
  vi.useRealTimers()
  await cleanupAll()
})

function writeScript(sandbox, name, text) {
  const file = path.join(sandbox.root, 'scripts', name)
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(file, text)
  return file
}

function expectNoCrash(run) {
  expect(run.signal, run.stderr).toBeNull()
  for (const mark of CRASH_MARKS) expect(run.stderr).not.toContain(mark)
}

function outputClosed(proc) {
  const { stdout, stderr } = proc.child
  const closed = new Promise((resolve) => {
    if (stdout.closed && stderr.closed) resolve()
    else proc.child.once('close', resolve)
  })
  return withTimeout(closed, 2000, `output of process ${proc.pid}`).catch(() => {})
}

function ownerPidOf(line) {
  const match = /^ACQUIRED (\d+)$/.exec(line)
  if (!match) throw new Error(`GW did not acquire: ${line}`)
  return Number(match[1])
}

/**
 * Runs a script until it exits and measures, on the real clock, how long after printing the
 * line `marker` it did; exitedAfterMs is Infinity when it was still running HUNG_AFTER_MS later.
 */
async function runPastMarker(sandbox, script, marker) {
  const proc = spawnTracked(process.execPath, [script], { env: sandbox.childEnv() })
  await proc.waitForLine(new RegExp(`^${marker}$`))
  const markedAt = realNow()
  await proc.waitExit(HUNG_AFTER_MS).catch(() => {})
  await outputClosed(proc)
  const exit = proc.exitInfo ?? { code: null, signal: null }
  const exitedAfterMs = proc.exitInfo ? proc.exitedAt - markedAt : Infinity
  return { ...exit, exitedAfterMs, lines: proc.lines, stderr: proc.stderr }
}

const ACQUIRE_ONCE = `'use strict'
const { performance } = require('node:perf_hooks')
const { acquireGatewayLock } = require(process.env.GATELOCK_ENTRY)

const options = { allowInTests: true, ...JSON.parse(process.argv[2] || '{}') }
const startedAt = performance.now()
acquireGatewayLock(options).then(
  async (handle) => {
    const ms = performance.now() - startedAt
    await handle.release()
    console.log(JSON.stringify({ ok: true, ms, lockPath: handle.lockPath }))
  },
  (err) => {
    const ms = performance.now() - startedAt
    const { name, code, message } = err
    console.log(JSON.stringify({ ok: false, ms, name, code, message }))
  },
)
`

/** Acquires and releases in a child process of the sandbox; resolves its report. */
async function acquireInChild(sandbox, options = {}) {
  const script = writeScript(sandbox, 'acquire-once.cjs', ACQUIRE_ONCE)
  const run = await runNode(script, { env: sandbox.childEnv(), args: [JSON.stringify(options)] })
  expect(run.code, run.stderr).toBe(0)
  expectNoCrash(run)
  return JSON.parse(run.stdout.trim())
}

/** LOCK, from a throw-away acquire; the lock dir is then removed so that setups start clean. */
async function discoverLock(sandbox) {
  const report = await acquireInChild(sandbox)
  expect(report.ok, JSON.stringify(report)).toBe(true)
  fs.rmSync(sandbox.lockDir, { recursive: true, force: true })
  return report.lockPath
}

const esmImport = `import { acquireGatewayLock } from ${JSON.stringify(GATELOCK_ENTRY)}`
const cjsRequire = `const { acquireGatewayLock } = require(process.env.GATELOCK_ENTRY)`

const B26_SCRIPTS = {
  a: {
    cjs: `${cjsRequire}
acquireGatewayLock({ allowInTests: true, onTelemetry: () => {} })
  .then((handle) => handle.release())
  .then(() => console.log('done'))
`,
    mjs: `${esmImport}
const handle = await acquireGatewayLock({ allowInTests: true, onTelemetry: () => {} })
await handle.release()
console.log('done')
`,
  },
  b: {
    cjs: `${cjsRequire}
acquireGatewayLock({ allowInTests: true }).then(() => console.log('held'))
`,
    mjs: `${esmImport}
await acquireGatewayLock({ allowInTests: true })
console.log('held')
`,
  },
  c: {
    cjs: `const { performance } = require('node:perf_hooks')
${cjsRequire}
const startedAt = performance.now()
acquireGatewayLock({ allowInTests: true, timeoutMs: 2000 })
  .then(() => console.log('acquired'))
  .catch((err) => {
    console.log('settled after ' + Math.round(performance.now() - startedAt) + ' ms')
    console.log(err.message)
  })
`,
    mjs: `import { performance } from 'node:perf_hooks'
${esmImport}
const startedAt = performance.now()
try {
  await acquireGatewayLock({ allowInTests: true, timeoutMs: 2000 })
  console.log('acquired')
} catch (err) {
  console.log('settled after ' + Math.round(performance.now() - startedAt) + ' ms')
  console.log(err.message)
}
`,
  },
  d: {
    cjs: `const fs = require('node:fs')
${cjsRequire}
acquireGatewayLock({ allowInTests: true, timeoutMs: 10000, onTelemetry: () => {} })
  .catch((err) => console.log('rejected: ' + err.message))
setTimeout(() => {
  fs.writeSync(1, 'exiting\\n')
  process.exit(0)
}, 200)
`,
    mjs: `import fs from 'node:fs'
${esmImport}
acquireGatewayLock({ allowInTests: true, timeoutMs: 10000, onTelemetry: () => {} })
  .catch((err) => console.log('rejected: ' + err.message))
setTimeout(() => {
  fs.writeSync(1, 'exiting\\n')
  process.exit(0)
}, 200)
`,
  },
}

const VARIANTS = ['cjs', 'mjs']

test.each(VARIANTS)('B26(a) %s: exits 0 within 500 ms of an acquire and release', async (kind) => {
  const sandbox = makeSandbox()
  const script = writeScript(sandbox, `a.${kind}`, B26_SCRIPTS.a[kind])

  const run = await runPastMarker(sandbox, script, 'done')

  expect(run.exitedAfterMs).toBeLessThanOrEqual(500)
  expect(run.code, run.stderr).toBe(0)
  expectNoCrash(run)
  expect(run.stderr).not.toMatch(/unsettled top-level await/i)
})

test.each(VARIANTS)(
  'B26(b) %s: exits 0 within 500 ms while holding, and the next process takes the lock at once',
  async (kind) => {
    const sandbox = makeSandbox()
    const lockPath = await discoverLock(sandbox)
    const script = writeScript(sandbox, `b.${kind}`, B26_SCRIPTS.b[kind])

    const run = await runPastMarker(sandbox, script, 'held')

    expect(run.exitedAfterMs).toBeLessThanOrEqual(500)
    expect(run.code, run.stderr).toBe(0)
    expectNoCrash(run)
    const next = await acquireInChild(sandbox)
    expect(next, JSON.stringify(next)).toMatchObject({ ok: true, lockPath })
    expect(next.ms).toBeLessThanOrEqual(500)
  },
)

test.each(VARIANTS)(
  'B26(c) %s: stays alive for the whole 2000 ms wait, reports the timeout, then exits 0',
  async (kind) => {
    const sandbox = makeSandbox()
    const gw = spawnGateway(sandbox)
    const ownerPid = ownerPidOf(await gw.firstLine)
    const script = writeScript(sandbox, `c.${kind}`, B26_SCRIPTS.c[kind])

    const run = await runNode(script, { env: sandbox.childEnv() })

    const lines = run.stdout.trim().split('\n')
    expect(lines, run.stderr).toContain(
      `gateway already running (pid ${ownerPid}); lock timeout after 2000ms`,
    )
    const settledMs = Number(/^settled after (\d+) ms$/.exec(lines[0])?.[1])
    expect(settledMs).toBeGreaterThanOrEqual(2000)
    expect(settledMs).toBeLessThanOrEqual(2600)
    expect(run.code, run.stderr).not.toBe(13)
    expect(run.code, run.stderr).toBe(0)
    expectNoCrash(run)
    expect(run.stderr).not.toMatch(/unsettled top-level await/i)
  },
)

test.each(VARIANTS)(
  'B26(d) %s: process.exit(0) during a wait exits 0 within 500 ms, without a crash',
  async (kind) => {
    const sandbox = makeSandbox()
    const gw = spawnGateway(sandbox)
    ownerPidOf(await gw.firstLine)
    const script = writeScript(sandbox, `d.${kind}`, B26_SCRIPTS.d[kind])

    // A teardown race shows only now and then, so give it a few chances.
    for (let round = 0; round < 3; round += 1) {
      const run = await runPastMarker(sandbox, script, 'exiting')

      expect(run.exitedAfterMs).toBeLessThanOrEqual(500)
      expect(run.code, run.stderr).toBe(0)
      expectNoCrash(run)
      expect(run.lines).toEqual(['exiting'])
    }
  },
)

/**
 * Runs Jest on `dir` (holding jest.config.cjs) as a child process and notes, on the real clock,
 * when its summary appeared and when it exited. A run still alive HUNG_AFTER_MS after its
 * summary is killed, with exitedAfterSummaryMs Infinity.
 */
async function runJest(dir, args, env) {
  const argv = [JEST_BIN, '--rootDir', dir, '--config', path.join(dir, 'jest.config.cjs'), '--ci']
  const proc = spawnTracked(process.execPath, [...argv, ...args], { env, cwd: dir })
  let summaryAt = null
  const summary = new Promise((resolve) => {
    let seen = ''
    proc.child.stderr.on('data', (chunk) => {
      seen += chunk
      if (summaryAt === null && /^Tests:/m.test(seen)) {
        summaryAt = realNow()
        resolve()
      }
    })
  })

  await withTimeout(Promise.race([summary, proc.exited]), 60000, 'Jest summary').catch(() => {})
  await proc.waitExit(HUNG_AFTER_MS).catch(() => proc.kill('SIGKILL'))
  await proc.waitExit()
  await outputClosed(proc)
  const exitedAfterSummaryMs =
    summaryAt !== null && proc.exitInfo.signal === null ? proc.exitedAt - summaryAt : Infinity
  return { ...proc.exitInfo, exitedAfterSummaryMs, stdout: proc.stdout, stderr: proc.stderr }
}

function expectCleanJestRun(run, passed) {
  expect(run.stderr).toMatch(new RegExp(`^Tests:\\s+${passed} passed, ${passed} total$`, 'm'))
  expect(run.code, run.stderr).toBe(0)
  expect(run.exitedAfterSummaryMs, run.stderr).toBeLessThanOrEqual(2000)
  expect(run.stderr).not.toMatch(/did not exit/i)
  expect(run.stderr).not.toMatch(/open handle/i)
  expect(run.stderr).not.toMatch(/failed to exit gracefully/i)
  expectNoCrash(run)
}

function writeJestProject(sandbox, fileName, text) {
  const dir = path.join(sandbox.root, 'jest')
  fs.mkdirSync(dir, { recursive: true })
  const config = `module.exports = {
  testMatch: ['<rootDir>/*.jest.cjs'],
  testEnvironment: 'node',
  transform: {},
}
`
  fs.writeFileSync(path.join(dir, 'jest.config.cjs'), config)
  fs.writeFileSync(path.join(dir, fileName), text)
  return dir
}

const B26_JEST = `'use strict'
const { acquireGatewayLock } = require(process.env.GATELOCK_ENTRY)

test.each([1, 2, 3])('acquires with telemetry and releases, round %i', async () => {
  const handle = await acquireGatewayLock({ allowInTests: true, onTelemetry: () => {} })
  expect(typeof handle.lockPath).toBe('string')
  await handle.release()
})
`

test.each([
  ['with --detectOpenHandles', ['--detectOpenHandles']],
  ['without flags', []],
])(
  'B26(e) Jest %s: passes and exits within 2 s of its summary, leaving no open handle',
  async (_, flags) => {
    const sandbox = makeSandbox()
    const dir = writeJestProject(sandbox, 'liveness.jest.cjs', B26_JEST)

    const run = await runJest(dir, flags, sandbox.childEnv({ NO_COLOR: '1' }))

    expectCleanJestRun(run, 3)
  },
  CHILD_RUNNER_TEST_MS,
)

const B27_JEST = `'use strict'
const fs = require('node:fs')
const { performance } = require('node:perf_hooks')
const { acquireGatewayLock } = require(process.env.GATELOCK_ENTRY)

// Bound before any fake timers exist: Jest's defaults fake performance too.
const realNow = performance.now.bind(performance)

afterEach(() => jest.useRealTimers())

test('B27(a): rejects ELOCKED after 800 ms of real time under default fake timers', async () => {
  jest.useFakeTimers()
  const events = []
  let eventsAtRejection = null
  const startedAt = realNow()

  const error = await acquireGatewayLock({
    allowInTests: true,
    timeoutMs: 800,
    onTelemetry: (e) => events.push(e.event),
  }).then(
    () => null,
    (err) => {
      eventsAtRejection = [...events]
      return err
    },
  )
  const ms = realNow() - startedAt

  expect(error).toMatchObject({ name: 'GatewayLockError', code: 'ELOCKED' })
  expect(error.message).toContain('(pid ' + process.env.GW_PID + ')')
  expect(ms).toBeGreaterThanOrEqual(800)
  expect(ms).toBeLessThanOrEqual(1400)
  expect(eventsAtRejection).toEqual(['acquire-start', 'acquire-contention', 'acquire-timeout'])
})

test('B27(d): acquires and releases within 300 ms each under default fake timers', async () => {
  jest.useFakeTimers()
  const env = { OPENCLAW_CONFIG_PATH: process.env.FREE_CONFIG_PATH, HOME: process.env.HOME }

  let startedAt = realNow()
  const handle = await acquireGatewayLock({ allowInTests: true, env })
  const acquireMs = realNow() - startedAt
  startedAt = realNow()
  await handle.release()
  const releaseMs = realNow() - startedAt

  expect(handle.configPath).toBe(process.env.FREE_CONFIG_PATH)
  expect(fs.existsSync(handle.lockPath)).toBe(false)
  expect(acquireMs).toBeLessThanOrEqual(300)
  expect(releaseMs).toBeLessThanOrEqual(300)
})
`

test(
  'B27(a)/(d) Jest fake timers: the wait runs on real time and nothing hangs',
  async () => {
    const sandbox = makeSandbox()
    const gw = spawnGateway(sandbox)
    const ownerPid = ownerPidOf(await gw.firstLine)
    const freeConfig = path.join(sandbox.root, 'cfg-free', 'openclaw.json')
    fs.mkdirSync(path.dirname(freeConfig))
    fs.writeFileSync(freeConfig, '{}')
    const dir = writeJestProject(sandbox, 'fake-timers.jest.cjs', B27_JEST)
    const env = sandbox.childEnv({ GW_PID: ownerPid, FREE_CONFIG_PATH: freeConfig, NO_COLOR: '1' })

    const run = await runJest(dir, ['--detectOpenHandles'], env)

    expectCleanJestRun(run, 2)
  },
  CHILD_RUNNER_TEST_MS,
)

function inProcessOptions(sandbox, extra) {
  return {
    allowInTests: true,
    lockDir: sandbox.lockDir,
    env: { OPENCLAW_CONFIG_PATH: sandbox.cfg, HOME: sandbox.home },
    ...extra,
  }
}

function freezeDate() {
  const frozenAt = new Date('2020-01-01T00:00:00Z')
  vi.useFakeTimers({ toFake: ['Date'] })
  vi.setSystemTime(frozenAt)
}

test('B27(b) Vitest frozen Date: rejects ELOCKED after 800 ms of real time', async () => {
  const sandbox = makeSandbox()
  const gw = spawnGateway(sandbox)
  const ownerPid = ownerPidOf(await gw.firstLine)
  const { acquireGatewayLock } = await import('../index.js')
  const events = []
  let eventsAtRejection = null

  freezeDate()
  const startedAt = realNow()
  const options = { timeoutMs: 800, onTelemetry: (e) => events.push(e.event) }
  const error = await acquireGatewayLock(inProcessOptions(sandbox, options)).then(
    (handle) => handle.release(),
    (err) => {
      eventsAtRejection = [...events]
      return err
    },
  )
  const ms = realNow() - startedAt
  vi.useRealTimers()

  expect(error).toMatchObject({ name: 'GatewayLockError', code: 'ELOCKED' })
  expect(error.message).toContain(`(pid ${ownerPid})`)
  expect(ms).toBeGreaterThanOrEqual(800)
  expect(ms).toBeLessThanOrEqual(1400)
  expect(eventsAtRejection).toEqual(['acquire-start', 'acquire-contention', 'acquire-timeout'])
})

test('B27(c) Vitest frozen Date: createdAt comes from the real clock, not 2020', async () => {
  const sandbox = makeSandbox()
  const lockPath = await discoverLock(sandbox)
  const { acquireGatewayLock } = await import('../index.js')

  freezeDate()
  const handle = await acquireGatewayLock(inProcessOptions(sandbox))
  const written = readLock(handle.lockPath)
  await handle.release()
  vi.useRealTimers()
  const realMs = Number(execFileSync('date', ['+%s%3N'], { encoding: 'utf8' }).trim())

  expect(handle.lockPath).toBe(lockPath)
  const createdAt = written?.payload?.createdAt
  expect(createdAt, written?.text).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/)
  expect(createdAt.startsWith('2020-')).toBe(false)
  expect(Math.abs(Date.parse(createdAt) - realMs)).toBeLessThanOrEqual(5000)
})

test.each(['threads', 'forks'])(
  'loads and works in a Vitest %s pool: acquire, GatewayLockError on contention, release',
  async (pool) => {
    const sandbox = makeSandbox()
    const args = [
      'run',
      '--root',
      POOL_FIXTURES,
      '--config',
      path.join(POOL_FIXTURES, 'vitest.config.mjs'),
      '--pool',
      pool,
    ]
    const env = sandbox.childEnv({
      GATELOCK_FIXTURE_ROOT: sandbox.root,
      GATELOCK_FIXTURE_POOL: pool,
      NO_COLOR: '1',
    })

    const run = await runNode(VITEST_BIN, { args, env, cwd: POOL_FIXTURES, timeoutMs: 90000 })

    const output = run.stdout + run.stderr
    expect(run.timedOut, output).toBe(false)
    expect(output).toMatch(/Test Files\s+2 passed \(2\)/)
    expect(output).toMatch(/Tests\s+4 passed \(4\)/)
    expect(run.code, output).toBe(0)
    expectNoCrash(run)
  },
  CHILD_RUNNER_TEST_MS,
)

const ESM_NAMED = `import fs from 'node:fs'
import {
  GatewayLockError,
  acquireGatewayLock,
  inspectGatewayLock,
  readActiveGatewayLockPort,
} from ${JSON.stringify(GATELOCK_ENTRY)}

const handle = await acquireGatewayLock({ allowInTests: true })
const error = await acquireGatewayLock({ allowInTests: true, timeoutMs: 0 }).catch((err) => err)
await handle.release()
console.log(JSON.stringify({
  types: [typeof inspectGatewayLock, typeof readActiveGatewayLockPort],
  lockPath: handle.lockPath,
  isLockError: error instanceof GatewayLockError,
  name: error.name,
  code: error.code,
  message: error.message,
  removed: !fs.existsSync(handle.lockPath),
}))
`

test('ESM named imports from index.js work in an .mjs script', async () => {
  const sandbox = makeSandbox()
  const script = writeScript(sandbox, 'named.mjs', ESM_NAMED)

  const run = await runNode(script, { env: sandbox.childEnv() })

  expect(run.code, run.stderr).toBe(0)
  expectNoCrash(run)
  const report = JSON.parse(run.stdout.trim())
  expect(report).toMatchObject({
    types: ['function', 'function'],
    lockPath: expect.stringMatching(/^.*\/gateway\.[0-9a-f]{8}\.lock$/),
    isLockError: true,
    name: 'GatewayLockError',
    code: 'ELOCKED',
    removed: true,
  })
  expect(report.lockPath.startsWith(sandbox.lockDir + path.sep)).toBe(true)
  expect(report.message).toMatch(/^gateway already running \(pid \d+\); lock timeout after 0ms$/)
})
