// A plain JavaScript model of OpenClaw's TypeScript acquireGatewayLock: the V3T baseline of
// the reference (port probe first, telemetry, wrapped removal errors) with the V5 extras
// (`port` in the payload, clamped timers). It keeps the TypeScript faults on purpose, so that
// tests can show them next to gatelock: a free or silent port makes any owner dead, reclaim
// deletes by path, release deletes whatever is at the path, and an empty file waits staleMs.

import { createHash } from 'node:crypto'
import fs from 'node:fs'
import fsp from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

const DEFAULT_TIMEOUT_MS = 5000
const DEFAULT_POLL_INTERVAL_MS = 100
const DEFAULT_STALE_MS = 30_000
const PORT_PROBE_HOST = '127.0.0.1'
const PORT_PROBE_TIMEOUT_MS = 1000
const MAX_TIMER_MS = 2_147_000_000

const LEGACY_STATE_DIR_NAMES = ['.clawdbot', '.moldbot', '.moltbot']
const CONFIG_FILE_NAMES = ['openclaw.json', 'clawdbot.json', 'moldbot.json', 'moltbot.json']
const GATEWAY_ENTRY_SUFFIXES = [
  'dist/index.js',
  'dist/entry.js',
  'openclaw.mjs',
  'scripts/run-node.mjs',
  'src/index.ts',
  'src/entry.ts',
]

export class OracleLockError extends Error {
  constructor(message, cause) {
    super(message)
    this.name = 'GatewayLockError'
    this.cause = cause
  }
}

export function resolveLockDir() {
  const leaf = typeof process.getuid === 'function' ? `openclaw-${process.getuid()}` : 'openclaw'
  return path.join(os.tmpdir(), leaf)
}

export function lockFileName(configPath) {
  const h8 = createHash('sha256').update(configPath, 'utf8').digest('hex').slice(0, 8)
  return `gateway.${h8}.lock`
}

export function resolveConfigPath(env = process.env, stateDir = resolveStateDir(env)) {
  const explicit = envValue(env, 'OPENCLAW_CONFIG_PATH')
  if (explicit) return resolveUserPath(explicit, env)

  const inStateDir = CONFIG_FILE_NAMES.map((name) => path.join(stateDir, name)).find(exists)
  if (inStateDir) return inStateDir
  if (envValue(env, 'OPENCLAW_STATE_DIR')) return path.join(stateDir, 'openclaw.json')

  const defaultStateDir = resolveStateDir(env)
  if (path.resolve(stateDir) !== path.resolve(defaultStateDir)) {
    return path.join(stateDir, 'openclaw.json')
  }
  const legacyExplicit =
    envValue(env, 'OPENCLAW_CONFIG_PATH') || envValue(env, 'CLAWDBOT_CONFIG_PATH')
  const candidates = legacyExplicit
    ? [resolveUserPath(legacyExplicit, env)]
    : defaultConfigCandidates(env)
  const found = candidates.find(exists)
  if (found) return found
  return legacyExplicit
    ? resolveUserPath(legacyExplicit, env)
    : path.join(defaultStateDir, 'openclaw.json')
}

function resolveStateDir(env) {
  const override = envValue(env, 'OPENCLAW_STATE_DIR') || envValue(env, 'CLAWDBOT_STATE_DIR')
  if (override) return resolveUserPath(override, env)

  const home = resolveHomeDir(env)
  const current = path.join(home, '.openclaw')
  if (exists(current)) return current
  const legacy = LEGACY_STATE_DIR_NAMES.map((name) => path.join(home, name)).find(exists)
  return legacy ?? current
}

function defaultConfigCandidates(env) {
  const dirs = []
  const override = envValue(env, 'OPENCLAW_STATE_DIR') || envValue(env, 'CLAWDBOT_STATE_DIR')
  if (override) dirs.push(resolveUserPath(override, env))
  const home = resolveHomeDir(env)
  for (const name of ['.openclaw', ...LEGACY_STATE_DIR_NAMES]) dirs.push(path.join(home, name))
  return dirs.flatMap((dir) => CONFIG_FILE_NAMES.map((name) => path.join(dir, name)))
}

