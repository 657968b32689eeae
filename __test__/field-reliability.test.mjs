// Field failures B17, B20, B24 and B25 (cases/field-failures.md): a lock path removed under a
// live owner, owners and contenders in different PID namespaces, an acquire out of file
// descriptors, and worker threads torn down with the addon loaded. Every acquire runs in a child
// process and is timed there; this process never loads the addon. Where the TypeScript
// algorithm gets a scenario wrong, a test next to it shows the fault with the oracle.

import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { afterEach, expect, test } from 'vitest'

import {
  cleanupAll,
  fdLocks,
  inodeOf,
  makeSandbox,
  pidExists,
  readLock,
  realNow,
  runNode,
  sleep,
  spawnGateway,
  spawnTracked,
  withTimeout,
} from './support/harness.mjs'

const RESULT_WAIT_MS = 15000
const NSRUN = ['unshare', '--user', '--map-current-user', '--pid', '--fork', '--mount-proc']
const TMPFILES = '/usr/bin/systemd-tmpfiles'
const B24_CRASHES = ['panicked', 'fatal runtime error', 'Aborted']
const B25_CRASHES = [
  'Segmentation fault',
  'Check failed',
  'uv_loop_close',
  'panicked',
  'FATAL ERROR',
]

afterEach(async () => {
  await cleanupAll()
})

// The contender: one acquire as RELIABILITY_CONTENDER describes, then one line
// `RESULT <json>`. With spec.telemetry every event is printed as `EVENT <json>` as it arrives;
// with spec.hold the handle is kept until SIGTERM, which releases it and prints `RELEASED` or
// `RELEASE-ERROR <message>`. Kept as text because Vitest rewrites functions in this file.
const CONTENDER_SOURCE = String.raw`
import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

const spec = JSON.parse(process.env.RELIABILITY_CONTENDER)
const print = (line) => process.stdout.write(line + '\n')

const result = { pid: process.pid }
if (spec.ownerPid !== undefined) {
  try {
    process.kill(spec.ownerPid, 0)
    result.signal = 'ok'
  } catch (err) {
    result.signal = err.code
  }
}

let acquire
let LockError = null
if (spec.entry === 'oracle') {
  acquire = (await import(pathToFileURL(process.env.GATELOCK_ORACLE).href)).oracleAcquire
} else {
  const gatelock = createRequire(process.env.GATELOCK_ENTRY)(process.env.GATELOCK_ENTRY)
  acquire = gatelock.acquireGatewayLock
  LockError = gatelock.GatewayLockError
}

const options = { allowInTests: true, ...spec.options }
if (spec.telemetry) options.onTelemetry = (event) => print('EVENT ' + JSON.stringify(event))

let handle = null
const started = performance.now()
try {
  handle = await acquire(options)
  result.ms = performance.now() - started
  result.ok = true
  result.lockPath = handle ? handle.lockPath : null
} catch (err) {
  result.ms = performance.now() - started
  result.ok = false
  result.error = {
    name: err?.name,
    message: String(err?.message),
    code: err?.code,
    causeCode: err?.cause?.code,
    isGatewayLockError: LockError ? err instanceof LockError : null,
  }
}
if (handle && spec.release) await handle.release()
print('RESULT ' + JSON.stringify(result))

if (handle && spec.hold) {
  setInterval(() => {}, 1 << 30)
  process.once('SIGTERM', async () => {
    try {
      await handle.release()
      print('RELEASED')
    } catch (err) {
      print('RELEASE-ERROR ' + err?.message)
    }
    process.exit(0)
  })
} else {
  process.exit(0)
}
`

