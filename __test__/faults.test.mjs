// The reliability issue: faults of the lock directory and its file system made for real, options
// of every wrong type, a panic inside the addon, clocks that lie, and gateways that end without
// release(). Each fault must give a GatewayLockError that names the path and the OS code, leave
// no file and no descriptor behind, and let a retry succeed once the fault is gone.

import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { afterEach, describe, expect, test, vi } from 'vitest'

import {
  GATELOCK_ENTRY,
  cleanupAll,
  fdLocks,
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
  spawnTracked,
  startTimeOf,
  writeLock,
} from './support/harness.mjs'

const NOBODY = 65534
const RESULT_WAIT_MS = 15000
const AT_ONCE_MS = 500
const PROMPT_FAULT_MS = 1000
const HOUR_MS = 3_600_000
const MAX_TIMER_MS = 2_147_000_000
const DEFAULTS = { timeoutMs: 5000, pollIntervalMs: 100, staleMs: 30000 }

const PRIVATE_MOUNTS = ['unshare', '-m', '--propagation', 'private']
const AS_NOBODY = ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups']

const gatelock = await loadGatelock()
const heldHandles = new Set()
const strayProcesses = new Map()

afterEach(async () => {
  vi.useRealTimers()
  for (const handle of heldHandles) await handle.release().catch(() => {})
  heldHandles.clear()
  for (const [pid, startTime] of strayProcesses) killIfSame(pid, startTime)
  strayProcesses.clear()
  await cleanupAll()
})

// Someone may be rebuilding the addon while this file loads: its .node is then briefly missing.
async function loadGatelock() {
  const require = createRequire(GATELOCK_ENTRY)
  for (let attempt = 1; ; attempt += 1) {
    try {
      return require(GATELOCK_ENTRY)
    } catch (err) {
      if (attempt >= 60) throw err
      await sleep(1000)
    }
  }
}

// A reaped pid may be someone else's by now: only its recorded start time makes it ours.
function killIfSame(pid, startTime) {
  try {
    if (startTimeOf(pid) === startTime) process.kill(pid, 'SIGKILL')
  } catch {
    // Gone already.
  }
}

function isRoot() {
  return process.getuid() === 0
}

function succeeds(command, args) {
  return spawnSync(command, args, { stdio: 'ignore', timeout: 10000 }).status === 0
}

const capabilities = new Map()

function capable(name, probe) {
  if (!capabilities.has(name)) capabilities.set(name, probe())
  return capabilities.get(name)
}

function canRunAsNobody() {
  const [command, ...args] = AS_NOBODY
  return capable('setpriv', () => isRoot() && succeeds(command, [...args, 'true']))
}

function canMountTmpfs(sandbox) {
  const [command, ...args] = PRIVATE_MOUNTS
  const mount = 'mount -t tmpfs -o size=8k none "$0" && mount -o remount,ro "$0"'
  const probe = [...args, 'sh', '-c', mount, sandbox.tmp]
  return capable('tmpfs', () => isRoot() && succeeds(command, probe))
}

function chown(target, uid) {
  const run = spawnSync('chown', ['-R', `${uid}:${uid}`, target], { encoding: 'utf8' })
  if (run.status !== 0) throw new Error(`chown -R ${uid} ${target} failed: ${run.stderr}`)
}

// Runs a command in the mount namespace of a process this file started.
function inNamespaceOf(pid, command) {
  const run = spawnSync('nsenter', ['-t', String(pid), '-m', ...command], { encoding: 'utf8' })
  if (run.status !== 0) throw new Error(`nsenter ${command.join(' ')} failed: ${run.stderr}`)
}

/** In-process options that point at the sandbox instead of this runner's TMPDIR and env. */
function optionsFor(sandbox, extra = {}) {
  return {
    env: { OPENCLAW_CONFIG_PATH: sandbox.cfg, HOME: sandbox.home },
    lockDir: sandbox.lockDir,
    allowInTests: true,
    ...extra,
  }
}

async function acquireHere(sandbox, extra = {}) {
  const events = []
  const options = optionsFor(sandbox, { onTelemetry: (event) => events.push(event), ...extra })
  const started = realNow()
  try {
    const handle = await gatelock.acquireGatewayLock(options)
    if (handle) heldHandles.add(handle)
    return { ok: true, handle, events, ms: realNow() - started }
  } catch (error) {
    return { ok: false, error, events, ms: realNow() - started }
  }
}

function eventsNamed(events, name) {
  return events.filter((event) => event.event === name)
}

async function startOwner(sandbox, flags = []) {
  const owner = spawnGateway(sandbox, flags)
  const first = flags.includes('--no-lock') ? 'IDLE' : 'ACQUIRED'
  expect(await owner.firstLine).toBe(`${first} ${owner.pid}`)
  return owner
}

