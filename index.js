'use strict'

// The JS surface of gatelock: options are checked here, on the JS thread; the
// work itself runs on the addon's own runtime and comes back as JSON, which is
// turned into a handle or a GatewayLockError of this module's realm.

const os = require('node:os')
const path = require('node:path')

const DEFAULT_TIMEOUT_MS = 5000
const DEFAULT_POLL_INTERVAL_MS = 100
const DEFAULT_STALE_MS = 30000
const MAX_TIMER_MS = 2147000000
const UNSUPPORTED_OPTIONS = ['now', 'sleep', 'readProcessCmdline', 'readProcessStartTime', 'role']
const asyncDispose = Symbol.asyncDispose ?? Symbol.for('nodejs.asyncDispose')

class GatewayLockError extends Error {
  constructor(message, cause) {
    super(message)
    this.name = 'GatewayLockError'
    this.cause = cause
  }
}

function lockError(message, code, cause) {
  const error = new GatewayLockError(message, cause)
  if (code !== undefined) error.code = code
  return error
}

// Loaded with the module, not on first use: a process that later runs out
// of descriptors must still get its acquire's real error (EMFILE), not a
// failed dlopen.
const native = loadBinding()

function loadBinding() {
  try {
    return require('./binding.js')
  } catch (cause) {
    const target = platformTarget()
    const message =
      `gatelock has no native binary for ${target}: neither the package ` +
      `gatelock-${target} nor a local gatelock.${target}.node could be loaded. ` +
      'To build it from source (Rust and Node only): ' +
      '`cd node_modules/gatelock && npm install && npm run build`'
    throw lockError(message, 'ENOBINARY', cause)
  }
}

/** The platform part of the binary's name, as the per-platform packages spell it. */
function platformTarget() {
  const { platform, arch } = process
  if (platform === 'win32') return `${platform}-${arch}-msvc`
  if (platform !== 'linux') return `${platform}-${arch}`
  const glibc = process.report?.getReport().header.glibcVersionRuntime
  return `${platform}-${arch}-${glibc ? 'gnu' : 'musl'}`
}

function invalid(name, why) {
  return lockError(`invalid gateway lock option ${name}: ${why}`, 'EINVAL')
}

/** A timer option as the TypeScript `??` and clamping read it. */
function timerOption(opts, name, fallback, min) {
  const value = opts[name]
  if (value === undefined || value === null) return fallback
  if (typeof value !== 'number') throw new TypeError(`${name} must be a number`)
  if (!Number.isFinite(value)) return fallback
  return Math.min(Math.max(Math.floor(value), min), MAX_TIMER_MS)
}

// The variables the skip rules and the config path rules read; nothing else
// of the environment crosses into the addon.
const ENV_KEYS = [
  'OPENCLAW_ALLOW_MULTI_GATEWAY',
  'VITEST',
  'NODE_ENV',
  'OPENCLAW_CONFIG_PATH',
  'OPENCLAW_STATE_DIR',
  'OPENCLAW_HOME',
  'CLAWDBOT_STATE_DIR',
  'CLAWDBOT_CONFIG_PATH',
  'HOME',
  'USERPROFILE',
]

function envOption(opts) {
  const env = opts.env ?? process.env
  if (typeof env !== 'object' || Array.isArray(env)) throw new TypeError('env must be an object')
  // process.env holds only strings; any other object is checked whole.
  if (env !== process.env) {
    for (const [key, value] of Object.entries(env)) {
      if (value !== undefined && typeof value !== 'string') {
        throw new TypeError(`env.${key} must be a string or undefined`)
      }
    }
  }
  const picked = {}
  for (const key of ENV_KEYS) {
    const value = env[key]
    if (typeof value === 'string') picked[key] = value
  }
  return picked
}

function portOption(port) {
  if (port === undefined || port === null) return null
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw invalid(
      'port',
      `expected an integer from 1 to 65535, got ${JSON.stringify(port) ?? String(port)}`,
    )
  }
  return port
}

function optionsObject(opts) {
  if (opts === undefined || opts === null) return {}
  if (typeof opts !== 'object') throw new TypeError('options must be an object')
  return opts
}

function defaultLockDir() {
  const leaf = typeof process.getuid === 'function' ? `openclaw-${process.getuid()}` : 'openclaw'
  return path.join(os.tmpdir(), leaf)
}

function homeDir() {
  try {
    return os.homedir()
  } catch {
    return null
  }
}

/** The request the addon reads: every value already checked and defaulted. */
function buildRequest(opts, env, port) {
  for (const name of UNSUPPORTED_OPTIONS) {
    if (opts[name] !== undefined && opts[name] !== null) {
      throw invalid(name, 'gatelock has no such seam; it reads the real clock and process table')
    }
  }
  const lockDir = opts.lockDir ?? defaultLockDir()
  if (typeof lockDir !== 'string' || lockDir === '') {
    throw new TypeError('lockDir must be a non-empty string')
  }
  const platform = opts.platform ?? process.platform
  if (typeof platform !== 'string') throw new TypeError('platform must be a string')
  if (opts.onTelemetry != null && typeof opts.onTelemetry !== 'function') {
    throw new TypeError('onTelemetry must be a function')
  }
  return {
    env,
    cwd: process.cwd(),
    osHome: homeDir(),
    lockDir,
    timeoutMs: timerOption(opts, 'timeoutMs', DEFAULT_TIMEOUT_MS, 0),
    pollIntervalMs: timerOption(opts, 'pollIntervalMs', DEFAULT_POLL_INTERVAL_MS, 1),
    staleMs: timerOption(opts, 'staleMs', DEFAULT_STALE_MS, 0),
    platform,
    port,
  }
}