// B24's case.js: steps (a)-(d) with a descriptor limit of 128, reported as one `REPORT <json>`
// line once every filler is closed again.
const B24_CASE_SOURCE = String.raw`
'use strict'
const fs = require('node:fs')
const { performance } = require('node:perf_hooks')
const { acquireGatewayLock, GatewayLockError } = require(process.env.GATELOCK_ENTRY)

const spec = JSON.parse(process.env.B24_SPEC)
const fillers = []
const report = {}

function fdCount() {
  return fs.readdirSync('/proc/self/fd').length
}

function fill() {
  for (;;) {
    try {
      fillers.push(fs.openSync('/dev/null', 'r'))
    } catch (err) {
      if (err.code === 'EMFILE') return
      throw err
    }
  }
}

function closeFillers(count) {
  for (let i = 0; i < count && fillers.length > 0; i += 1) fs.closeSync(fillers.pop())
}

// Listing the lock dir needs a descriptor of its own: one filler makes room, then comes back.
function listAtLimit() {
  closeFillers(1)
  const names = fs.readdirSync(spec.lockDir)
  fill()
  return names.sort()
}

function options(configPath, extra) {
  const env = { OPENCLAW_CONFIG_PATH: configPath, HOME: spec.home }
  return { allowInTests: true, env, ...extra }
}

async function timed(opts, afterAcquire) {
  const started = performance.now()
  try {
    const handle = await acquireGatewayLock(opts)
    const ms = performance.now() - started
    const outcome = { ok: true, ms, lockPath: handle.lockPath }
    if (afterAcquire) await afterAcquire(handle, outcome)
    return outcome
  } catch (err) {
    return {
      ok: false,
      ms: performance.now() - started,
      error: {
        name: err && err.name,
        message: String(err && err.message),
        code: err && err.code,
        isGatewayLockError: err instanceof GatewayLockError,
      },
    }
  }
}

async function releaseInto(handle, outcome) {
  await handle.release()
  outcome.released = true
  outcome.lockGone = !fs.existsSync(handle.lockPath)
}

async function main() {
  report.base = fdCount()

  fill()
  report.limitFillers = fillers.length
  report.a = await timed(options(spec.c1, { timeoutMs: 1000 }))
  report.aListing = listAtLimit()

  closeFillers(16)
  report.between = await timed(options(spec.c1), releaseInto)
  report.steady = fdCount() - fillers.length
  fill()
  report.b = await timed(options(spec.c1, { timeoutMs: 1000 }))
  report.bListing = listAtLimit()

  report.c = await timed(options(spec.c2, { staleMs: 500, timeoutMs: 1500 }))

  closeFillers(fillers.length)
  report.finalCount = fdCount()
  report.d = await timed(options(spec.c1), releaseInto)

  process.stdout.write('REPORT ' + JSON.stringify(report) + '\n')
}

main().catch((err) => {
  process.stdout.write('CASE-ERROR ' + String(err && err.stack) + '\n')
  process.exitCode = 1
})
`

// B25's worker: requires gatelock (or the oracle) itself, acquires as workerData says, and posts
// `starting` right before the call and then `result`. With hold it idles holding the handle.
const B25_WORKER_SOURCE = String.raw`
'use strict'
const { parentPort, workerData } = require('node:worker_threads')
const { performance } = require('node:perf_hooks')
const { pathToFileURL } = require('node:url')

let handle = null

async function main() {
  const acquire =
    workerData.entry === 'oracle'
      ? (await import(pathToFileURL(process.env.GATELOCK_ORACLE).href)).oracleAcquire
      : require(process.env.GATELOCK_ENTRY).acquireGatewayLock
  parentPort.postMessage({ type: 'starting' })
  const started = performance.now()
  try {
    handle = await acquire({ allowInTests: true, ...workerData.options })
    const ms = performance.now() - started
    if (workerData.release) await handle.release()
    parentPort.postMessage({ type: 'result', ok: true, ms, lockPath: handle.lockPath })
    if (workerData.hold) setInterval(() => {}, 1 << 30)
  } catch (err) {
    const ms = performance.now() - started
    const error = { name: err && err.name, message: String(err && err.message) }
    parentPort.postMessage({ type: 'result', ok: false, ms, error })
  }
}

main()
`