function expectLockedOut(outcome, pidText, timeoutMs) {
  expect(outcome.ok, String(outcome.error?.stack)).toBe(false)
  expect(outcome.error).toBeInstanceOf(gatelock.GatewayLockError)
  const owner = pidText === null ? '' : ` (pid ${pidText})`
  expect(outcome.error.message).toBe(
    `gateway already running${owner}; lock timeout after ${timeoutMs}ms`,
  )
  expect(outcome.error.code).toBe('ELOCKED')
}

function expectTookAtOnce(outcome, lockPath) {
  expect(outcome.ok, String(outcome.error?.stack)).toBe(true)
  expect(outcome.ms).toBeLessThanOrEqual(AT_ONCE_MS)
  expect(readLock(lockPath).payload.pid).toBe(process.pid)
}

// 1. Faults of the lock directory and its file system, each made for real.

// The contender: warms the addon up with one acquire and release elsewhere, lists its open
// descriptors, meets the fault, lists them again and prints `RESULT <json>`; on SIGUSR2 it
// retries in the same process and prints `RETRY <json>`. Kept as text because Vitest rewrites
// the source of functions in this file.
const CONTENDER_SOURCE = String.raw`
import fs from 'node:fs'
import { createRequire } from 'node:module'

const spec = JSON.parse(process.env.GATELOCK_CONTENDER)
const gatelock = createRequire(process.env.GATELOCK_ENTRY)(process.env.GATELOCK_ENTRY)

// Installed before the first count: libuv opens its signal pipe with the first handler.
const retrySignal = new Promise((resolve) => process.once('SIGUSR2', resolve))
setInterval(() => {}, 1 << 30)

function openDescriptors() {
  const found = []
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    try {
      found.push(fd + ' -> ' + fs.readlinkSync('/proc/self/fd/' + fd))
    } catch {
      // The descriptor of the listing itself, closed by now.
    }
  }
  return found.sort()
}

function listDirs() {
  const listing = {}
  for (const dir of spec.list) {
    try {
      listing[dir] = fs.readdirSync(dir).sort()
    } catch (err) {
      listing[dir] = 'error ' + err.code
    }
  }
  return listing
}

async function attempt(options) {
  const result = { pid: process.pid, uid: process.getuid() }
  const started = performance.now()
  let handle = null
  try {
    handle = await gatelock.acquireGatewayLock({ allowInTests: true, ...options })
    result.ok = true
    result.lockPath = handle.lockPath
  } catch (err) {
    result.ok = false
    result.error = {
      name: err?.name,
      message: String(err?.message),
      code: err?.code,
      causeCode: err?.cause?.code,
      isGatewayLockError: err instanceof gatelock.GatewayLockError,
    }
  }
  result.ms = performance.now() - started
  result.listing = listDirs()
  if (handle) await handle.release()
  return result
}

function report(tag, result) {
  process.stdout.write(tag + ' ' + JSON.stringify(result) + '\n')
}

const warm = await attempt({ ...spec.options, lockDir: spec.warmDir, timeoutMs: 2000 })
if (!warm.ok) {
  report('WARMUP', warm)
  process.exit(1)
}
// Node opens a descriptor of its own on the first write to a piped stdout.
process.stdout.write('WARMED\n')
const before = openDescriptors()
const fault = await attempt(spec.options)
report('RESULT', { ...fault, fdsBefore: before, fdsAfter: openDescriptors() })
await retrySignal
const retry = await attempt(spec.options)
report('RETRY', { ...retry, fdsBefore: before, fdsAfter: openDescriptors() })
process.exit(0)
`

function makeFaultSandbox() {
  const sandbox = makeSandbox()
  sandbox.contender = path.join(sandbox.root, 'contender.mjs')
  fs.writeFileSync(sandbox.contender, CONTENDER_SOURCE)
  sandbox.warmDir = path.join(sandbox.root, 'warm')
  sandbox.lockName = path.basename(lockPathFor(sandbox))
  return sandbox
}

function parseReport(line) {
  return JSON.parse(line.slice(line.indexOf(' ') + 1))
}

/** Starts the contender; resolves its fault result and a retry() that asks for the retry. */
async function meetFault(sandbox, { lockDir, list, wrap = [] }) {
  const spec = { options: { lockDir, timeoutMs: 5000 }, warmDir: sandbox.warmDir, list }
  const [command, ...args] = [...wrap, process.execPath, sandbox.contender]
  const proc = spawnTracked(command, args, {
    env: sandbox.childEnv({ GATELOCK_CONTENDER: JSON.stringify(spec) }),
    cwd: sandbox.root,
  })
  const fault = parseReport(await proc.waitForLine(/^RESULT /, RESULT_WAIT_MS))
  const retry = async () => {
    proc.kill('SIGUSR2')
    const outcome = parseReport(await proc.waitForLine(/^RETRY /, RESULT_WAIT_MS))
    expect(await proc.waitExit()).toEqual({ code: 0, signal: null })
    return outcome
  }
  return { proc, fault, retry }
}

