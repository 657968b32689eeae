// Helpers for tests that use real processes, files and sockets (field-failures.md, "Common
// harness"). Every wait is bounded, every spawned process and listener is tracked, and
// cleanupAll() (meant for afterEach) kills and removes all of them. Network: loopback only.

import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'

// Bound before any test installs fake timers or freezes Date, so the harness keeps real time.
const realSetTimeout = globalThis.setTimeout
const realClearTimeout = globalThis.clearTimeout
const RealDate = globalThis.Date
const realDateNow = RealDate.now.bind(RealDate)
export const realNow = performance.now.bind(performance)

const SUPPORT_DIR = path.dirname(fileURLToPath(import.meta.url))
export const GATELOCK_ENTRY = path.resolve(SUPPORT_DIR, '../../index.js')
export const GATELOCK_ORACLE = path.join(SUPPORT_DIR, 'oracle.mjs')
const GW_FIXTURE = path.join(SUPPORT_DIR, 'gateway-fixture.cjs')
const ORACLE_GATEWAY = path.join(SUPPORT_DIR, 'oracle-gateway.mjs')

const DEFAULT_WAIT_MS = 10_000
const FIRST_LINE_WAIT_MS = 15_000
const EXIT_WAIT_MS = 5000
const RUN_NODE_TIMEOUT_MS = 10_000

const trackedProcesses = new Set()
const trackedListeners = new Set()
const trackedSandboxes = new Set()

export function sleep(ms) {
  return new Promise((resolve) => realSetTimeout(resolve, ms))
}

export function isoAgo(ms) {
  return new RealDate(realDateNow() - ms).toISOString()
}