// B25's main.js, run as `node main.js <a|b|c|d>`. It never requires gatelock: only its workers
// do. It prints one `REPORT <json>` line, except (d), which prints `EXITING <epoch ms>` and
// calls process.exit(0).
const B25_MAIN_SOURCE = String.raw`
'use strict'
const fs = require('node:fs')
const path = require('node:path')
const { performance } = require('node:perf_hooks')
const { Worker } = require('node:worker_threads')

const spec = JSON.parse(process.env.B25_SPEC)
const workerFile = path.join(__dirname, 'worker.js')

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

function startWorker(workerData) {
  const worker = new Worker(workerFile, { workerData })
  const messages = []
  const waiting = []
  worker.on('message', (message) => {
    messages.push(message)
    for (const waiter of waiting.splice(0)) waiter()
  })
  const exited = new Promise((resolve) => worker.once('exit', resolve))
  async function next(type) {
    for (;;) {
      const found = messages.find((message) => message.type === type)
      if (found) return found
      await new Promise((resolve) => waiting.push(resolve))
    }
  }
  return { worker, messages, exited, next }
}

async function timedTerminate(worker) {
  const started = performance.now()
  await worker.terminate()
  return performance.now() - started
}

function ownLocks() {
  const dir = '/proc/' + process.pid + '/fdinfo'
  const found = []
  for (const name of fs.readdirSync(dir)) {
    let text
    try {
      text = fs.readFileSync(path.join(dir, name), 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n')) if (line.startsWith('lock:')) found.push(line.trim())
  }
  return found
}

function locksInode(lines, inode) {
  return lines.some((line) => line.split(/\s+/).some((field) => field.endsWith(':' + inode)))
}

async function untilGone(file, ms) {
  const deadline = performance.now() + ms
  while (fs.existsSync(file)) {
    if (performance.now() > deadline) return false
    await sleep(10)
  }
  return true
}

async function roundTrips() {
  const rounds = []
  const started = performance.now()
  for (let i = 0; i < 20; i += 1) {
    const env = { OPENCLAW_CONFIG_PATH: path.join(spec.cfgDir, 'round-' + i + '.json') }
    const run = startWorker({ options: { env }, release: true })
    const code = await run.exited
    const result = run.messages.find((message) => message.type === 'result')
    rounds.push({ code, result })
  }
  return { rounds, totalMs: performance.now() - started }
}

async function terminateWhileWaiting() {
  const terminations = []
  for (let i = 0; i < 10; i += 1) {
    const run = startWorker({ options: { timeoutMs: 10000 } })
    await run.next('starting')
    await sleep(300)
    const ms = await timedTerminate(run.worker)
    terminations.push({ ms, settled: run.messages.some((message) => message.type === 'result') })
  }
  process.kill(spec.gwPid, 'SIGTERM')
  const lockGone = await untilGone(spec.lockPath, 5000)
  const last = startWorker({ options: { timeoutMs: 1000 }, release: true })
  const final = await last.next('result')
  const finalCode = await last.exited
  return { terminations, lockGone, final, finalCode }
}

async function terminateWhileHolding() {
  const run = startWorker({ options: {}, hold: true })
  const held = await run.next('result')
  const inode = held.ok ? fs.statSync(held.lockPath, { bigint: true }).ino.toString() : null
  const locksBefore = ownLocks()
  const terminateMs = await timedTerminate(run.worker)
  const locksAfter = ownLocks()
  const next = startWorker({ options: { timeoutMs: 1000 }, release: true })
  const again = await next.next('result')
  const againCode = await next.exited
  return {
    held,
    heldLocked: held.ok && locksInode(locksBefore, inode),
    terminateMs,
    locksAfter,
    again,
    againCode,
  }
}

async function exitWhileWaiting() {
  const run = startWorker({ options: { timeoutMs: 10000 } })
  await run.next('starting')
  await sleep(300)
  process.stdout.write('EXITING ' + Date.now() + '\n')
  process.exit(0)
}

const scenarios = {
  a: roundTrips,
  b: terminateWhileWaiting,
  c: terminateWhileHolding,
  d: exitWhileWaiting,
  'c-oracle': async () => {
    const run = startWorker({ entry: 'oracle', options: {}, hold: true })
    const held = await run.next('result')
    const terminateMs = await timedTerminate(run.worker)
    const next = startWorker({ entry: 'oracle', options: { timeoutMs: 1000 }, release: true })
    const again = await next.next('result')
    await next.exited
    return { mainPid: process.pid, held, terminateMs, again }
  },
}

scenarios[process.argv[2]]().then(
  (report) => process.stdout.write('REPORT ' + JSON.stringify(report) + '\n'),
  (err) => {
    process.stdout.write('MAIN-ERROR ' + String(err && err.stack) + '\n')
    process.exitCode = 1
  },
)
`

function makeReliabilitySandbox() {
  const sandbox = makeSandbox()
  sandbox.contender = path.join(sandbox.root, 'contender.mjs')
  fs.writeFileSync(sandbox.contender, CONTENDER_SOURCE)
  // case.js, main.js and worker.js are CommonJS whatever encloses the temp dir.
  fs.writeFileSync(path.join(sandbox.root, 'package.json'), JSON.stringify({ type: 'commonjs' }))
  return sandbox
}

function spawnContender(sandbox, spec, { wrap = [], env } = {}) {
  const [command, ...args] = [...wrap, process.execPath, sandbox.contender]
  return spawnTracked(command, args, {
    env: sandbox.childEnv({ ...env, RELIABILITY_CONTENDER: JSON.stringify(spec) }),
    cwd: sandbox.root,
  })
}

async function contend(sandbox, spec, options) {
  const proc = spawnContender(sandbox, spec, options)
  const line = await proc.waitForLine(/^RESULT /, RESULT_WAIT_MS)
  return { proc, result: JSON.parse(line.slice('RESULT '.length)) }
}

// The scenario's own setup must start from no lock dir at all.
async function discoverLock(sandbox, options) {
  const { proc, result } = await contend(sandbox, { release: true }, options)
  await proc.waitExit()
  if (!result.ok) throw new Error(`the throw-away acquire failed: ${JSON.stringify(result)}`)
  fs.rmSync(path.dirname(result.lockPath), { recursive: true, force: true })
  return result.lockPath
}

async function startOwner(sandbox, flags = [], entry = 'gatelock') {
  const owner = spawnGateway(sandbox, flags, { entry })
  expect(await owner.firstLine).toBe(`ACQUIRED ${owner.pid}`)
  return owner
}

function spawnNamespacedOwner(sandbox) {
  const script = path.join(sandbox.root, 'app', 'dist', 'index.js')
  const [command, ...args] = [...NSRUN, process.execPath, script, 'gateway']
  return spawnTracked(command, args, { env: sandbox.childEnv(), cwd: sandbox.root })
}

