// Field failures B9, B11, B12, B14 and B16 (cases/field-failures.md): port probes that must not
// outrank a live owner, an owner whose /proc cannot be read, lock directories that cannot be
// written, and a shared /tmp with planted links and loose or foreign directories. Each scenario
// runs against gatelock; where the TypeScript algorithm gets it wrong, a test next to it shows
// the fault with the oracle in the same setup.

import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { afterEach, expect, test } from 'vitest'

import {
  cleanupAll,
  freePort,
  freePorts,
  inodeOf,
  isoAgo,
  makeSandbox,
  pidExists,
  readLock,
  realNow,
  sleep,
  spawnGateway,
  spawnTracked,
  writeLock,
} from './support/harness.mjs'
import { oracleAcquire } from './support/oracle.mjs'

const NOBODY = 65534
const RESULT_WAIT_MS = 15000
const SELF_CHECK_CONNECT_MS = 1500
const KEPT_CONNECTIONS = 4

const openSockets = new Set()
const oracleHandles = new Set()

afterEach(async () => {
  for (const handle of oracleHandles) await handle.release().catch(() => {})
  oracleHandles.clear()
  for (const socket of openSockets) socket.destroy()
  openSockets.clear()
  await cleanupAll()
})

// The contender: an ES module that takes one acquire as GATELOCK_CONTENDER describes, prints one
// line `RESULT <json>`, then exits, or with spec.hold keeps its handle until SIGTERM. Kept as
// text because Vitest rewrites the source of functions in this file.
const CONTENDER_SOURCE = String.raw`
import fs from 'node:fs'
import { createRequire } from 'node:module'
import path from 'node:path'
import { pathToFileURL } from 'node:url'

const spec = JSON.parse(process.env.GATELOCK_CONTENDER)

function listTree(dir) {
  const found = []
  const walk = (relative) => {
    for (const entry of fs.readdirSync(path.join(dir, relative), { withFileTypes: true })) {
      const name = path.join(relative, entry.name)
      found.push(name)
      if (entry.isDirectory()) walk(name)
    }
  }
  try {
    walk('')
  } catch (err) {
    return 'error ' + err.code
  }
  return found.sort()
}

if (spec.umask !== undefined) process.umask(spec.umask)
const checks = {}
if (spec.ownerPid !== undefined) {
  try {
    process.kill(spec.ownerPid, 0)
    checks.signal = 'ok'
  } catch (err) {
    checks.signal = err.code
  }
  checks.procStat = fs.existsSync('/proc/' + spec.ownerPid + '/stat')
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

const result = { pid: process.pid, uid: process.getuid(), checks }
let handle = null
const started = performance.now()
try {
  handle = await acquire({ allowInTests: true, ...spec.options })
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
if (spec.list) result.listing = Object.fromEntries(spec.list.map((dir) => [dir, listTree(dir)]))
if (handle && spec.release) await handle.release()
process.stdout.write('RESULT ' + JSON.stringify(result) + '\n')
if (handle && spec.hold) {
  setInterval(() => {}, 1 << 30)
  process.once('SIGTERM', async () => {
    await handle.release()
    process.exit(0)
  })
} else {
  process.exit(0)
}
`

function makeProbeSandbox() {
  const sandbox = makeSandbox()
  sandbox.contender = path.join(sandbox.root, 'contender.mjs')
  fs.writeFileSync(sandbox.contender, CONTENDER_SOURCE)
  return sandbox
}