function expectFault(result, messages, code) {
  expect(result.ok, JSON.stringify(result)).toBe(false)
  expect(result.error.name).toBe('GatewayLockError')
  expect(result.error.isGatewayLockError).toBe(true)
  expect([messages].flat()).toContain(result.error.message)
  expect(result.error.code).toBe(code)
  // A fault is not contention: it must not wait for the deadline.
  expect(result.ms).toBeLessThan(PROMPT_FAULT_MS)
  expect(result.fdsAfter).toEqual(result.fdsBefore)
}

function expectRetryTook(result, lockPath) {
  expect(result.ok, JSON.stringify(result)).toBe(true)
  expect(result.lockPath).toBe(lockPath)
  expect(result.fdsAfter).toEqual(result.fdsBefore)
}

const dirMessage = (dir) => `failed to prepare gateway lock directory at ${dir}`
const lockMessage = (lockPath) => `failed to acquire gateway lock at ${lockPath}`

describe('a lock dir fault leaves no file or descriptor, and a retry succeeds', () => {
  test('rejects with EACCES naming LOCK when uid 65534 cannot write the dir', async (ctx) => {
    ctx.skip(!canRunAsNobody(), 'needs root and setpriv to run the contender as uid 65534')
    const sandbox = makeFaultSandbox()
    const lockDir = path.join(sandbox.root, 'locks')
    const lockPath = path.join(lockDir, sandbox.lockName)
    fs.mkdirSync(lockDir)
    chown(sandbox.root, NOBODY)
    fs.chmodSync(lockDir, 0o500)

    const run = await meetFault(sandbox, { lockDir, list: [lockDir], wrap: AS_NOBODY })

    expect(run.fault.uid).toBe(NOBODY)
    expectFault(run.fault, lockMessage(lockPath), 'EACCES')
    expect(run.fault.listing).toEqual({ [lockDir]: [] })
    expect(fs.readdirSync(lockDir)).toEqual([])

    fs.chmodSync(lockDir, 0o700)
    const retried = await run.retry()
    expectRetryTook(retried, lockPath)
    expect(retried.listing).toEqual({ [lockDir]: [sandbox.lockName] })
    expect(fs.readdirSync(lockDir)).toEqual([])
  })

  test('rejects with EROFS naming LOCK on a read-only mount', async (ctx) => {
    const sandbox = makeFaultSandbox()
    ctx.skip(!canMountTmpfs(sandbox), 'needs root to mount a tmpfs in a private mount namespace')
    const lockDir = path.join(sandbox.tmp, 'openclaw-0')
    const lockPath = path.join(lockDir, sandbox.lockName)
    const setup =
      'mount -t tmpfs none "$TMPDIR" && mkdir -m 0700 "$TMPDIR/openclaw-0" && ' +
      'mount -o remount,ro "$TMPDIR" && exec "$0" "$@"'
    const wrap = [...PRIVATE_MOUNTS, 'sh', '-c', setup]

    const run = await meetFault(sandbox, { lockDir, list: [lockDir], wrap })

    expectFault(run.fault, lockMessage(lockPath), 'EROFS')
    expect(run.fault.listing).toEqual({ [lockDir]: [] })

    inNamespaceOf(run.proc.pid, ['mount', '-o', 'remount,rw', sandbox.tmp])
    const retried = await run.retry()
    expectRetryTook(retried, lockPath)
    expect(retried.listing).toEqual({ [lockDir]: [sandbox.lockName] })
  })

  test('rejects with ENOSPC naming LOCK or its dir on a full file system', async (ctx) => {
    const sandbox = makeFaultSandbox()
    ctx.skip(!canMountTmpfs(sandbox), 'needs root to mount a tmpfs in a private mount namespace')
    const lockDir = path.join(sandbox.tmp, 'openclaw-0')
    const lockPath = path.join(lockDir, sandbox.lockName)
    const filler = path.join(sandbox.tmp, 'filler')
    // dd stops with ENOSPC once the 8 KiB tmpfs is full, which is the point.
    const setup =
      'mount -t tmpfs -o size=8k none "$TMPDIR" && mkdir -m 0700 "$TMPDIR/openclaw-0" && ' +
      '{ dd if=/dev/zero of="$TMPDIR/filler" bs=1024 count=64 2>/dev/null; true; } && ' +
      'exec "$0" "$@"'
    const wrap = [...PRIVATE_MOUNTS, 'sh', '-c', setup]

    const run = await meetFault(sandbox, { lockDir, list: [lockDir, sandbox.tmp], wrap })

    expectFault(run.fault, [lockMessage(lockPath), dirMessage(lockDir)], 'ENOSPC')
    expect(run.fault.listing).toEqual({ [lockDir]: [], [sandbox.tmp]: ['filler', 'openclaw-0'] })

    inNamespaceOf(run.proc.pid, ['rm', filler])
    const retried = await run.retry()
    expectRetryTook(retried, lockPath)
    expect(retried.listing[lockDir]).toEqual([sandbox.lockName])
  })

  test('rejects with ENOTDIR naming a lockDir that is a regular file', async () => {
    const sandbox = makeFaultSandbox()
    const lockDir = path.join(sandbox.root, 'locks')
    const lockPath = path.join(lockDir, sandbox.lockName)
    fs.writeFileSync(lockDir, 'not a directory\n')

    const run = await meetFault(sandbox, { lockDir, list: [sandbox.root] })

    expectFault(run.fault, dirMessage(lockDir), 'ENOTDIR')
    expect(fs.readFileSync(lockDir, 'utf8')).toBe('not a directory\n')
    expect(run.fault.listing[sandbox.root].filter((name) => name.includes('gateway'))).toEqual([])

    fs.rmSync(lockDir)
    const retried = await run.retry()
    expectRetryTook(retried, lockPath)
    expect(fs.readdirSync(lockDir)).toEqual([])
  })

  test('rejects a symlinked lockDir with EACCES and creates nothing at its target', async () => {
    const sandbox = makeFaultSandbox()
    const lockDir = path.join(sandbox.root, 'locks')
    const lockPath = path.join(lockDir, sandbox.lockName)
    const elsewhere = path.join(sandbox.root, 'elsewhere')
    fs.mkdirSync(elsewhere, { mode: 0o700 })
    fs.symlinkSync(elsewhere, lockDir)

    const run = await meetFault(sandbox, { lockDir, list: [elsewhere] })

    expectFault(run.fault, dirMessage(lockDir), 'EACCES')
    expect(run.fault.listing).toEqual({ [elsewhere]: [] })
    expect(fs.lstatSync(lockDir).isSymbolicLink()).toBe(true)

    fs.rmSync(lockDir)
    const retried = await run.retry()
    expectRetryTook(retried, lockPath)
    expect(fs.lstatSync(lockDir).isDirectory()).toBe(true)
    expect(retried.listing).toEqual({ [elsewhere]: [] })
  })

  test('rejects with EACCES naming a lockDir owned by another user', async (ctx) => {
    ctx.skip(!isRoot(), 'needs root to give the lock dir to uid 65534')
    const sandbox = makeFaultSandbox()
    const lockDir = path.join(sandbox.root, 'locks')
    const lockPath = path.join(lockDir, sandbox.lockName)
    fs.mkdirSync(lockDir)
    fs.chmodSync(lockDir, 0o700)
    fs.chownSync(lockDir, NOBODY, NOBODY)

    const run = await meetFault(sandbox, { lockDir, list: [lockDir] })

    expectFault(run.fault, dirMessage(lockDir), 'EACCES')
    expect(run.fault.listing).toEqual({ [lockDir]: [] })
    const stat = fs.lstatSync(lockDir)
    expect({ uid: stat.uid, mode: stat.mode & 0o7777 }).toEqual({ uid: NOBODY, mode: 0o700 })

    fs.chownSync(lockDir, process.getuid(), process.getgid())
    const retried = await run.retry()
    expectRetryTook(retried, lockPath)
    expect(retried.listing).toEqual({ [lockDir]: [sandbox.lockName] })
  })
})