export function withTimeout(promise, ms, what) {
  let timer
  const expiry = new Promise((_, reject) => {
    timer = realSetTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([promise, expiry]).finally(() => realClearTimeout(timer))
}

/** A copy of the runner's environment without the variables that make an acquire skip. */
export function cleanEnv(base = process.env) {
  const env = { ...base }
  for (const key of Object.keys(env)) {
    const runnerKey = key.startsWith('VITEST_') || key.startsWith('JEST_')
    if (runnerKey || ['VITEST', 'NODE_ENV', 'OPENCLAW_ALLOW_MULTI_GATEWAY'].includes(key)) {
      delete env[key]
    }
  }
  return env
}

function applyExtra(env, extra = {}) {
  for (const [key, value] of Object.entries(extra)) {
    if (value === undefined) delete env[key]
    else env[key] = String(value)
  }
  return env
}

/**
 * A fresh sandbox <S>: <S>/tmp (0700), <S>/cfg/openclaw.json ("{}"), <S>/home, and GW at
 * <S>/app/dist/index.js. childEnv(extra) is the environment of its processes; a key of extra
 * set to undefined is removed.
 */
export function makeSandbox() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gatelock-'))
  const tmp = path.join(root, 'tmp')
  const cfg = path.join(root, 'cfg', 'openclaw.json')
  const home = path.join(root, 'home')
  fs.mkdirSync(tmp, { mode: 0o700 })
  fs.chmodSync(tmp, 0o700)
  fs.mkdirSync(path.dirname(cfg))
  fs.writeFileSync(cfg, '{}')
  fs.mkdirSync(home)
  installScript(GW_FIXTURE, path.join(root, 'app', 'dist', 'index.js'), 'commonjs')

  const uid = typeof process.getuid === 'function' ? process.getuid() : null
  const lockDir = path.join(tmp, uid === null ? 'openclaw' : `openclaw-${uid}`)
  const sandbox = {
    root,
    tmp,
    cfg,
    home,
    lockDir,
    childEnv: (extra) => applyExtra(sandboxEnv(sandbox), extra),
    cleanup: () => removeSandbox(sandbox),
  }
  trackedSandboxes.add(sandbox)
  return sandbox
}

function sandboxEnv(sandbox) {
  return Object.assign(cleanEnv(), {
    TMPDIR: sandbox.tmp,
    OPENCLAW_CONFIG_PATH: sandbox.cfg,
    HOME: sandbox.home,
    GATELOCK_ENTRY,
    GATELOCK_ORACLE,
  })
}

// A package.json beside the copy pins its module type, whatever encloses the temp dir.
function installScript(source, target, type) {
  fs.mkdirSync(path.dirname(target), { recursive: true })
  fs.copyFileSync(source, target)
  const packageDir = path.dirname(path.dirname(target))
  fs.writeFileSync(path.join(packageDir, 'package.json'), JSON.stringify({ type }))
}

function installOracleGateway(sandbox) {
  const target = path.join(sandbox.root, 'oracle', 'dist', 'index.js')
  if (!fs.existsSync(target)) {
    installScript(ORACLE_GATEWAY, target, 'module')
    fs.copyFileSync(GW_FIXTURE, path.join(path.dirname(target), 'gateway-fixture.cjs'))
  }
  return target
}

function removeSandbox(sandbox) {
  trackedSandboxes.delete(sandbox)
  if (process.env.GATELOCK_KEEP_SANDBOX === '1') return
  try {
    fs.rmSync(sandbox.root, { recursive: true, force: true })
  } catch {
    // A scenario may leave a directory without write or search permission.
    makeRemovable(sandbox.root)
    fs.rmSync(sandbox.root, { recursive: true, force: true })
  }
}

function makeRemovable(dir) {
  let stat
  try {
    stat = fs.lstatSync(dir)
  } catch {
    return
  }
  if (!stat.isDirectory()) return
  try {
    fs.chmodSync(dir, 0o700)
    for (const name of fs.readdirSync(dir)) makeRemovable(path.join(dir, name))
  } catch {
    // Left to the second rmSync to report.
  }
}

/** The lock path of a config path given as OPENCLAW_CONFIG_PATH (resolved, not realpath'd). */
export function lockPathFor(sandbox, configPath = sandbox.cfg) {
  const resolved = path.resolve(configPath)
  const h8 = createHash('sha256').update(resolved, 'utf8').digest('hex').slice(0, 8)
  return path.join(sandbox.lockDir, `gateway.${h8}.lock`)
}

/**
 * Spawns a tracked process with piped stdout/stderr. Returns { child, pid, lines, stdout,
 * stderr, exitInfo, firstLine, waitForLine(re, ms), kill(sig), exited, waitExit(ms),
 * stop(ms) }.
 */
export function spawnTracked(command, args = [], { env, cwd } = {}) {
  const child = spawn(command, args, {
    env: env ?? cleanEnv(),
    cwd,
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  const lines = []
  const waiters = new Set()
  let stdout = ''
  let stderr = ''
  let partial = ''
  let closed = false
  let firstLine

  const proc = {
    child,
    pid: child.pid,
    lines,
    exitInfo: null,
    exitedAt: null,
    get stdout() {
      return stdout
    },
    get stderr() {
      return stderr
    },
    get firstLine() {
      firstLine ??= waitForLine(/^/, FIRST_LINE_WAIT_MS)
      return firstLine
    },
    waitForLine,
    kill,
    exited: null,
    waitExit,
    stop,
  }

  proc.exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      proc.exitInfo = { code, signal }
      proc.exitedAt = realNow()
      trackedProcesses.delete(proc)
      resolve(proc.exitInfo)
    })
    child.once('error', (error) => {
      proc.exitInfo = { code: null, signal: null, error }
      trackedProcesses.delete(proc)
      closeWaiters(`could not start ${command}: ${error.message}`)
      resolve(proc.exitInfo)
    })
  })
  child.once('close', () => {
    if (partial) acceptLine(partial)
    partial = ''
    closeWaiters(`process ${proc.pid} closed its output`)
  })

  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (chunk) => {
    stdout += chunk
    partial += chunk
    let newline = partial.indexOf('\n')
    while (newline >= 0) {
      acceptLine(partial.slice(0, newline).replace(/\r$/, ''))
      partial = partial.slice(newline + 1)
      newline = partial.indexOf('\n')
    }
  })
  child.stderr.setEncoding('utf8')
  child.stderr.on('data', (chunk) => {
    stderr += chunk
  })

  function acceptLine(line) {
    lines.push(line)
    for (const waiter of [...waiters]) waiter.offer(line)
  }

  function closeWaiters(why) {
    closed = true
    for (const waiter of [...waiters]) waiter.fail(why)
  }

  function describe() {
    return `lines ${JSON.stringify(lines)}, stderr ${JSON.stringify(stderr.slice(-2000))}`
  }

  function waitForLine(pattern, ms = DEFAULT_WAIT_MS) {
    const matches = (line) =>
      typeof pattern === 'string' ? line.includes(pattern) : line.search(pattern) >= 0
    const seen = lines.find(matches)
    if (seen !== undefined) return Promise.resolve(seen)
    if (closed) {
      const why = `process ${proc.pid} closed its output before ${pattern}; ${describe()}`
      return Promise.reject(new Error(why))
    }
    return new Promise((resolve, reject) => {
      const timer = realSetTimeout(() => {
        settle(reject, new Error(`no line matching ${pattern} within ${ms} ms; ${describe()}`))
      }, ms)
      const waiter = {
        offer: (line) => matches(line) && settle(resolve, line),
        fail: (why) => settle(reject, new Error(`${why} before ${pattern}; ${describe()}`)),
      }
      function settle(done, value) {
        realClearTimeout(timer)
        waiters.delete(waiter)
        done(value)
      }
      waiters.add(waiter)
    })
  }

  function kill(signal = 'SIGTERM') {
    // Once reaped, the pid may belong to someone else: never signal it again.
    if (proc.exitInfo) return false
    try {
      return child.kill(signal)
    } catch {
      return false
    }
  }

  function waitExit(ms = EXIT_WAIT_MS) {
    return withTimeout(proc.exited, ms, `exit of process ${proc.pid}`)
  }

  async function stop(ms = EXIT_WAIT_MS) {
    kill('SIGTERM')
    try {
      return await waitExit(ms)
    } catch {
      killTree(proc, 'SIGKILL')
      return waitExit(EXIT_WAIT_MS)
    }
  }

  trackedProcesses.add(proc)
  return proc
}

