'use strict'

// One stress worker, started by run.mjs with its settings as a JSON argument. It loops
// WAITING, acquire, ACQUIRED, hold, RELEASING, release, RELEASED, and appends each step
// to the shared log with process.hrtime.bigint() (CLOCK_MONOTONIC, one clock for every process
// on Linux). It stops after the current round when the controller says 'stop' or goes away.

const fs = require('node:fs')
const path = require('node:path')

const { acquireGatewayLock } = require(path.resolve(__dirname, '../../index.js'))

const config = JSON.parse(process.argv[2])
// 'a' is O_APPEND: every line is one write at the end of the file, whoever else writes.
const fd = fs.openSync(config.log, 'a')
let stopping = false

function log(type, extra) {
  const tail = extra === undefined ? '' : ` ${JSON.stringify(extra)}`
  fs.writeSync(fd, `${process.hrtime.bigint()} ${type} ${process.pid} ${config.slot}${tail}\n`)
}

function tell(state) {
  if (process.connected) process.send(state, () => {})
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

function describe(error) {
  return { code: error?.code ?? null, message: String(error?.message ?? error) }
}

process.on('message', (message) => {
  if (message === 'stop') stopping = true
})
process.on('disconnect', () => {
  stopping = true
})

// Backstops in case the controller can no longer stop us: finish the round, then quit.
setTimeout(() => {
  stopping = true
}, config.lifetimeMs).unref()
setTimeout(() => process.exit(3), config.lifetimeMs + config.timeoutMs + 5000).unref()

async function round() {
  log('WAITING')
  tell('waiting')
  let handle
  try {
    handle = await acquireGatewayLock({
      env: config.env,
      lockDir: config.lockDir,
      timeoutMs: config.timeoutMs,
      pollIntervalMs: config.pollIntervalMs,
      allowInTests: true,
    })
  } catch (error) {
    if (error?.code === 'ELOCKED') {
      log('TIMEOUT', describe(error))
      tell('idle')
      return true
    }
    log('ERROR', describe(error))
    return false
  }
  if (!handle) {
    log('ERROR', { code: null, message: `acquire resolved ${handle}` })
    return false
  }
  log('ACQUIRED')
  tell('holding')
  await sleep(Math.random() * config.holdMs)
  log('RELEASING')
  tell('releasing')
  try {
    await handle.release()
  } catch (error) {
    log('ERROR', describe(error))
    return false
  }
  log('RELEASED')
  tell('idle')
  return true
}

async function main() {
  log('START')
  while (!stopping) {
    if (!(await round())) return 2
  }
  log('DONE')
  return 0
}

main().then(
  (code) => {
    fs.closeSync(fd)
    process.exit(code)
  },
  (error) => {
    process.stderr.write(`${error?.stack ?? error}\n`)
    process.exit(2)
  },
)