// 2. Options of every wrong type and range (SPEC 2.2).

const RESOLVED_ROWS = [
  ['timeoutMs null', { timeoutMs: null }, {}],
  ['timeoutMs NaN', { timeoutMs: NaN }, {}],
  ['timeoutMs Infinity', { timeoutMs: Infinity }, {}],
  ['timeoutMs -Infinity', { timeoutMs: -Infinity }, {}],
  ['timeoutMs -5', { timeoutMs: -5 }, { timeoutMs: 0 }],
  ['timeoutMs 1500.9', { timeoutMs: 1500.9 }, { timeoutMs: 1500 }],
  ['timeoutMs 3e9', { timeoutMs: 3e9 }, { timeoutMs: MAX_TIMER_MS }],
  ['pollIntervalMs 0', { pollIntervalMs: 0 }, { pollIntervalMs: 1 }],
  ['pollIntervalMs -3', { pollIntervalMs: -3 }, { pollIntervalMs: 1 }],
  ['pollIntervalMs 0.5', { pollIntervalMs: 0.5 }, { pollIntervalMs: 1 }],
  ['pollIntervalMs 2.7', { pollIntervalMs: 2.7 }, { pollIntervalMs: 2 }],
  ['pollIntervalMs NaN', { pollIntervalMs: NaN }, {}],
  ['pollIntervalMs 3e9', { pollIntervalMs: 3e9 }, { pollIntervalMs: MAX_TIMER_MS }],
  ['staleMs -1', { staleMs: -1 }, { staleMs: 0 }],
  ['staleMs 99.9', { staleMs: 99.9 }, { staleMs: 99 }],
  ['staleMs Infinity', { staleMs: Infinity }, {}],
  ['staleMs 1e12', { staleMs: 1e12 }, { staleMs: MAX_TIMER_MS }],
  ['staleMs 2147000000.5', { staleMs: 2147000000.5 }, { staleMs: MAX_TIMER_MS }],
]