/**
 * Runs GW (`node <S>/app/dist/index.js gateway ...flags`), or with entry "oracle" the TypeScript
 * model's gateway at <S>/oracle/dist/index.js. env holds extra variables over
 * sandbox.childEnv().
 */
export function spawnGateway(sandbox, flags = [], { env, entry = 'gatelock' } = {}) {
  const script =
    entry === 'oracle'
      ? installOracleGateway(sandbox)
      : path.join(sandbox.root, 'app', 'dist', 'index.js')
  const args = [script, 'gateway', ...flags.map(String)]
  return spawnTracked(process.execPath, args, { env: sandbox.childEnv(env) })
}

/** UNREL: a live process whose argv is not gateway-shaped. */
export function startUnrelated() {
  return spawnTracked(process.execPath, ['-e', 'setTimeout(()=>{},300000)'])
}

export function pidExists(pid) {
  try {
    process.kill(pid, 0)
    return true
  } catch (err) {
    return err.code !== 'ESRCH'
  }
}

/** DEAD pid: a pid whose process has exited and been reaped. */
export async function deadPid() {
  for (let attempt = 0; attempt < 5; attempt += 1) {
    const proc = spawnTracked(process.execPath, ['-e', '0'])
    await proc.waitExit()
    if (!pidExists(proc.pid)) return proc.pid
  }
  throw new Error('every exited pid was taken again at once')
}

function statFields(pid) {
  const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  return text
    .slice(text.lastIndexOf(')') + 1)
    .trim()
    .split(/\s+/)
}