function snapshot(lockPath) {
  return { inode: inodeOf(lockPath), bytes: readLock(lockPath)?.text ?? null }
}

function expectAlive(owner) {
  expect(owner.exitInfo).toBe(null)
  expect(pidExists(owner.pid)).toBe(true)
}

function expectBetween(ms, low, high) {
  expect(ms).toBeGreaterThanOrEqual(low)
  expect(ms).toBeLessThanOrEqual(high)
}

function expectLockedOut(result, ownerPid, timeoutMs) {
  expect(result.ok, JSON.stringify(result)).toBe(false)
  expect(result.error).toMatchObject({
    name: 'GatewayLockError',
    message: `gateway already running (pid ${ownerPid}); lock timeout after ${timeoutMs}ms`,
    code: 'ELOCKED',
    isGatewayLockError: true,
  })
}

function expectNoCrash(stderr, crashes) {
  for (const crash of crashes) expect(stderr, stderr).not.toContain(crash)
}

/** Whether pid holds a kernel lock on the inode (FDLOCKS lines end the device field in it). */
function holdsLockOn(pid, inode) {
  const lines = fdLocks(pid)
  return lines.some((line) => line.split(/\s+/).some((field) => field.endsWith(`:${inode}`)))
}

async function waitFor(check, ms, what) {
  const started = realNow()
  while (!check()) {
    if (realNow() - started > ms) throw new Error(`not within ${ms} ms: ${what}`)
    await sleep(10)
  }
  return realNow() - started
}

/** The first EVENT line of proc whose JSON has the given event name, parsed. */
async function eventOf(proc, name, ms) {
  const line = await proc.waitForLine(new RegExp(`^EVENT .*"event":"${name}"`), ms)
  return JSON.parse(line.slice('EVENT '.length))
}

function hostChildren(pid) {
  const children = []
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    let stat
    try {
      stat = fs.readFileSync(`/proc/${name}/stat`, 'utf8')
    } catch {
      continue
    }
    const fields = stat
      .slice(stat.lastIndexOf(')') + 1)
      .trim()
      .split(/\s+/)
    if (Number(fields[1]) === pid) children.push(Number(name))
  }
  return children
}

let namespacesWork
function canNsrun() {
  if (namespacesWork === undefined) {
    const [command, ...args] = NSRUN
    const probe = spawnSync(command, [...args, 'true'], { stdio: 'ignore', timeout: 10000 })
    namespacesWork = probe.status === 0
  }
  return namespacesWork
}

const NO_NSRUN = 'needs unprivileged user and PID namespaces: `NSRUN true` failed'

// B17: a lock path removed under its owner.

test('B17a: an owner recreates its removed LOCK and a second gateway is refused', async () => {
  const sandbox = makeReliabilitySandbox()
  const lockPath = await discoverLock(sandbox)
  const owner = await startOwner(sandbox)

  fs.rmSync(lockPath)
  await waitFor(() => fs.existsSync(lockPath), 1000, 'the owner recreates LOCK')
  const recreated = snapshot(lockPath)
  expect(JSON.parse(recreated.bytes).pid).toBe(owner.pid)
  expect(holdsLockOn(owner.pid, recreated.inode)).toBe(true)

  const { result } = await contend(sandbox, { options: { timeoutMs: 1500 } })

  expectLockedOut(result, owner.pid, 1500)
  expectBetween(result.ms, 1500, 2100)
  expect(snapshot(lockPath)).toEqual(recreated)
  expectAlive(owner)

  owner.kill('SIGTERM')
  expect(await owner.waitExit()).toEqual({ code: 0, signal: null })
  const { result: after } = await contend(sandbox, { options: { timeoutMs: 1500 }, release: true })
  expect(after.ok, JSON.stringify(after)).toBe(true)
  expect(after.ms).toBeLessThanOrEqual(500)
})

test('B17a (TypeScript algorithm): once LOCK is removed, a second owner gets in', async () => {
  const sandbox = makeReliabilitySandbox()
  const lockPath = await discoverLock(sandbox)
  const owner = await startOwner(sandbox, [], 'oracle')

  fs.rmSync(lockPath)
  await sleep(1000)
  expect(fs.existsSync(lockPath)).toBe(false)
  const spec = { entry: 'oracle', options: { timeoutMs: 1500 }, hold: true }
  const { result } = await contend(sandbox, spec)

  expect(result.ok, JSON.stringify(result)).toBe(true)
  expect(result.ms).toBeLessThan(500)
  expect(readLock(lockPath).payload.pid).toBe(result.pid)
  expectAlive(owner)
})