for (const [label, option, effective] of RESOLVED_ROWS) {
  test(`reads ${label} as the effective values SPEC 2.2 gives it`, async () => {
    const sandbox = makeSandbox()

    const outcome = await acquireHere(sandbox, option)

    expect(outcome.ok, String(outcome.error?.stack)).toBe(true)
    const [start] = eventsNamed(outcome.events, 'acquire-start')
    const { timeoutMs, pollIntervalMs, staleMs } = start
    expect({ timeoutMs, pollIntervalMs, staleMs }).toEqual({ ...DEFAULTS, ...effective })
  })
}

const REJECTED_ROWS = [
  ['timeoutMs', '100', TypeError],
  ['timeoutMs', true, TypeError],
  ['timeoutMs', 10n, TypeError],
  ['pollIntervalMs', '5', TypeError],
  ['pollIntervalMs', {}, TypeError],
  ['staleMs', '30000', TypeError],
  ['staleMs', [1], TypeError],
  ['port', 0, 'EINVAL'],
  ['port', -1, 'EINVAL'],
  ['port', 1.5, 'EINVAL'],
  ['port', 65536, 'EINVAL'],
  ['port', NaN, 'EINVAL'],
  ['port', Infinity, 'EINVAL'],
  ['port', '18789', 'EINVAL'],
  ['env', 'OPENCLAW_CONFIG_PATH=/x', TypeError],
  ['env', 5, TypeError],
  ['env', true, TypeError],
  ['env', { PORT: 5 }, TypeError],
  ['env', { OPENCLAW_HOME: {} }, TypeError],
  ['lockDir', '', TypeError],
  ['lockDir', 5, TypeError],
  ['lockDir', {}, TypeError],
  ['onTelemetry', 'log', TypeError],
  ['onTelemetry', 5, TypeError],
  ['onTelemetry', {}, TypeError],
  ['platform', 5, TypeError],
  ['platform', {}, TypeError],
  ['now', () => 0, 'EINVAL'],
  ['sleep', async () => {}, 'EINVAL'],
  ['readProcessCmdline', () => [], 'EINVAL'],
  ['readProcessStartTime', () => 1, 'EINVAL'],
  ['role', 'gateway', 'EINVAL'],
]

function describeValue(value) {
  if (typeof value === 'function') return 'a function'
  if (typeof value === 'bigint') return `${value}n`
  if (typeof value === 'number') return String(value)
  return JSON.stringify(value)
}

/** Calls without awaiting, inside a try, so a synchronous throw cannot hide in a rejection. */
async function settleWithoutAwait(call) {
  let pending
  let thrown
  try {
    pending = call()
  } catch (err) {
    thrown = err
  }
  expect(thrown, 'a synchronous throw escaped').toBeUndefined()
  expect(pending).toBeInstanceOf(Promise)
  return pending.then(
    (value) => ({ ok: true, value }),
    (error) => ({ ok: false, error }),
  )
}

function expectRejection(outcome, name, expected) {
  expect(outcome.ok, `resolved ${String(outcome.value)}`).toBe(false)
  if (expected === TypeError) {
    expect(outcome.error).toBeInstanceOf(TypeError)
    expect(outcome.error).not.toBeInstanceOf(gatelock.GatewayLockError)
    return
  }
  expect(outcome.error).toBeInstanceOf(gatelock.GatewayLockError)
  expect(outcome.error.code).toBe(expected)
  expect(outcome.error.message).toMatch(new RegExp(`^invalid gateway lock option ${name}: .+`))
}

for (const [name, value, expected] of REJECTED_ROWS) {
  const kind = expected === TypeError ? 'TypeError' : 'GatewayLockError EINVAL'
  test(`rejects ${name} ${describeValue(value)} as a ${kind}, never by a sync throw`, async () => {
    const sandbox = makeSandbox()
    const options = { ...optionsFor(sandbox), [name]: value }

    const outcome = await settleWithoutAwait(() => gatelock.acquireGatewayLock(options))

    expectRejection(outcome, name, expected)
    // Options are checked before the directory is made.
    expect(fs.readdirSync(sandbox.tmp)).toEqual([])
  })
}