function resolveHomeDir(env) {
  const explicit = envValue(env, 'OPENCLAW_HOME')
  if (explicit) {
    if (explicit !== '~' && !explicit.startsWith('~/') && !explicit.startsWith('~\\')) {
      return path.resolve(explicit)
    }
    const base = firstNonEmpty(env.HOME, env.USERPROFILE, osHomeDir())
    return path.resolve(base ? base + explicit.slice(1) : process.cwd())
  }
  const home = firstNonEmpty(env.HOME, env.USERPROFILE, osHomeDir())
  return path.resolve(home ?? process.cwd())
}

function resolveUserPath(input, env) {
  const trimmed = input.trim()
  if (!trimmed.startsWith('~')) return path.resolve(trimmed)
  // Only a bare leading "~" is expanded; "~user" stays literal, as upstream does.
  return path.resolve(trimmed.replace(/^~(?=$|[\\/])/, () => resolveHomeDir(env)))
}

function envValue(env, name) {
  const value = env[name]
  return typeof value === 'string' ? value.trim() : ''
}

function firstNonEmpty(...values) {
  for (const value of values) {
    if (typeof value === 'string' && value.trim()) return value.trim()
  }
  return undefined
}

function osHomeDir() {
  try {
    return os.homedir()
  } catch {
    return undefined
  }
}

function exists(candidate) {
  return fs.existsSync(candidate)
}

export function parseStatStartTime(text) {
  const trimmed = String(text).trim()
  const commEnd = trimmed.lastIndexOf(')')
  if (commEnd < 0) return null
  const fields = trimmed
    .slice(commEnd + 1)
    .trim()
    .split(/\s+/)
  const value = Number.parseInt(fields[19], 10)
  return Number.isFinite(value) ? value : null
}

export function parseProcCmdline(text) {
  return String(text)
    .split('\0')
    .map((arg) => arg.trim())
    .filter(Boolean)
}

export function isGatewayArgv(args, { allowGatewayBinary = false } = {}) {
  const normalized = args.map((arg) => String(arg).replaceAll('\\', '/').toLowerCase().trim())
  const exe = (normalized[0] ?? '').replace(/\.(bat|cmd|exe)$/, '')
  if (allowGatewayBinary && (exe === 'openclaw-gateway' || exe.endsWith('/openclaw-gateway'))) {
    return true
  }
  if (!normalized.includes('gateway')) return false
  if (normalized.some((arg) => GATEWAY_ENTRY_SUFFIXES.some((suffix) => arg.endsWith(suffix)))) {
    return true
  }
  return exe === 'openclaw' || exe.endsWith('/openclaw')
}

// The TypeScript reads /proc synchronously on the JS thread; so does the model.
function readLinuxStartTime(pid) {
  try {
    return parseStatStartTime(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return null
  }
}

function readLinuxCmdline(pid) {
  try {
    return parseProcCmdline(fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8'))
  } catch {
    return null
  }
}

function isPidAlive(pid) {
  if (!Number.isFinite(pid) || pid <= 0) return false
  try {
    process.kill(pid, 0)
  } catch {
    // EPERM lands here too: the baseline counts another user's process as dead.
    return false
  }
  return !(process.platform === 'linux' && isZombie(pid))
}

function isZombie(pid) {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, 'utf8')
    const stateLine = status.split('\n').find((line) => line.startsWith('State:'))
    return stateLine?.slice('State:'.length).trim().startsWith('Z') ?? false
  } catch {
    return false
  }
}

// A timeout counts as free, like any connect error: the fault B9/B11 show.
function checkPortFree(port) {
  return new Promise((resolve) => {
    const socket = net.createConnection({ host: PORT_PROBE_HOST, port })
    let settled = false
    const finish = (free) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.removeAllListeners()
      socket.on('error', () => {})
      socket.destroy()
      resolve(free)
    }
    const timer = setTimeout(() => finish(true), PORT_PROBE_TIMEOUT_MS)
    socket.once('connect', () => finish(false))
    socket.once('error', () => finish(true))
  })
}