/** START(pid): field 22 of /proc/<pid>/stat, the 20th token after the last ")". */
export function startTimeOf(pid) {
  const value = Number(statFields(pid)[19])
  if (!Number.isSafeInteger(value)) throw new Error(`no start time in /proc/${pid}/stat`)
  return value
}

/** FDLOCKS(pid): the distinct `lock:` lines of /proc/<pid>/fdinfo/*. */
export function fdLocks(pid) {
  const dir = `/proc/${pid}/fdinfo`
  const found = new Set()
  for (const name of fs.readdirSync(dir)) {
    let text
    try {
      text = fs.readFileSync(path.join(dir, name), 'utf8')
    } catch {
      continue // closed since the listing
    }
    for (const line of text.split('\n')) {
      if (line.startsWith('lock:')) found.add(line.trim())
    }
  }
  return [...found]
}

function childPids() {
  const byParent = new Map()
  if (process.platform !== 'linux') return byParent
  for (const name of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    let ppid
    try {
      ppid = Number(statFields(name)[1])
    } catch {
      continue
    }
    if (!byParent.has(ppid)) byParent.set(ppid, [])
    byParent.get(ppid).push(Number(name))
  }
  return byParent
}

/**
 * Signals a process and every descendant it still has (e.g. behind `unshare`). Takes a tracked
 * process (skipped once reaped) or a pid.
 */
export function killTree(target, signal = 'SIGKILL') {
  if (typeof target === 'object' && (target.exitInfo || target.pid === undefined)) return
  const byParent = childPids()
  const pids = []
  const pending = [typeof target === 'object' ? target.pid : target]
  while (pending.length > 0) {
    const pid = pending.pop()
    pids.push(pid)
    pending.push(...(byParent.get(pid) ?? []))
  }
  for (const pid of pids.reverse()) {
    try {
      process.kill(pid, signal)
    } catch {
      // Gone already.
    }
  }
}

/** Distinct free loopback ports: all are bound at once, noted, then closed. */
export async function freePorts(count, host = '127.0.0.1') {
  const servers = []
  try {
    for (let i = 0; i < count; i += 1) {
      const server = net.createServer()
      servers.push(server)
      await withTimeout(
        new Promise((resolve, reject) => {
          server.once('error', reject)
          server.listen({ host, port: 0 }, resolve)
        }),
        DEFAULT_WAIT_MS,
        `bind ${host}:0`,
      )
    }
    return servers.map((server) => server.address().port)
  } finally {
    await Promise.all(servers.map((server) => new Promise((resolve) => server.close(resolve))))
  }
}

export async function freePort(host = '127.0.0.1') {
  const [port] = await freePorts(1, host)
  return port
}

/** A tracked listener on 127.0.0.1 or ::1 (IPv6 only); port 0 picks one. */
export async function listenOn(host, port = 0) {
  if (host !== '127.0.0.1' && host !== '::1') throw new Error(`not a loopback host: ${host}`)
  const connections = new Set()
  const server = net.createServer((socket) => {
    connections.add(socket)
    socket.on('error', () => {})
    socket.once('close', () => connections.delete(socket))
  })
  await withTimeout(
    new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen({ host, port, ipv6Only: host === '::1' }, resolve)
    }),
    DEFAULT_WAIT_MS,
    `listen on ${host}:${port}`,
  )
  const listener = {
    server,
    host,
    port: server.address().port,
    close: async () => {
      trackedListeners.delete(listener)
      for (const socket of connections) socket.destroy()
      const closing = new Promise((resolve) => server.close(resolve))
      await withTimeout(closing, EXIT_WAIT_MS, `close ${host}:${listener.port}`).catch(() => {})
    },
  }
  trackedListeners.add(listener)
  return listener
}