for (const port of [0, 70000, 1.5]) {
  test(`rejects the positional port ${port} with EINVAL, never by a sync throw`, async () => {
    const sandbox = makeSandbox()

    const outcome = await settleWithoutAwait(() =>
      gatelock.acquireGatewayLock(port, optionsFor(sandbox)),
    )

    expectRejection(outcome, 'port', 'EINVAL')
    expect(fs.readdirSync(sandbox.tmp)).toEqual([])
  })
}

test('inspect and readActiveGatewayLockPort reject bad options, never throw', async () => {
  const sandbox = makeSandbox()
  const calls = [
    ['lockDir', () => gatelock.inspectGatewayLock(optionsFor(sandbox, { lockDir: '' })), TypeError],
    ['env', () => gatelock.inspectGatewayLock(optionsFor(sandbox, { env: 5 })), TypeError],
    ['port', () => gatelock.inspectGatewayLock(optionsFor(sandbox, { port: 0 })), 'EINVAL'],
    ['lockDir', () => gatelock.readActiveGatewayLockPort({ lockDir: 5 }), TypeError],
    ['platform', () => gatelock.readActiveGatewayLockPort({ platform: 1 }), TypeError],
  ]

  for (const [name, call, expected] of calls) {
    expectRejection(await settleWithoutAwait(call), name, expected)
  }
})

for (const [label, port] of [
  ['null', null],
  ['undefined', undefined],
]) {
  test(`takes the lock with port ${label} and records no port`, async () => {
    const sandbox = makeSandbox()

    const outcome = await acquireHere(sandbox, { port })

    expect(outcome.ok, String(outcome.error?.stack)).toBe(true)
    expect(readLock(outcome.handle.lockPath).payload).not.toHaveProperty('port')
  })
}

for (const name of ['now', 'sleep', 'readProcessCmdline', 'readProcessStartTime', 'role']) {
  test(`reads ${name}: null as absent, like the TypeScript ??`, async () => {
    const sandbox = makeSandbox()

    const outcome = await acquireHere(sandbox, { [name]: null })

    expect(outcome.ok, String(outcome.error?.stack)).toBe(true)
  })
}

test('timeoutMs 0 makes one attempt that takes a free lock', async () => {
  const sandbox = makeSandbox()

  const outcome = await acquireHere(sandbox, { timeoutMs: 0 })

  expect(outcome.ok, String(outcome.error?.stack)).toBe(true)
  expect(eventsNamed(outcome.events, 'acquire-start')[0].timeoutMs).toBe(0)
  expect(eventsNamed(outcome.events, 'acquire-success')[0].attempts).toBe(1)
  expect(readLock(lockPathFor(sandbox)).payload.pid).toBe(process.pid)
})

test("timeoutMs 0 makes one attempt that rejects at once on a live owner's lock", async () => {
  const sandbox = makeSandbox()
  const owner = await startOwner(sandbox)
  const before = fs.readFileSync(lockPathFor(sandbox), 'utf8')

  const outcome = await acquireHere(sandbox, { timeoutMs: 0 })

  expectLockedOut(outcome, owner.pid, 0)
  expect(outcome.ms).toBeLessThanOrEqual(AT_ONCE_MS)
  expect(eventsNamed(outcome.events, 'acquire-timeout')[0].attempts).toBe(1)
  expect(fs.readFileSync(lockPathFor(sandbox), 'utf8')).toBe(before)
})

// 3. A panic inside the addon.

const PANIC_SOURCE = `
const fs = require('node:fs')
const gatelock = require(process.env.GATELOCK_ENTRY)
const { acquireGatewayLock, GatewayLockError } = gatelock

async function main() {
  let pending
  try {
    pending = gatelock[Symbol.for('gatelock.panicForTest')]()
  } catch (err) {
    console.log('THROWN ' + err.message)
    return
  }
  console.log('PROMISE ' + (pending instanceof Promise))
  await pending.then(
    () => console.log('RESOLVED'),
    (err) => console.log('REJECTED ' + (err instanceof GatewayLockError) + ' ' + err.code),
  )
  const handle = await acquireGatewayLock({ allowInTests: true, timeoutMs: 2000 })
  console.log('ACQUIRED ' + fs.readFileSync(handle.lockPath, 'utf8'))
  await handle.release()
  console.log('RELEASED ' + fs.existsSync(handle.lockPath))
}

main()
`

test('turns an addon panic into a rejected promise; the process lives on', async () => {
  const sandbox = makeSandbox()

  const run = await runNode(PANIC_SOURCE, { module: false, env: sandbox.childEnv() })

  expect({ code: run.code, signal: run.signal }, run.stderr).toEqual({ code: 0, signal: null })
  const lines = run.stdout.trim().split('\n')
  expect(lines[0]).toBe('PROMISE true')
  expect(lines[1]).toBe('REJECTED true EINTERNAL')
  expect(lines[2]).toMatch(/^ACQUIRED /)
  expect(JSON.parse(lines[2].slice('ACQUIRED '.length)).pid).toBeGreaterThan(0)
  expect(lines.slice(3)).toEqual(['RELEASED false'])
})