function errorFrom(outcome) {
  const { message, code, cause } = outcome.error
  let underlying
  if (cause) {
    underlying = new Error(cause.message)
    underlying.code = cause.code
    if (typeof cause.errno === 'number') underlying.errno = cause.errno
  }
  return lockError(message, code, underlying)
}

// Calls to the addon settle through one completion channel: the addon
// answers call `id` with `<id> <json>`, and the promise kept here resolves.
const pending = new Map()
let nextCall = 1
native.init((answer) => {
  const space = answer.indexOf(' ')
  const id = Number(answer.slice(0, space))
  const settle = pending.get(id)
  pending.delete(id)
  settle?.(answer.slice(space + 1))
})

function callNative(method, ...args) {
  return new Promise((resolve, reject) => {
    const id = nextCall++
    pending.set(id, (text) => resolve(JSON.parse(text)))
    try {
      native[method](id, ...args)
    } catch (error) {
      pending.delete(id)
      reject(error)
    }
  })
}

/** A call whose failure outcome becomes a rejected `GatewayLockError`. */
async function callChecked(method, ...args) {
  const outcome = await callNative(method, ...args)
  if (!outcome.ok) throw errorFrom(outcome)
  return outcome
}

/** Calls the user's callback; its exceptions never reach the lock. */
function telemetry(onTelemetry) {
  let delivered = 0
  const deliver = (event) => {
    if (typeof onTelemetry !== 'function') return
    try {
      onTelemetry(event)
    } catch {
      // A failing callback must not change the outcome of an acquire.
    }
  }
  return {
    deliver,
    fromNative(text) {
      const { i, e } = JSON.parse(text)
      if (i !== delivered) return
      delivered += 1
      deliver(e)
    },
    catchUp(events) {
      for (; delivered < events.length; delivered += 1) deliver(events[delivered])
    },
  }
}

function makeHandle(outcome) {
  let released
  const release = () => {
    released ??= callChecked('release', outcome.handle).then(() => {})
    return released
  }
  return {
    lockPath: outcome.lockPath,
    configPath: outcome.configPath,
    release,
    [asyncDispose]: release,
  }
}

async function acquireGatewayLock(portOrOpts, maybeOpts) {
  const positional = typeof portOrOpts === 'number'
  const opts = optionsObject(positional ? maybeOpts : portOrOpts)
  const port = portOption(positional ? portOrOpts : opts.port)
  const env = envOption(opts)
  const events = telemetry(opts.onTelemetry)

  if (env.OPENCLAW_ALLOW_MULTI_GATEWAY === '1') {
    events.deliver({ event: 'acquire-skipped', reason: 'multi-gateway-override' })
    return null
  }
  const testEnv = (typeof env.VITEST === 'string' && env.VITEST !== '') || env.NODE_ENV === 'test'
  if (opts.allowInTests !== true && testEnv) {
    events.deliver({ event: 'acquire-skipped', reason: 'test-env' })
    return null
  }

  const request = buildRequest(opts, env, port)
  const sink = typeof opts.onTelemetry === 'function' ? events.fromNative : undefined
  const outcome = await callNative('acquire', JSON.stringify(request), sink)
  events.catchUp(outcome.events ?? [])
  if (!outcome.ok) throw errorFrom(outcome)
  return makeHandle(outcome)
}

async function inspectGatewayLock(opts) {
  opts = optionsObject(opts)
  const request = buildRequest(opts, envOption(opts), portOption(opts.port))
  const { report } = await callChecked('inspect', JSON.stringify(request))
  return report
}

async function readActiveGatewayLockPort(opts) {
  opts = optionsObject(opts)
  const request = buildRequest(
    { env: opts.env, lockDir: opts.lockDir, platform: opts.platform },
    envOption(opts),
    null,
  )
  const outcome = await callNative('activePort', JSON.stringify(request))
  return outcome.port ?? undefined
}

/**
 * Removes a lock that an acquire would reclaim now; an unknown owner's only
 * with `force`, a live owner's never. What `gatelock clear` runs.
 */
async function clearGatewayLock(opts) {
  opts = optionsObject(opts)
  const { force, ...rest } = opts
  const request = buildRequest(rest, envOption(rest), null)
  const { outcome, report } = await callChecked('clear', JSON.stringify(request), force === true)
  return { outcome, ...report }
}

// Not part of the API: makes the addon panic on its runtime, so tests can show
// that a panic settles as a rejected promise and the process lives on.
exports[Symbol.for('gatelock.panicForTest')] = async () => {
  await callChecked('panicForTest')
}

exports.GatewayLockError = GatewayLockError
exports.clearGatewayLock = clearGatewayLock
exports.acquireGatewayLock = acquireGatewayLock
exports.inspectGatewayLock = inspectGatewayLock
exports.readActiveGatewayLockPort = readActiveGatewayLockPort