/**
 * Runs node on a script file (an absolute path) or on script text (ESM unless module is false).
 * env is the whole environment (default: cleanEnv()). Resolves { code, signal, stdout, stderr,
 * ms, timedOut }; a run past timeoutMs is killed with its descendants.
 */
export async function runNode(script, options = {}) {
  const { env, args = [], cwd, timeoutMs = RUN_NODE_TIMEOUT_MS, module = true } = options
  const isFile = !script.includes('\n') && path.isAbsolute(script) && fs.existsSync(script)
  const nodeArgs = isFile
    ? [script, ...args]
    : [...(module ? ['--input-type=module'] : []), '-e', script, ...args]

  const startedAt = realNow()
  const proc = spawnTracked(process.execPath, nodeArgs, { env, cwd })
  let timedOut = false
  try {
    await proc.waitExit(timeoutMs)
  } catch {
    timedOut = true
    killTree(proc, 'SIGKILL')
    await proc.waitExit()
  }
  // Output may still be in the pipe after the exit event.
  const closed = new Promise((resolve) => {
    if (proc.child.stdout.closed && proc.child.stderr.closed) resolve()
    else proc.child.once('close', resolve)
  })
  await withTimeout(closed, 2000, `output of process ${proc.pid}`).catch(() => {})

  const { code, signal } = proc.exitInfo
  const ms = (proc.exitedAt ?? realNow()) - startedAt
  return { code, signal, stdout: proc.stdout, stderr: proc.stderr, ms, timedOut }
}

/**
 * Writes a lock file (an object as compact JSON, or a raw string or Buffer) with mode 0600,
 * never through a symlink, creating its directory with mode 0700. mtimeMsAgo back-dates
 * atime and mtime. Returns the bytes written, as a string.
 */
export function writeLock(lockPath, content, { mtimeMsAgo } = {}) {
  const dir = path.dirname(lockPath)
  if (!fs.existsSync(dir)) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 })
    fs.chmodSync(dir, 0o700)
  }
  const bytes =
    typeof content === 'string' || Buffer.isBuffer(content) ? content : JSON.stringify(content)
  const { O_WRONLY, O_CREAT, O_TRUNC, O_NOFOLLOW } = fs.constants
  const fd = fs.openSync(lockPath, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, 0o600)
  try {
    fs.writeSync(fd, bytes)
    fs.fchmodSync(fd, 0o600)
  } finally {
    fs.closeSync(fd)
  }
  if (mtimeMsAgo !== undefined) {
    const when = new RealDate(realDateNow() - mtimeMsAgo)
    fs.utimesSync(lockPath, when, when)
  }
  return String(bytes)
}

/** The lock file's bytes and its parsed JSON (null when it is not JSON), or null if missing. */
export function readLock(lockPath) {
  let text
  try {
    text = fs.readFileSync(lockPath, 'utf8')
  } catch (err) {
    if (err.code === 'ENOENT') return null
    throw err
  }
  let payload = null
  try {
    payload = JSON.parse(text)
  } catch {
    // Torn or empty: payload stays null.
  }
  return { text, payload }
}

/** The inode number (BigInt) of the entry itself, not of a symlink's target; null if missing. */
export function inodeOf(entryPath) {
  try {
    return fs.lstatSync(entryPath, { bigint: true }).ino
  } catch (err) {
    if (err.code === 'ENOENT') return null
    throw err
  }
}

/** For afterEach: kills every tracked process tree, closes listeners, removes sandboxes. */
export async function cleanupAll() {
  const processes = [...trackedProcesses]
  for (const proc of processes) killTree(proc, 'SIGKILL')
  await Promise.all(processes.map((proc) => proc.waitExit().catch(() => {})))
  await Promise.all([...trackedListeners].map((listener) => listener.close()))
  const failures = []
  for (const sandbox of [...trackedSandboxes]) {
    try {
      removeSandbox(sandbox)
    } catch (err) {
      failures.push(err)
    }
  }
  if (failures.length > 0) throw new AggregateError(failures, 'could not remove every sandbox')
}
