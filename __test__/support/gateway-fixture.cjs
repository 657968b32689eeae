'use strict'

// GW, the gateway-shaped lock owner of the field-failure scenarios. The harness copies it to
// <S>/app/dist/index.js and runs `node <S>/app/dist/index.js gateway [flags]`, so its argv has
// the shape the TypeScript recognises. Flags: --port N, --listen HOST, --no-lock, --timeout MS,
// --poll MS, --churn; env GO_AT=<epoch ms> delays the acquire until that instant.
//
// Output, one line on stdout:
//   ACQUIRED <pid>            the lock is held (and HOST:N listens, with --listen)
//   ERROR <name>: <message>   the acquire (or the listen after it) failed
//   SKIPPED <pid>             the acquire resolved null
//   IDLE <pid>                --no-lock: nothing taken (and HOST:N listens, with --listen)
// Then it idles. On SIGTERM or SIGINT it awaits release() and exits 0.
//
// It loads gatelock from env GATELOCK_ENTRY; oracle-gateway.mjs reuses runGateway() with the
// TypeScript model instead.

const net = require('node:net')
const { Worker } = require('node:worker_threads')

const CHURN_INTERVAL_MS = 100
const CHURN_BYTES = 5 * 1024 * 1024

class UsageError extends Error {
  constructor(message) {
    super(message)
    this.name = 'UsageError'
  }
}

function parseFlags(argv) {
  const flags = { lock: true, churn: false }
  for (let i = 0; i < argv.length; i += 1) {
    const flag = argv[i]
    switch (flag) {
      case 'gateway':
        break
      case '--port':
        flags.port = Number(valueOf(argv, (i += 1), flag))
        break
      case '--listen':
        flags.listen = valueOf(argv, (i += 1), flag)
        break
      case '--timeout':
        flags.timeoutMs = Number(valueOf(argv, (i += 1), flag))
        break
      case '--poll':
        flags.pollIntervalMs = Number(valueOf(argv, (i += 1), flag))
        break
      case '--no-lock':
        flags.lock = false
        break
      case '--churn':
        flags.churn = true
        break
      default:
        throw new UsageError(`unknown flag ${flag}`)
    }
  }
  if (flags.listen !== undefined && flags.port === undefined) {
    throw new UsageError('--listen needs --port')
  }
  return flags
}

function valueOf(argv, index, flag) {
  if (index >= argv.length) throw new UsageError(`${flag} needs a value`)
  return argv[index]
}

function print(line) {
  process.stdout.write(`${line}\n`)
}

function printError(err) {
  const name = err && err.name ? err.name : 'Error'
  const message = err && err.message !== undefined ? String(err.message) : String(err)
  // One line per process is the protocol; Node's module errors span several.
  print(`ERROR ${name}: ${message.replace(/\s*\n\s*/g, ' ')}`)
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

function listen(host, port) {
  return new Promise((resolve, reject) => {
    const server = net.createServer((socket) => socket.on('error', () => {}))
    server.once('error', reject)
    server.listen({ host, port, ipv6Only: host === '::1' }, () => resolve(server))
  })
}

function startChurn() {
  let worker = null
  setInterval(() => {
    Buffer.alloc(CHURN_BYTES, 1)
    // One worker at a time, so a slow start under load cannot pile them up.
    if (worker) return
    worker = new Worker('setTimeout(() => {}, 1000)', { eval: true })
    worker.on('error', () => {})
    worker.once('online', () => worker.terminate())
    worker.once('exit', () => {
      worker = null
    })
  }, CHURN_INTERVAL_MS)
}

function acquireOptions(flags) {
  const options = { allowInTests: true }
  if (flags.port !== undefined) options.port = flags.port
  if (flags.timeoutMs !== undefined) options.timeoutMs = flags.timeoutMs
  if (flags.pollIntervalMs !== undefined) options.pollIntervalMs = flags.pollIntervalMs
  return options
}

function handleShutdown(state) {
  let stopping = false
  const stop = async () => {
    if (stopping) return
    stopping = true
    if (state.server) state.server.close()
    try {
      if (state.handle) await state.handle.release()
    } catch (err) {
      process.stderr.write(`release failed: ${err && err.stack ? err.stack : err}\n`)
      process.exit(1)
    }
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

async function runGateway(loadAcquire) {
  const state = { handle: null, server: null }
  let flags
  try {
    flags = parseFlags(process.argv.slice(2))
  } catch (err) {
    printError(err)
    process.exitCode = 2
    return
  }
  handleShutdown(state)
  // The idle owner needs something that keeps its event loop alive.
  setInterval(() => {}, 1 << 30)
  if (flags.churn) startChurn()

  const goAt = Number(process.env.GO_AT)
  if (Number.isFinite(goAt) && goAt > Date.now()) await sleep(goAt - Date.now())

  if (!flags.lock) {
    try {
      if (flags.listen !== undefined) state.server = await listen(flags.listen, flags.port)
      print(`IDLE ${process.pid}`)
    } catch (err) {
      printError(err)
    }
    return
  }

  try {
    const acquire = await loadAcquire()
    state.handle = await acquire(acquireOptions(flags))
  } catch (err) {
    printError(err)
    return
  }
  if (!state.handle) {
    print(`SKIPPED ${process.pid}`)
    return
  }
  if (flags.listen !== undefined) {
    try {
      state.server = await listen(flags.listen, flags.port)
    } catch (err) {
      const handle = state.handle
      state.handle = null
      await handle.release().catch(() => {})
      printError(err)
      return
    }
  }
  print(`ACQUIRED ${process.pid}`)
}

function loadGatelock() {
  const entry = process.env.GATELOCK_ENTRY
  if (!entry) throw new Error('GATELOCK_ENTRY is not set')
  return require(entry).acquireGatewayLock
}

module.exports = { runGateway }

if (require.main === module) runGateway(async () => loadGatelock())