async function ageOutLockDirContents(ctx, sandbox) {
  ctx.skip(!fs.existsSync(TMPFILES), `needs ${TMPFILES}`)
  // A control: an old file beside the lock dir must go, or the cleaner did nothing at all.
  const junk = path.join(sandbox.tmp, 'junk.txt')
  fs.writeFileSync(junk, 'old')
  const longAgo = new Date(Date.now() - 3_600_000)
  fs.utimesSync(junk, longAgo, longAgo)
  const config = path.join(sandbox.root, 'clean.conf')
  fs.writeFileSync(config, `e ${sandbox.tmp} - - - 1s\n`)
  return async () => {
    const run = spawnSync(TMPFILES, ['--clean', config], { encoding: 'utf8', timeout: 10000 })
    expect(run.status, run.stderr).toBe(0)
    expect(fs.existsSync(junk)).toBe(false)
  }
}

test("B17b: systemd-tmpfiles skips a live owner's lock dir, so LOCK survives", async (ctx) => {
  const sandbox = makeReliabilitySandbox()
  const clean = await ageOutLockDirContents(ctx, sandbox)
  const lockPath = await discoverLock(sandbox)
  const owner = await startOwner(sandbox)
  const before = snapshot(lockPath)

  await sleep(2000)
  await clean()

  expect(snapshot(lockPath)).toEqual(before)
  const { result } = await contend(sandbox, { options: { timeoutMs: 1500 } })
  expectLockedOut(result, owner.pid, 1500)
  expect(snapshot(lockPath)).toEqual(before)
  expectAlive(owner)
})

test("B17b (TypeScript algorithm): systemd-tmpfiles deletes a live owner's LOCK", async (ctx) => {
  const sandbox = makeReliabilitySandbox()
  const clean = await ageOutLockDirContents(ctx, sandbox)
  const lockPath = await discoverLock(sandbox)
  const owner = await startOwner(sandbox, [], 'oracle')
  expect(fs.existsSync(lockPath)).toBe(true)

  await sleep(2000)
  await clean()

  expect(fs.existsSync(lockPath)).toBe(false)
  expectAlive(owner)
})

// SPEC 5.2 and 8: an owner that finds another process's lock at its path, or cannot recreate
// its own, says so with `lock-lost`.

test('B17 lock-lost: an owner whose LOCK is replaced by another live lock says so', async () => {
  const sandbox = makeReliabilitySandbox()
  const lockPath = await discoverLock(sandbox)
  const owner = spawnContender(sandbox, { telemetry: true, hold: true })
  const held = JSON.parse((await owner.waitForLine(/^RESULT /)).slice('RESULT '.length))
  expect(held.ok, JSON.stringify(held)).toBe(true)
  const ownInode = inodeOf(lockPath)

  // A second process holds a lock for the same config in a directory of its own; its file is
  // renamed over LOCK, so the path never stands empty and the owner cannot win it back.
  const otherDir = path.join(sandbox.root, 'other')
  const other = spawnContender(sandbox, { options: { lockDir: otherDir }, hold: true })
  const otherHeld = JSON.parse((await other.waitForLine(/^RESULT /)).slice('RESULT '.length))
  expect(otherHeld.ok, JSON.stringify(otherHeld)).toBe(true)
  const swap = path.join(path.dirname(lockPath), '.swap')
  fs.linkSync(otherHeld.lockPath, swap)
  fs.renameSync(swap, lockPath)
  const replaced = snapshot(lockPath)
  expect(replaced.inode).toBe(inodeOf(otherHeld.lockPath))

  const event = await eventOf(owner, 'lock-lost', 3000)

  expect(event).toEqual({
    event: 'lock-lost',
    lockPath,
    ownerPid: otherHeld.pid,
    reason: 'replaced',
  })
  expect(snapshot(lockPath)).toEqual(replaced)
  expect(holdsLockOn(owner.pid, ownInode)).toBe(false)
  expect(holdsLockOn(other.pid, replaced.inode)).toBe(true)
  owner.kill('SIGTERM')
  await owner.waitForLine(/^RELEASE/)
  expect(owner.lines).toContain('RELEASED')
  expect(snapshot(lockPath)).toEqual(replaced)
})

test('B17 lock-lost: an owner whose lock dir became a file reports it unrecoverable', async () => {
  const sandbox = makeReliabilitySandbox()
  const lockPath = await discoverLock(sandbox)
  const owner = spawnContender(sandbox, { telemetry: true, hold: true })
  const held = JSON.parse((await owner.waitForLine(/^RESULT /)).slice('RESULT '.length))
  expect(held.ok, JSON.stringify(held)).toBe(true)
  const lockDir = path.dirname(lockPath)

  fs.rmSync(lockDir, { recursive: true })
  fs.writeFileSync(lockDir, 'not a directory')

  const event = await eventOf(owner, 'lock-lost', 3000)

  expect(event).toMatchObject({ event: 'lock-lost', lockPath, reason: 'unrecoverable' })
  expect(fs.readFileSync(lockDir, 'utf8')).toBe('not a directory')
  expectAlive(owner)
})

// B20: a pid means nothing across a PID namespace boundary; the kernel lock does.