// 4. Clocks that lie.

function ownerlessPayload(sandbox, createdAt) {
  return { pid: 0, createdAt, configPath: sandbox.cfg }
}

test('reclaims at once an ownerless lock stamped more than staleMs in the future', async () => {
  const sandbox = makeSandbox()
  const lockPath = lockPathFor(sandbox)
  writeLock(lockPath, ownerlessPayload(sandbox, isoAgo(-HOUR_MS)))

  const outcome = await acquireHere(sandbox, { timeoutMs: 3000 })

  expectTookAtOnce(outcome, lockPath)
  const [recovered] = eventsNamed(outcome.events, 'stale-lock-recovered')
  expect(recovered).toMatchObject({ reason: 'stale-unknown-owner' })
})

test('keeps an ownerless lock stamped less than staleMs ahead until the deadline', async () => {
  const sandbox = makeSandbox()
  const lockPath = lockPathFor(sandbox)
  const bytes = writeLock(lockPath, ownerlessPayload(sandbox, isoAgo(-10_000)))

  const outcome = await acquireHere(sandbox, { timeoutMs: 1000 })

  expectLockedOut(outcome, '0', 1000)
  expect(outcome.ms).toBeGreaterThanOrEqual(1000)
  expect(fs.readFileSync(lockPath, 'utf8')).toBe(bytes)
})

test("keeps a live gateway's lock stamped an hour ahead: the pid decides", async () => {
  const sandbox = makeSandbox()
  const lockPath = lockPathFor(sandbox)
  const owner = await startOwner(sandbox, ['--no-lock'])
  const payload = { pid: owner.pid, createdAt: isoAgo(-HOUR_MS), configPath: sandbox.cfg }
  const bytes = writeLock(lockPath, payload)

  const outcome = await acquireHere(sandbox, { staleMs: 1000, timeoutMs: 1500 })

  expectLockedOut(outcome, owner.pid, 1500)
  expect(outcome.ms).toBeGreaterThanOrEqual(1500)
  expect(outcome.ms).toBeLessThanOrEqual(2100)
  expect(fs.readFileSync(lockPath, 'utf8')).toBe(bytes)
  expect(pidExists(owner.pid)).toBe(true)
})

for (const [label, bytes] of [
  ['an empty', ''],
  ['a torn', '{"pid":'],
]) {
  test(`reclaims at once ${label} lock file whose mtime is an hour in the future`, async () => {
    const sandbox = makeSandbox()
    const lockPath = lockPathFor(sandbox)
    writeLock(lockPath, bytes)

    // Control: fresh, the same file may be mid-write and is kept.
    const fresh = await acquireHere(sandbox, { timeoutMs: 800 })
    expectLockedOut(fresh, null, 800)
    expect(fs.readFileSync(lockPath, 'utf8')).toBe(bytes)

    const future = new Date(Date.now() + HOUR_MS)
    fs.utimesSync(lockPath, future, future)
    const outcome = await acquireHere(sandbox, { timeoutMs: 3000 })

    expectTookAtOnce(outcome, lockPath)
    const [recovered] = eventsNamed(outcome.events, 'stale-lock-recovered')
    expect(recovered).toMatchObject({ reason: 'stale-unknown-owner' })
  })
}

for (const [direction, jumpMs] of [
  ['forward', HOUR_MS],
  ['back', -HOUR_MS],
]) {
  test(`times out after timeoutMs of real time when Date jumps an hour ${direction}`, async () => {
    const sandbox = makeSandbox()
    const owner = await startOwner(sandbox)
    vi.useFakeTimers({ toFake: ['Date'] })

    const pending = acquireHere(sandbox, { timeoutMs: 2000, pollIntervalMs: 100 })
    await sleep(500)
    vi.setSystemTime(Date.now() + jumpMs)
    const outcome = await pending

    expectLockedOut(outcome, owner.pid, 2000)
    expect(outcome.ms).toBeGreaterThanOrEqual(2000)
    expect(outcome.ms).toBeLessThanOrEqual(2600)
    const [timeout] = eventsNamed(outcome.events, 'acquire-timeout')
    expect(timeout.waitedMs).toBeGreaterThanOrEqual(2000)
    expect(timeout.waitedMs).toBeLessThanOrEqual(2600)
  })
}

test('stamps createdAt from the real clock while the JS Date is an hour ahead', async () => {
  const sandbox = makeSandbox()
  vi.useFakeTimers({ toFake: ['Date'] })
  vi.setSystemTime(Date.now() + HOUR_MS)

  const outcome = await acquireHere(sandbox)

  expect(outcome.ok, String(outcome.error?.stack)).toBe(true)
  const createdAt = Date.parse(readLock(outcome.handle.lockPath).payload.createdAt)
  vi.useRealTimers()
  expect(Math.abs(createdAt - Date.now())).toBeLessThan(60_000)
})