async function contend(sandbox, spec, { wrap = [], env } = {}) {
  const [command, ...args] = [...wrap, process.execPath, sandbox.contender]
  const proc = spawnTracked(command, args, {
    env: sandbox.childEnv({ ...env, GATELOCK_CONTENDER: JSON.stringify(spec) }),
    cwd: sandbox.root,
  })
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

async function oracleContend(sandbox, options) {
  const started = realNow()
  try {
    const handle = await oracleAcquire({
      env: { OPENCLAW_CONFIG_PATH: sandbox.cfg, HOME: sandbox.home },
      lockDir: sandbox.lockDir,
      allowInTests: true,
      ...options,
    })
    oracleHandles.add(handle)
    return { ok: true, ms: realNow() - started, handle }
  } catch (error) {
    return { ok: false, ms: realNow() - started, error }
  }
}

async function startOwner(sandbox, flags, entry = 'gatelock') {
  const owner = spawnGateway(sandbox, flags, { entry })
  const first = flags.includes('--no-lock') ? 'IDLE' : 'ACQUIRED'
  expect(await owner.firstLine).toBe(`${first} ${owner.pid}`)
  return owner
}

function expectAlive(owner) {
  expect(owner.exitInfo).toBe(null)
  expect(pidExists(owner.pid)).toBe(true)
}

function snapshot(lockPath) {
  return { inode: inodeOf(lockPath), bytes: fs.readFileSync(lockPath, 'utf8') }
}

function fileState(file) {
  const stat = fs.statSync(file, { bigint: true })
  return { text: fs.readFileSync(file, 'utf8'), size: stat.size, mtimeNs: stat.mtimeNs }
}

function modeOf(entry) {
  return fs.lstatSync(entry).mode & 0o7777
}

function expectLockedOut(result, ownerPid, timeoutMs) {
  expect(result.ok, JSON.stringify(result)).toBe(false)
  expect(result.error).toMatchObject({
    name: 'GatewayLockError',
    message: `gateway already running (pid ${ownerPid}); lock timeout after ${timeoutMs}ms`,
    code: 'ELOCKED',
  })
}

function expectBetween(ms, low, high) {
  expect(ms).toBeGreaterThanOrEqual(low)
  expect(ms).toBeLessThanOrEqual(high)
}

function expectFsError(result, named, osCode) {
  expect(result.ok, JSON.stringify(result)).toBe(false)
  expect(result.error.name).toBe('GatewayLockError')
  expect(result.error.isGatewayLockError).toBe(true)
  expect(result.error.message).toContain(named)
  const visible = result.error.message.includes(osCode) || result.error.causeCode === osCode
  expect(visible, JSON.stringify(result.error)).toBe(true)
}

// LOCK starts with the dir's path, so a message that names only LOCK must not pass.
function expectNamesDir(message, dir) {
  const escaped = dir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
  expect(message).toMatch(new RegExp(`${escaped}(?!/)`))
}

const PRIVATE_MOUNTS = ['unshare', '-m', '--propagation', 'private']
const HIDE_PROC = [...PRIVATE_MOUNTS, 'sh', '-c', 'mount -t tmpfs none /proc && exec "$0" "$@"']
const AS_NOBODY = ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups']

function succeeds(command, args) {
  return spawnSync(command, args, { stdio: 'ignore', timeout: 10000 }).status === 0
}

function isRoot() {
  return process.getuid() === 0
}

const capabilities = new Map()

function capable(name, probe) {
  if (!capabilities.has(name)) capabilities.set(name, probe())
  return capabilities.get(name)
}

function canHideProc() {
  const [command, ...args] = PRIVATE_MOUNTS
  const mount = ['sh', '-c', 'mount -t tmpfs none /proc']
  return capable('hide-proc', () => isRoot() && succeeds(command, [...args, ...mount]))
}

function hasPython() {
  return capable('python3', () => succeeds('python3', ['-c', '']))
}

// Root ignores mode bits, so a root runner drops to 65534 for the mode scenarios.
function unprivileged() {
  if (!isRoot()) return { wrap: [], uid: process.getuid() }
  const [command, ...args] = AS_NOBODY
  const works = capable('setpriv', () => succeeds(command, [...args, 'true']))
  return works ? { wrap: AS_NOBODY, uid: NOBODY } : null
}

function giveTo(dir, uid) {
  if (!isRoot()) return
  const run = spawnSync('chown', ['-R', `${uid}:${uid}`, dir], { encoding: 'utf8' })
  if (run.status !== 0) throw new Error(`chown -R ${uid} ${dir} failed: ${run.stderr}`)
}

const SILENT_LISTENER = [
  'import socket, sys, time',
  'server = socket.socket()',
  "server.bind(('127.0.0.1', int(sys.argv[1])))",
  'server.listen(0)',
  "print('LISTENING', flush=True)",
  'time.sleep(300)',
].join('\n')

function keepConnecting(port) {
  const socket = net.connect({ host: '127.0.0.1', port })
  socket.on('error', () => {})
  openSockets.add(socket)
  return socket
}

// B11 steps 2-3: with listen(0), never accepting, and kept connections, the full accept
// queue makes the kernel drop further SYNs.
async function jamAcceptQueue(ctx, port) {
  const helper = spawnTracked('python3', ['-c', SILENT_LISTENER, String(port)])
  await helper.waitForLine('LISTENING')
  for (let i = 0; i < KEPT_CONNECTIONS; i += 1) keepConnecting(port)
  const fifth = keepConnecting(port)
  const connected = new Promise((resolve) => fifth.once('connect', () => resolve(true)))
  const timedOut = sleep(SELF_CHECK_CONNECT_MS).then(() => false)
  const completed = await Promise.race([connected, timedOut])
  fifth.destroy()
  ctx.skip(completed, 'a 5th connect to the full accept queue completed: SYNs are not dropped')
  return helper
}

// B9: a free port must not outrank a live owner's identity.

test("B9a: keeps a live owner's lock while its port is not yet listening", async () => {
  const sandbox = makeProbeSandbox()
  const lockPath = await discoverLock(sandbox)
  const port = await freePort()
  const owner = await startOwner(sandbox, ['--port', port])
  const before = snapshot(lockPath)

  const { result } = await contend(sandbox, { options: { port, timeoutMs: 2000 } })

  expectLockedOut(result, owner.pid, 2000)
  expectBetween(result.ms, 2000, 2600)
  expect(snapshot(lockPath)).toEqual(before)
  expectAlive(owner)
})

test("B9a (TypeScript algorithm): a free port deletes a live owner's lock", async () => {
  const sandbox = makeProbeSandbox()
  const lockPath = await discoverLock(sandbox)
  const port = await freePort()
  const owner = await startOwner(sandbox, ['--port', port], 'oracle')
  const before = snapshot(lockPath)

  const result = await oracleContend(sandbox, { port, timeoutMs: 1000 })

  expect(result.ok).toBe(true)
  expect(result.ms).toBeLessThan(1000)
  expect(snapshot(lockPath)).not.toEqual(before)
  expect(readLock(lockPath).payload.pid).toBe(process.pid)
  expectAlive(owner)
})

test("B9b: keeps a listening owner's lock when the contender asks about another port", async () => {
  const sandbox = makeProbeSandbox()
  const lockPath = await discoverLock(sandbox)
  const [ownerPort, askedPort] = await freePorts(2)
  const owner = await startOwner(sandbox, ['--port', ownerPort, '--listen', '127.0.0.1'])
  const before = snapshot(lockPath)

  const { result } = await contend(sandbox, { options: { port: askedPort, timeoutMs: 2000 } })

  expectLockedOut(result, owner.pid, 2000)
  expectBetween(result.ms, 2000, 2600)
  expect(snapshot(lockPath)).toEqual(before)
  expectAlive(owner)
})

test("B9b (TypeScript algorithm): another free port deletes a listening owner's lock", async () => {
  const sandbox = makeProbeSandbox()
  const lockPath = await discoverLock(sandbox)
  const [ownerPort, askedPort] = await freePorts(2)
  const owner = await startOwner(sandbox, ['--port', ownerPort, '--listen', '127.0.0.1'], 'oracle')
  const before = snapshot(lockPath)

  const result = await oracleContend(sandbox, { port: askedPort, timeoutMs: 1000 })

  expect(result.ok).toBe(true)
  expect(result.ms).toBeLessThan(1000)
  expect(snapshot(lockPath)).not.toEqual(before)
  expect(readLock(lockPath).payload.pid).toBe(process.pid)
  expectAlive(owner)
})

// B9c, B11 variant 5: as a later TypeScript gateway writes it, with no kernel lock behind it.
async function ownerWithoutKernelLock(sandbox, lockPath, port) {
  const owner = await startOwner(sandbox, ['--no-lock'])
  await sleep(1000)
  const payload = { pid: owner.pid, createdAt: isoAgo(0), configPath: sandbox.cfg, port }
  writeLock(lockPath, payload)
  return owner
}

test('B9c: keeps the lock of a live gateway with no kernel lock whose port is free', async () => {
  const sandbox = makeProbeSandbox()
  const lockPath = await discoverLock(sandbox)
  const port = await freePort()
  const owner = await ownerWithoutKernelLock(sandbox, lockPath, port)
  const before = snapshot(lockPath)

  const { result } = await contend(sandbox, { options: { port, timeoutMs: 2000 } })

  expectLockedOut(result, owner.pid, 2000)
  expectBetween(result.ms, 2000, 2600)
  expect(snapshot(lockPath)).toEqual(before)
  expectAlive(owner)
})

test("B9c (TypeScript algorithm): a free port deletes a TypeScript owner's live lock", async () => {
  const sandbox = makeProbeSandbox()
  const lockPath = await discoverLock(sandbox)
  const port = await freePort()
  const owner = await ownerWithoutKernelLock(sandbox, lockPath, port)
  const before = snapshot(lockPath)

  const result = await oracleContend(sandbox, { port, timeoutMs: 1000 })

  expect(result.ok).toBe(true)
  expect(result.ms).toBeLessThan(1000)
  expect(snapshot(lockPath)).not.toEqual(before)
  expect(readLock(lockPath).payload.pid).toBe(process.pid)
  expectAlive(owner)
})

// B11: a port that drops SYNs can neither stall the contender nor count as free.

test("B11: keeps a live owner's lock, and its deadline, when SYNs are dropped", async (ctx) => {
  ctx.skip(!hasPython(), 'needs python3 for the listener that never accepts')
  const sandbox = makeProbeSandbox()
  const lockPath = await discoverLock(sandbox)
  const port = await freePort()
  const owner = await startOwner(sandbox, ['--port', port])
  await jamAcceptQueue(ctx, port)
  const before = snapshot(lockPath)

  const { result } = await contend(sandbox, { options: { port, timeoutMs: 3000 } })

  expectLockedOut(result, owner.pid, 3000)
  expect(result.ms).toBeLessThanOrEqual(4500)
  expect(snapshot(lockPath)).toEqual(before)
  expectAlive(owner)
})

test('B11 (TypeScript algorithm): a probe timeout reads as free, deleting a lock', async (ctx) => {
  ctx.skip(!hasPython(), 'needs python3 for the listener that never accepts')
  const sandbox = makeProbeSandbox()
  const lockPath = await discoverLock(sandbox)
  const port = await freePort()
  const owner = await startOwner(sandbox, ['--port', port], 'oracle')
  await jamAcceptQueue(ctx, port)
  const before = snapshot(lockPath)

  const result = await oracleContend(sandbox, { port, timeoutMs: 3000 })

  expect(result.ok).toBe(true)
  // The oracle's probe gives up after 1 s and takes that for "free".
  expectBetween(result.ms, 950, 2000)
  expect(snapshot(lockPath)).not.toEqual(before)
  expect(readLock(lockPath).payload.pid).toBe(process.pid)
  expectAlive(owner)
})

test('B11 variant 5: an unverifiable owner behind dropped SYNs is not judged dead', async (ctx) => {
  ctx.skip(!hasPython(), 'needs python3 for the listener that never accepts')
  ctx.skip(!canHideProc(), 'needs root to mount a tmpfs over /proc in a private mount namespace')
  const sandbox = makeProbeSandbox()
  const lockPath = await discoverLock(sandbox)
  const port = await freePort()
  await jamAcceptQueue(ctx, port)
  const owner = await ownerWithoutKernelLock(sandbox, lockPath, port)
  const before = snapshot(lockPath)

  const spec = { ownerPid: owner.pid, options: { port, timeoutMs: 3000 } }
  const { result } = await contend(sandbox, spec, { wrap: HIDE_PROC })

  expect(result.checks).toEqual({ signal: 'ok', procStat: false })
  expectLockedOut(result, owner.pid, 3000)
  expect(result.ms).toBeLessThanOrEqual(4500)
  expect(snapshot(lockPath)).toEqual(before)
  expectAlive(owner)
})

// B12: "unknown" never equals "dead", whatever the lock's age.

test("B12: keeps a live owner's lock older than staleMs when /proc cannot be read", async (ctx) => {
  ctx.skip(!canHideProc(), 'needs root to mount a tmpfs over /proc in a private mount namespace')
  const sandbox = makeProbeSandbox()
  const lockPath = await discoverLock(sandbox)
  const port = await freePort()
  const owner = await startOwner(sandbox, ['--port', port, '--listen', '127.0.0.1'])
  await sleep(1500)
  const before = snapshot(lockPath)

  const spec = { ownerPid: owner.pid, options: { port, staleMs: 1000, timeoutMs: 3000 } }
  const { result } = await contend(sandbox, spec, { wrap: HIDE_PROC })

  expect(result.checks).toEqual({ signal: 'ok', procStat: false })
  expectLockedOut(result, owner.pid, 3000)
  expectBetween(result.ms, 3000, 3600)
  expect(snapshot(lockPath)).toEqual(before)
  expectAlive(owner)
})

test("B12 (TypeScript algorithm): ages out an unverifiable live owner's lock", async (ctx) => {
  ctx.skip(!canHideProc(), 'needs root to mount a tmpfs over /proc in a private mount namespace')
  const sandbox = makeProbeSandbox()
  const lockPath = await discoverLock(sandbox)
  const port = await freePort()
  const owner = await startOwner(sandbox, ['--port', port, '--listen', '127.0.0.1'], 'oracle')
  await sleep(1500)
  const before = snapshot(lockPath)

  const options = { port, staleMs: 1000, timeoutMs: 1000 }
  const spec = { entry: 'oracle', ownerPid: owner.pid, options }
  const { result } = await contend(sandbox, spec, { wrap: HIDE_PROC })

  expect(result.checks).toEqual({ signal: 'ok', procStat: false })
  expect(result.ok, JSON.stringify(result)).toBe(true)
  expect(snapshot(lockPath)).not.toEqual(before)
  expect(readLock(lockPath).payload.pid).toBe(result.pid)
  expectAlive(owner)
})

// B14: a directory that refuses us is a prompt, typed error naming the path.

test('B14a: rejects at once, naming the lock dir it cannot create', async (ctx) => {
  const runner = unprivileged()
  ctx.skip(runner === null, 'needs an unprivileged user: setpriv to uid 65534 failed')
  const sandbox = makeProbeSandbox()
  const readOnly = path.join(sandbox.root, 'ro')
  fs.mkdirSync(readOnly)
  giveTo(sandbox.root, runner.uid)
  fs.chmodSync(readOnly, 0o555)

  const env = { TMPDIR: readOnly }
  const spec = { options: { timeoutMs: 5000 } }
  const { result } = await contend(sandbox, spec, { wrap: runner.wrap, env })

  expect(result.uid).toBe(runner.uid)
  expectFsError(result, path.join(readOnly, `openclaw-${runner.uid}`), 'EACCES')
  expectNamesDir(result.error.message, path.join(readOnly, `openclaw-${runner.uid}`))
  expect(result.ms).toBeLessThanOrEqual(500)
  expect(fs.readdirSync(readOnly)).toEqual([])
})

test('B14a (TypeScript algorithm): a mkdir failure escapes as a plain Error', async (ctx) => {
  const runner = unprivileged()
  ctx.skip(runner === null, 'needs an unprivileged user: setpriv to uid 65534 failed')
  const sandbox = makeProbeSandbox()
  const readOnly = path.join(sandbox.root, 'ro')
  fs.mkdirSync(readOnly)
  giveTo(sandbox.root, runner.uid)
  fs.chmodSync(readOnly, 0o555)

  const env = { TMPDIR: readOnly }
  const spec = { entry: 'oracle', options: { timeoutMs: 5000 } }
  const { result } = await contend(sandbox, spec, { wrap: runner.wrap, env })

  expect(result.ok).toBe(false)
  expect(result.error).toMatchObject({ name: 'Error', code: 'EACCES' })
})

test('B14b: rejects at once naming LOCK when the lock dir cannot be written', async (ctx) => {
  const runner = unprivileged()
  ctx.skip(runner === null, 'needs an unprivileged user: setpriv to uid 65534 failed')
  const sandbox = makeProbeSandbox()
  giveTo(sandbox.root, runner.uid)
  const lockPath = await discoverLock(sandbox, { wrap: runner.wrap })
  const lockDir = path.dirname(lockPath)
  fs.mkdirSync(lockDir)
  giveTo(lockDir, runner.uid)
  fs.chmodSync(lockDir, 0o500)

  const spec = { options: { timeoutMs: 5000 } }
  const { result } = await contend(sandbox, spec, { wrap: runner.wrap })

  expect(result.uid).toBe(runner.uid)
  expectFsError(result, lockPath, 'EACCES')
  expect(result.ms).toBeLessThanOrEqual(500)
  expect(fs.readdirSync(lockDir)).toEqual([])
  expect(fs.readdirSync(sandbox.tmp)).toEqual([path.basename(lockDir)])
  expect(modeOf(lockDir)).toBe(0o500)
})

test('B14c: rejects at once naming LOCK with EROFS on a read-only file system', async (ctx) => {
  const namespace = isRoot() ? PRIVATE_MOUNTS : ['unshare', '-Urm', '--propagation', 'private']
  const sandbox = makeProbeSandbox()
  const [command, ...args] = namespace
  const remount = 'mount -t tmpfs none "$0" && mount -o remount,ro "$0"'
  const canRemount = succeeds(command, [...args, 'sh', '-c', remount, sandbox.tmp])
  ctx.skip(!canRemount, 'needs a private mount namespace to mount a read-only tmpfs')
  const lockName = path.basename(await discoverLock(sandbox))
  const lockDirName = 'openclaw-0'
  const lockPath = path.join(sandbox.tmp, lockDirName, lockName)

  const setup =
    'mount -t tmpfs none "$TMPDIR" && mkdir -m 0700 "$TMPDIR/openclaw-$(id -u)" && ' +
    'mount -o remount,ro "$TMPDIR" && exec "$0" "$@"'
  const spec = { options: { timeoutMs: 5000 }, list: [sandbox.tmp] }
  const { result } = await contend(sandbox, spec, { wrap: [...namespace, 'sh', '-c', setup] })

  expect(result.uid).toBe(0)
  expectFsError(result, lockPath, 'EROFS')
  expect(result.ms).toBeLessThanOrEqual(500)
  expect(result.listing).toEqual({ [sandbox.tmp]: [lockDirName] })
})

// B16: a shared /tmp where others can plant links or pre-create the lock dir.

async function plantedLink(sandbox, ageMs) {
  const lockPath = await discoverLock(sandbox)
  fs.mkdirSync(path.dirname(lockPath), { mode: 0o700 })
  fs.chmodSync(path.dirname(lockPath), 0o700)
  const precious = path.join(sandbox.home, 'precious.txt')
  fs.writeFileSync(precious, 'keep-me\n')
  const when = new Date(Date.now() - ageMs)
  fs.utimesSync(precious, when, when)
  fs.symlinkSync(precious, lockPath)
  return { lockPath, precious, before: fileState(precious) }
}

for (const [label, ageMs] of [
  ['an hour old', 3_600_000],
  ['fresh', 0],
]) {
  test(`B16a (target ${label}): replaces a planted LOCK symlink, target untouched`, async () => {
    const sandbox = makeProbeSandbox()
    const { lockPath, precious, before } = await plantedLink(sandbox, ageMs)

    const { result } = await contend(sandbox, { hold: true, options: { timeoutMs: 3000 } })

    expect(result.ok, JSON.stringify(result)).toBe(true)
    expect(result.ms).toBeLessThanOrEqual(1000)
    expect(fileState(precious)).toEqual(before)
    const stat = fs.lstatSync(lockPath)
    expect(stat.isSymbolicLink()).toBe(false)
    expect(stat.isFile()).toBe(true)
    expect(stat.mode & 0o7777).toBe(0o600)
    expect(stat.uid).toBe(result.uid)
    expect(readLock(lockPath).payload.pid).toBe(result.pid)
  })
}

test('B16a (TypeScript algorithm): a symlink to a fresh file blocks until timeout', async () => {
  const sandbox = makeProbeSandbox()
  const { lockPath, precious, before } = await plantedLink(sandbox, 0)

  const result = await oracleContend(sandbox, { timeoutMs: 500 })

  expect(result.ok).toBe(false)
  expect(result.error.message).toBe('gateway already running; lock timeout after 500ms')
  expect(result.ms).toBeGreaterThanOrEqual(500)
  expect(fs.lstatSync(lockPath).isSymbolicLink()).toBe(true)
  expect(fileState(precious)).toEqual(before)
})

async function looseLockDir(sandbox) {
  const lockPath = await discoverLock(sandbox)
  fs.mkdirSync(path.dirname(lockPath))
  fs.chmodSync(path.dirname(lockPath), 0o777)
  return lockPath
}

test('B16b: tightens a 0777 lock dir to 0700 and creates LOCK 0600 under umask 002', async () => {
  const sandbox = makeProbeSandbox()
  const lockPath = await looseLockDir(sandbox)

  const { result } = await contend(sandbox, { hold: true, umask: 0o002 })

  expect(result.ok, JSON.stringify(result)).toBe(true)
  expect(modeOf(path.dirname(lockPath))).toBe(0o700)
  expect(modeOf(lockPath)).toBe(0o600)
})

test('B16b (TypeScript algorithm): keeps a 0777 lock dir and creates LOCK 0664', async () => {
  const sandbox = makeProbeSandbox()
  const lockPath = await looseLockDir(sandbox)

  const { result } = await contend(sandbox, { entry: 'oracle', hold: true, umask: 0o002 })

  expect(result.ok, JSON.stringify(result)).toBe(true)
  expect(modeOf(path.dirname(lockPath))).toBe(0o777)
  expect(modeOf(lockPath)).toBe(0o664)
})

async function symlinkedLockDir(sandbox) {
  const lockDir = path.dirname(await discoverLock(sandbox))
  const elsewhere = path.join(sandbox.root, 'elsewhere')
  fs.mkdirSync(elsewhere)
  fs.symlinkSync(elsewhere, lockDir)
  return { lockDir, elsewhere }
}

test('B16c: refuses a lock dir that is a symlink and creates nothing where it points', async () => {
  const sandbox = makeProbeSandbox()
  const { lockDir, elsewhere } = await symlinkedLockDir(sandbox)

  const { result } = await contend(sandbox, { options: { timeoutMs: 3000 } })

  expect(result.ok, JSON.stringify(result)).toBe(false)
  expect(result.error.name).toBe('GatewayLockError')
  expect(result.error.isGatewayLockError).toBe(true)
  expectNamesDir(result.error.message, lockDir)
  expect(result.ms).toBeLessThanOrEqual(500)
  expect(fs.readdirSync(elsewhere)).toEqual([])
})

test('B16c (TypeScript algorithm): follows a symlinked lock dir to lock elsewhere', async () => {
  const sandbox = makeProbeSandbox()
  const { lockDir, elsewhere } = await symlinkedLockDir(sandbox)

  const result = await oracleContend(sandbox, { timeoutMs: 500 })

  expect(result.ok).toBe(true)
  expect(path.dirname(result.handle.lockPath)).toBe(lockDir)
  expect(fs.readdirSync(elsewhere)).toEqual([path.basename(result.handle.lockPath)])
})

async function foreignLockDir(sandbox) {
  const lockDir = path.dirname(await discoverLock(sandbox))
  fs.mkdirSync(lockDir)
  fs.chownSync(lockDir, NOBODY, NOBODY)
  fs.chmodSync(lockDir, 0o777)
  return lockDir
}

test('B16d: refuses a world-writable lock dir owned by another user', async (ctx) => {
  ctx.skip(!isRoot(), 'needs root to give the lock dir to uid 65534')
  const sandbox = makeProbeSandbox()
  const lockDir = await foreignLockDir(sandbox)

  const { result } = await contend(sandbox, {})

  expect(result.ok, JSON.stringify(result)).toBe(false)
  expect(result.error.name).toBe('GatewayLockError')
  expect(result.error.isGatewayLockError).toBe(true)
  expectNamesDir(result.error.message, lockDir)
  expect(result.ms).toBeLessThanOrEqual(500)
})

test('B16d (TypeScript algorithm): accepts a lock dir owned by another user', async (ctx) => {
  ctx.skip(!isRoot(), 'needs root to give the lock dir to uid 65534')
  const sandbox = makeProbeSandbox()
  const lockDir = await foreignLockDir(sandbox)

  const result = await oracleContend(sandbox, { timeoutMs: 500 })

  expect(result.ok).toBe(true)
  expect(path.dirname(result.handle.lockPath)).toBe(lockDir)
  expect(fs.lstatSync(lockDir).uid).toBe(NOBODY)
})