test('B20a: a contender in a PID namespace refuses a host owner it cannot see', async (ctx) => {
  ctx.skip(!canNsrun(), NO_NSRUN)
  const sandbox = makeReliabilitySandbox()
  const lockPath = await discoverLock(sandbox)
  const owner = await startOwner(sandbox)
  const before = snapshot(lockPath)

  const spec = { ownerPid: owner.pid, options: { timeoutMs: 1500 } }
  const { result } = await contend(sandbox, spec, { wrap: NSRUN })

  expect(result.pid).toBeLessThanOrEqual(3)
  expect(result.signal).toBe('ESRCH')
  expectLockedOut(result, owner.pid, 1500)
  expectBetween(result.ms, 1500, 2100)
  expect(snapshot(lockPath)).toEqual(before)
  expectAlive(owner)
})

test('B20a (TypeScript algorithm): a namespaced contender takes a live host lock', async (ctx) => {
  ctx.skip(!canNsrun(), NO_NSRUN)
  const sandbox = makeReliabilitySandbox()
  const lockPath = await discoverLock(sandbox)
  const owner = await startOwner(sandbox, [], 'oracle')
  const before = snapshot(lockPath)

  const spec = { entry: 'oracle', ownerPid: owner.pid, options: { timeoutMs: 1500 } }
  const { result } = await contend(sandbox, spec, { wrap: NSRUN })

  expect(result.signal).toBe('ESRCH')
  expect(result.ok, JSON.stringify(result)).toBe(true)
  expect(result.ms).toBeLessThan(500)
  expect(snapshot(lockPath)).not.toEqual(before)
  expectAlive(owner)
})

async function startNamespacedOwner(sandbox) {
  const owner = spawnNamespacedOwner(sandbox)
  expect(await owner.firstLine).toBe('ACQUIRED 1')
  const [inner] = hostChildren(owner.pid)
  expect(inner).toBeGreaterThan(1)
  return { owner, inner }
}

test('B20b: a host contender refuses an owner that is pid 1 of its own namespace', async (ctx) => {
  ctx.skip(!canNsrun(), NO_NSRUN)
  const sandbox = makeReliabilitySandbox()
  const lockPath = await discoverLock(sandbox)
  const { owner, inner } = await startNamespacedOwner(sandbox)
  const before = snapshot(lockPath)

  const { result } = await contend(sandbox, { ownerPid: 1, options: { timeoutMs: 1500 } })

  // As root the host's pid 1 is alive (its init); otherwise kill(1, 0) is EPERM.
  expect(result.signal).toBe(process.getuid() === 0 ? 'ok' : 'EPERM')
  expectLockedOut(result, 1, 1500)
  expectBetween(result.ms, 1500, 2100)
  expect(snapshot(lockPath)).toEqual(before)
  expectAlive(owner)
  expect(pidExists(inner)).toBe(true)
})

test('B20c: pid 1 of a second namespace refuses the lock of pid 1 of the first', async (ctx) => {
  ctx.skip(!canNsrun(), NO_NSRUN)
  const sandbox = makeReliabilitySandbox()
  const lockPath = await discoverLock(sandbox)
  const { owner, inner } = await startNamespacedOwner(sandbox)
  const before = snapshot(lockPath)

  const { result } = await contend(sandbox, { options: { timeoutMs: 1500 } }, { wrap: NSRUN })

  expect(result.pid).toBe(1)
  expectLockedOut(result, 1, 1500)
  expectBetween(result.ms, 1500, 2100)
  expect(snapshot(lockPath)).toEqual(before)
  expectAlive(owner)
  expect(pidExists(inner)).toBe(true)
})

test('B20d: the host takes over at once when the namespaced owner is killed', async (ctx) => {
  ctx.skip(!canNsrun(), NO_NSRUN)
  const sandbox = makeReliabilitySandbox()
  const lockPath = await discoverLock(sandbox)
  const { owner, inner } = await startNamespacedOwner(sandbox)

  process.kill(inner, 'SIGKILL')
  await owner.waitExit()
  await waitFor(() => !pidExists(inner), 5000, `pid ${inner} is gone`)
  expect(readLock(lockPath).payload.pid).toBe(1)

  const spec = { options: { timeoutMs: 1500 }, hold: true }
  const { result } = await contend(sandbox, spec)

  expect(result.ok, JSON.stringify(result)).toBe(true)
  expect(result.ms).toBeLessThanOrEqual(500)
  expect(readLock(lockPath).payload.pid).toBe(result.pid)
  expect(pidExists(1)).toBe(true)
})

// B24: out of descriptors, every acquire is a typed EMFILE (or an honest ELOCKED), never an
// abort, a leak, or a reclaim.