async function resolveOwnerStatus(pid, payload, platform, port) {
  if (port !== null && port !== undefined && (await checkPortFree(port))) return 'dead'
  if (!isPidAlive(pid)) return 'dead'
  if (platform !== 'linux') return 'alive'

  if (Number.isFinite(payload.startTime)) {
    const current = readLinuxStartTime(pid)
    if (current === null) return 'unknown'
    return current === payload.startTime ? 'alive' : 'dead'
  }
  const args = readLinuxCmdline(pid)
  if (args === null) return 'unknown'
  return isGatewayArgv(args, { allowGatewayBinary: true }) ? 'alive' : 'dead'
}

async function readLockPayload(lockPath) {
  try {
    const parsed = JSON.parse(await fsp.readFile(lockPath, 'utf8'))
    if (typeof parsed.pid !== 'number') return null
    if (typeof parsed.createdAt !== 'string') return null
    if (typeof parsed.configPath !== 'string') return null
    const startTime = typeof parsed.startTime === 'number' ? parsed.startTime : undefined
    const { pid, createdAt, configPath } = parsed
    return { pid, createdAt, configPath, startTime }
  } catch {
    return null
  }
}

function buildPayload(configPath, platform, port) {
  const payload = { pid: process.pid, createdAt: new Date().toISOString(), configPath }
  if (Number.isInteger(port) && port >= 1 && port <= 65535) payload.port = port
  if (platform === 'linux') {
    const startTime = readLinuxStartTime(process.pid)
    if (startTime !== null) payload.startTime = startTime
  }
  return payload
}

async function isStaleLock(lockPath, payload, staleMs) {
  const createdAt = payload?.createdAt
  if (typeof createdAt === 'string' && createdAt) {
    const parsed = Date.parse(createdAt)
    if (Number.isFinite(parsed)) return Date.now() - parsed > staleMs
  }
  try {
    const stat = await fsp.stat(lockPath)
    return Date.now() - stat.mtimeMs > staleMs
  } catch {
    return false
  }
}

async function removeLockFile(lockPath, context) {
  try {
    await fsp.rm(lockPath, { force: true })
  } catch (err) {
    const message = `failed to remove gateway lock file (${context}) at ${lockPath}`
    throw new OracleLockError(message, err)
  }
}

function resolveTimerMs(value, fallback) {
  if (typeof value !== 'number' || !Number.isFinite(value)) return fallback
  return Math.min(MAX_TIMER_MS, Math.max(0, Math.floor(value)))
}

function resolvePositiveTimerMs(value, fallback) {
  if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) return fallback
  return Math.min(MAX_TIMER_MS, Math.max(1, Math.floor(value)))
}