// 5. Gateways that end without release().

const ENDING_OWNER_SOURCE = `
const { spawn } = require('node:child_process')
const { acquireGatewayLock } = require(process.env.GATELOCK_ENTRY)
const ending = process.argv[1]

acquireGatewayLock({ allowInTests: true, timeoutMs: 3000 }).then(
  (handle) => {
    console.log('ACQUIRED ' + handle.lockPath)
    if (ending === 'exit') process.exit(0)
    if (ending === 'throw') setTimeout(() => { throw new Error('deliberate uncaught') }, 20)
    if (ending === 'child') {
      const child = spawn(process.execPath, ['-e', 'setInterval(() => {}, 1000)'], {
        stdio: 'ignore',
      })
      console.log('CHILD ' + child.pid)
      setInterval(() => {}, 1 << 30)
    }
  },
  (err) => {
    console.log('ERROR ' + err.message)
    process.exit(3)
  },
)
`

function startEndingOwner(sandbox, ending) {
  const args = ['-e', ENDING_OWNER_SOURCE, ending]
  return spawnTracked(process.execPath, args, { env: sandbox.childEnv() })
}

function expectReclaimedFrom(outcome, ownerPid) {
  const [recovered] = eventsNamed(outcome.events, 'stale-lock-recovered')
  expect(recovered).toMatchObject({ ownerPid, reason: 'owner-dead' })
}

// The inode numbers of the lock: lines in a process's fdinfo ("... MAJ:MIN:INODE ...").
function lockedInodes(pid) {
  return fdLocks(pid).map((line) => line.match(/ [0-9a-f]+:[0-9a-f]+:(\d+) /)?.[1])
}

test('takes at once the lock of a gateway that ended by process.exit(0)', async () => {
  const sandbox = makeSandbox()
  const lockPath = lockPathFor(sandbox)
  const owner = startEndingOwner(sandbox, 'exit')
  expect(await owner.firstLine).toBe(`ACQUIRED ${lockPath}`)
  expect(await owner.waitExit()).toEqual({ code: 0, signal: null })
  expect(readLock(lockPath).payload.pid).toBe(owner.pid)

  const outcome = await acquireHere(sandbox, { timeoutMs: 3000 })

  expectTookAtOnce(outcome, lockPath)
  expectReclaimedFrom(outcome, owner.pid)
})

test('takes at once the lock of a gateway that died of an uncaught exception', async () => {
  const sandbox = makeSandbox()
  const lockPath = lockPathFor(sandbox)
  const owner = startEndingOwner(sandbox, 'throw')
  expect(await owner.firstLine).toBe(`ACQUIRED ${lockPath}`)
  expect(await owner.waitExit()).toEqual({ code: 1, signal: null })
  expect(owner.stderr).toContain('deliberate uncaught')
  expect(readLock(lockPath).payload.pid).toBe(owner.pid)

  const outcome = await acquireHere(sandbox, { timeoutMs: 3000 })

  expectTookAtOnce(outcome, lockPath)
  expectReclaimedFrom(outcome, owner.pid)
})

test("a kill -9ed gateway's child holds no lock; the next start takes it at once", async () => {
  const sandbox = makeSandbox()
  const lockPath = lockPathFor(sandbox)
  const owner = startEndingOwner(sandbox, 'child')
  expect(await owner.firstLine).toBe(`ACQUIRED ${lockPath}`)
  const childPid = Number((await owner.waitForLine(/^CHILD /)).split(' ')[1])
  strayProcesses.set(childPid, startTimeOf(childPid))
  const lockInode = String(inodeOf(lockPath))
  const dirInode = String(inodeOf(sandbox.lockDir))

  // Control: the owner's fdinfo shows its locks, so the same check would see them in the child.
  expect(lockedInodes(owner.pid)).toEqual(expect.arrayContaining([lockInode, dirInode]))
  expect(lockedInodes(childPid)).not.toContain(lockInode)
  expect(lockedInodes(childPid)).not.toContain(dirInode)
  owner.kill('SIGKILL')
  expect(await owner.waitExit()).toEqual({ code: null, signal: 'SIGKILL' })
  expect(lockedInodes(childPid)).not.toContain(lockInode)
  expect(readLock(lockPath).payload.pid).toBe(owner.pid)

  const outcome = await acquireHere(sandbox, { timeoutMs: 3000 })

  expectTookAtOnce(outcome, lockPath)
  expectReclaimedFrom(outcome, owner.pid)
  expect(pidExists(childPid)).toBe(true)
  expect(startTimeOf(childPid)).toBe(strayProcesses.get(childPid))
})