async function runB24Case(sandbox, spec) {
  const casePath = path.join(sandbox.root, 'case.js')
  fs.writeFileSync(casePath, B24_CASE_SOURCE)
  const proc = spawnTracked('bash', ['-c', 'ulimit -n 128; exec node case.js'], {
    env: sandbox.childEnv({ B24_SPEC: JSON.stringify(spec) }),
    cwd: sandbox.root,
  })
  const exit = await proc.waitExit(30000)
  // Output may still be in the pipe after the exit event.
  const closed = new Promise((resolve) => {
    if (proc.child.stdout.closed) resolve()
    else proc.child.once('close', resolve)
  })
  await withTimeout(closed, 2000, 'output of case.js').catch(() => {})
  const line = proc.lines.find((text) => text.startsWith('REPORT '))
  return { exit, stderr: proc.stderr, lines: proc.lines, report: line && JSON.parse(line.slice(7)) }
}

function expectEmfile(outcome, lockDir) {
  expect(outcome.ok, JSON.stringify(outcome)).toBe(false)
  expect(outcome.error.isGatewayLockError).toBe(true)
  expect(outcome.error.name).toBe('GatewayLockError')
  expect(outcome.error.code).toBe('EMFILE')
  expect(outcome.error.message).toContain(lockDir)
  expect(outcome.ms).toBeLessThanOrEqual(500)
}

// Each part runs the whole of case.js, so that every test starts from a fresh sandbox.
async function runOutOfDescriptors() {
  const sandbox = makeReliabilitySandbox()
  const c2 = path.join(sandbox.root, 'cfg', 'c2.json')
  fs.writeFileSync(c2, '{}')
  const lockC1 = await discoverLock(sandbox)
  const lockC2 = await discoverLock(sandbox, { env: { OPENCLAW_CONFIG_PATH: c2 } })
  expect(path.dirname(lockC2)).toBe(path.dirname(lockC1))
  const lockDir = path.dirname(lockC1)

  const started = realNow()
  const owner = spawnGateway(sandbox, [], { env: { OPENCLAW_CONFIG_PATH: c2 } })
  expect(await owner.firstLine).toBe(`ACQUIRED ${owner.pid}`)
  await sleep(Math.max(0, 1500 - (realNow() - started)))
  const before = snapshot(lockC2)

  const spec = { c1: sandbox.cfg, c2, home: sandbox.home, lockDir }
  const outcome = await runB24Case(sandbox, spec)

  expect(outcome.exit, outcome.stderr).toEqual({ code: 0, signal: null })
  expectNoCrash(outcome.stderr, B24_CRASHES)
  expect(outcome.report, JSON.stringify(outcome.lines)).toBeTruthy()
  expect(outcome.report.limitFillers).toBeGreaterThan(16)
  return { ...outcome, owner, before, lockC1, lockC2, lockDir }
}

test('B24a: out of descriptors, an acquire rejects with EMFILE and leaves no file', async () => {
  const { report, lockC2, lockDir } = await runOutOfDescriptors()

  expectEmfile(report.a, lockDir)
  expect(report.aListing).toEqual([path.basename(lockC2)])
}, 60000)

test('B24b: with room it acquires; at the limit again it rejects with EMFILE', async () => {
  const { report, lockC1, lockC2, lockDir } = await runOutOfDescriptors()

  expect(report.between, JSON.stringify(report.between)).toMatchObject({
    ok: true,
    lockPath: lockC1,
    released: true,
    lockGone: true,
  })
  expectEmfile(report.b, lockDir)
  expect(report.bListing).toEqual([path.basename(lockC2)])
}, 60000)

test("B24c: out of descriptors, a contender never steals a live gateway's lock", async () => {
  const { report, owner, before, lockC2 } = await runOutOfDescriptors()

  const c = report.c
  expect(c.ok, JSON.stringify(c)).toBe(false)
  expect(c.error.isGatewayLockError).toBe(true)
  expect(['EMFILE', 'ELOCKED']).toContain(c.error.code)
  if (c.error.code === 'EMFILE') expect(c.ms).toBeLessThanOrEqual(500)
  else expectBetween(c.ms, 1500, 2100)
  expect(snapshot(lockC2)).toEqual(before)
  expectAlive(owner)
}, 60000)

test('B24d: no failed attempt leaks a descriptor, and the next acquire works', async () => {
  const { report, lockC1 } = await runOutOfDescriptors()

  expect(report.finalCount).toBe(report.steady)
  expect(report.d, JSON.stringify(report.d)).toMatchObject({
    ok: true,
    lockPath: lockC1,
    released: true,
    lockGone: true,
  })
  expect(report.d.ms).toBeLessThanOrEqual(500)
  expect(fs.existsSync(lockC1)).toBe(false)
}, 60000)

// B25: worker threads that load the addon are torn down without a crash, a hang or an
// orphaned kernel lock.

function writeB25Scripts(sandbox) {
  const mainPath = path.join(sandbox.root, 'main.js')
  fs.writeFileSync(mainPath, B25_MAIN_SOURCE)
  fs.writeFileSync(path.join(sandbox.root, 'worker.js'), B25_WORKER_SOURCE)
  return mainPath
}