function telemetryEmitter(onTelemetry) {
  return (event) => {
    if (typeof onTelemetry !== 'function') return
    try {
      onTelemetry(event)
    } catch {
      // The baseline swallows listener errors.
    }
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

export async function oracleAcquire(opts = {}) {
  const emit = telemetryEmitter(opts.onTelemetry)
  const env = opts.env ?? process.env
  if (env.OPENCLAW_ALLOW_MULTI_GATEWAY === '1') {
    emit({ event: 'acquire-skipped', reason: 'multi-gateway-override' })
    return null
  }
  if (opts.allowInTests !== true && (env.VITEST || env.NODE_ENV === 'test')) {
    emit({ event: 'acquire-skipped', reason: 'test-env' })
    return null
  }

  const timeoutMs = resolveTimerMs(opts.timeoutMs, DEFAULT_TIMEOUT_MS)
  const pollIntervalMs = resolvePositiveTimerMs(opts.pollIntervalMs, DEFAULT_POLL_INTERVAL_MS)
  const staleMs = resolveTimerMs(opts.staleMs, DEFAULT_STALE_MS)
  const platform = opts.platform ?? process.platform
  const port = opts.port ?? undefined
  const configPath = resolveConfigPath(env)
  const lockPath = path.join(opts.lockDir ?? resolveLockDir(), lockFileName(configPath))
  // mkdir errors escape unwrapped, as in the TypeScript (field failure B14 a).
  await fsp.mkdir(path.dirname(lockPath), { recursive: true })
  emit({
    event: 'acquire-start',
    lockPath,
    configPath,
    timeoutMs,
    pollIntervalMs,
    staleMs,
    platform,
    port,
  })

  const startedAt = Date.now()
  let lastPayload = null
  let attempts = 0
  let staleRecoveries = 0
  let contentionReported = false
  while (Date.now() - startedAt < timeoutMs) {
    attempts += 1
    const file = await createExclusive(lockPath)
    if (file) {
      await writePayload(file, lockPath, buildPayload(configPath, platform, port))
      const waitedMs = Date.now() - startedAt
      emit({ event: 'acquire-success', lockPath, configPath, waitedMs, attempts, staleRecoveries })
      return makeHandle(file, lockPath, configPath)
    }

    lastPayload = await readLockPayload(lockPath)
    const ownerPid = typeof lastPayload?.pid === 'number' ? lastPayload.pid : undefined
    const ownerStatus = ownerPid
      ? await resolveOwnerStatus(ownerPid, lastPayload, platform, port)
      : 'unknown'
    const waitedMs = Date.now() - startedAt
    if (!contentionReported) {
      emit({
        event: 'acquire-contention',
        lockPath,
        ownerPid,
        ownerStatus,
        waitedMs,
        attempt: attempts,
      })
      contentionReported = true
    }

    let reason = null
    if (ownerStatus === 'dead') {
      await removeLockFile(lockPath, 'stale-owner recovery')
      reason = 'owner-dead'
    } else if (ownerStatus !== 'alive' && (await isStaleLock(lockPath, lastPayload, staleMs))) {
      await removeLockFile(lockPath, 'stale-timestamp recovery')
      reason = 'stale-unknown-owner'
    }
    if (reason) {
      staleRecoveries += 1
      emit({
        event: 'stale-lock-recovered',
        lockPath,
        ownerPid,
        ownerStatus,
        reason,
        waitedMs,
        attempt: attempts,
      })
      contentionReported = false
      continue
    }

    const remainingMs = timeoutMs - (Date.now() - startedAt)
    if (remainingMs <= 0) break
    await sleep(Math.min(pollIntervalMs, remainingMs))
  }

  const ownerPid = typeof lastPayload?.pid === 'number' ? lastPayload.pid : undefined
  const waitedMs = Date.now() - startedAt
  emit({ event: 'acquire-timeout', lockPath, ownerPid, waitedMs, timeoutMs, attempts })
  const owner = ownerPid === undefined ? '' : ` (pid ${ownerPid})`
  throw new OracleLockError(`gateway already running${owner}; lock timeout after ${timeoutMs}ms`)
}

async function createExclusive(lockPath) {
  try {
    return await fsp.open(lockPath, 'wx')
  } catch (err) {
    if (err?.code === 'EEXIST') return null
    throw new OracleLockError(`failed to acquire gateway lock at ${lockPath}`, err)
  }
}

// Create, then write: the file is empty in between (the create-then-write window).
async function writePayload(file, lockPath, payload) {
  try {
    await file.writeFile(JSON.stringify(payload), 'utf8')
  } catch (err) {
    await file.close().catch(() => {})
    await fsp.rm(lockPath, { force: true }).catch(() => {})
    throw new OracleLockError(`failed to write gateway lock payload at ${lockPath}`, err)
  }
}

function makeHandle(file, lockPath, configPath) {
  return {
    lockPath,
    configPath,
    async release() {
      await file.close().catch(() => {})
      // By path: this removes whatever is there now, a successor's lock included.
      await removeLockFile(lockPath, 'release')
    },
  }
}
