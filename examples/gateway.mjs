#!/usr/bin/env node
// A demo gateway: takes the lock for its config (with its port) before it
// listens, answers GET / with its pid, and releases on SIGINT/SIGTERM.
//
//   node examples/gateway.mjs [--port 18789] [--timeout 5000]

import http from 'node:http'
import { createRequire } from 'node:module'
import { parseArgs } from 'node:util'

const require = createRequire(import.meta.url)
const { acquireGatewayLock, GatewayLockError } = require('../index.js')

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '18789' },
    timeout: { type: 'string', default: '5000' },
  },
})
const port = Number(values.port)

let lock
try {
  lock = await acquireGatewayLock(port, {
    timeoutMs: Number(values.timeout),
    allowInTests: true,
    onTelemetry: (event) => {
      if (event.event === 'stale-lock-recovered') {
        console.log(`reclaimed a lock left by pid ${event.ownerPid} (${event.reason})`)
      }
    },
  })
} catch (error) {
  const name = error instanceof GatewayLockError ? 'GatewayLockError' : error.name
  console.error(`${name}: ${error.message}`)
  process.exit(1)
}
console.log(`pid ${process.pid} holds ${lock.lockPath}`)

const server = http.createServer((request, response) => {
  response.end(`gateway pid ${process.pid}\n`)
})
server.listen(port, '127.0.0.1', () => {
  console.log(`listening on http://127.0.0.1:${port}/`)
})

async function stop(signal) {
  console.log(`${signal}: releasing the lock`)
  server.close()
  await lock.release()
  process.exit(0)
}
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