function b25Spec(sandbox, extra = {}) {
  return { B25_SPEC: JSON.stringify({ cfgDir: path.dirname(sandbox.cfg), ...extra }) }
}

async function runMain(sandbox, mode, extra, timeoutMs = 30000) {
  const mainPath = writeB25Scripts(sandbox)
  const env = sandbox.childEnv(b25Spec(sandbox, extra))
  const run = await runNode(mainPath, { env, args: [mode], cwd: sandbox.root, timeoutMs })
  const line = run.stdout.split('\n').find((text) => text.startsWith('REPORT '))
  return { run, report: line && JSON.parse(line.slice('REPORT '.length)) }
}

function expectCleanMain(run) {
  expect(run.timedOut, run.stdout).toBe(false)
  expect({ code: run.code, signal: run.signal }, run.stderr).toEqual({ code: 0, signal: null })
  expectNoCrash(run.stderr, B25_CRASHES)
}

test('B25a: twenty workers load gatelock, acquire, release and exit 0 within 20 s', async () => {
  const sandbox = makeReliabilitySandbox()

  const { run, report } = await runMain(sandbox, 'a', {}, 40000)

  expectCleanMain(run)
  expect(report.rounds).toHaveLength(20)
  for (const round of report.rounds) {
    expect(round.code, JSON.stringify(round)).toBe(0)
    expect(round.result, JSON.stringify(round)).toMatchObject({ type: 'result', ok: true })
  }
  expect(report.totalMs).toBeLessThanOrEqual(20000)
  expect(fs.readdirSync(sandbox.lockDir)).toEqual([])
}, 60000)

test('B25b: workers terminated while waiting go at once and leave the lock free', async () => {
  const sandbox = makeReliabilitySandbox()
  const lockPath = await discoverLock(sandbox)
  const owner = await startOwner(sandbox)

  const { run, report } = await runMain(sandbox, 'b', { gwPid: owner.pid, lockPath })

  expectCleanMain(run)
  expect(report.terminations).toHaveLength(10)
  for (const termination of report.terminations) {
    expect(termination.ms).toBeLessThanOrEqual(1000)
    expect(termination.settled).toBe(false)
  }
  expect(report.lockGone).toBe(true)
  expect(report.final, JSON.stringify(report.final)).toMatchObject({ ok: true, lockPath })
  expect(report.final.ms).toBeLessThanOrEqual(500)
  expect(report.finalCode).toBe(0)
  expect(await owner.waitExit()).toEqual({ code: 0, signal: null })
}, 60000)

test('B25c: terminating a worker that holds the lock drops its kernel lock', async () => {
  const sandbox = makeReliabilitySandbox()
  const lockPath = await discoverLock(sandbox)

  const { run, report } = await runMain(sandbox, 'c')

  expectCleanMain(run)
  expect(report.held, JSON.stringify(report.held)).toMatchObject({ ok: true, lockPath })
  expect(report.heldLocked).toBe(true)
  expect(report.terminateMs).toBeLessThanOrEqual(1000)
  expect(report.locksAfter).toEqual([])
  expect(report.again, JSON.stringify(report.again)).toMatchObject({ ok: true, lockPath })
  expect(report.again.ms).toBeLessThanOrEqual(1000)
  expect(report.againCode).toBe(0)
}, 60000)

test("B25c (TypeScript algorithm): a terminated holder's lock blocks the next worker", async () => {
  const sandbox = makeReliabilitySandbox()
  await discoverLock(sandbox)

  const { run, report } = await runMain(sandbox, 'c-oracle')

  expect(run.code, run.stderr).toBe(0)
  expect(report.held.ok, JSON.stringify(report.held)).toBe(true)
  expect(report.again.ok).toBe(false)
  expect(report.again.error.message).toBe(
    `gateway already running (pid ${report.mainPid}); lock timeout after 1000ms`,
  )
}, 60000)

test('B25d: process.exit while a worker waits on the lock exits 0 within 1000 ms', async () => {
  const sandbox = makeReliabilitySandbox()
  await discoverLock(sandbox)
  const owner = await startOwner(sandbox)
  const mainPath = writeB25Scripts(sandbox)

  const proc = spawnTracked(process.execPath, [mainPath, 'd'], {
    env: sandbox.childEnv(b25Spec(sandbox, { gwPid: owner.pid })),
    cwd: sandbox.root,
  })
  let exitedAt
  proc.child.once('exit', () => {
    exitedAt = Date.now()
  })
  const line = await proc.waitForLine(/^EXITING /, RESULT_WAIT_MS)
  const exit = await proc.waitExit(10000)

  expect(exit, proc.stderr).toEqual({ code: 0, signal: null })
  expect(exitedAt - Number(line.slice('EXITING '.length))).toBeLessThanOrEqual(1000)
  expectNoCrash(proc.stderr, B25_CRASHES)
  expectAlive(owner)
})
