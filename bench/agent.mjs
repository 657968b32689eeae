// A lock-taking child of the benchmark: owner, waiter or racer, as it is told. Usage:
// `node bench/agent.mjs <impl>...` loads those implementations, prints {"ev":"ready"}, then
// runs one JSON command per stdin line, in order, and answers each with one JSON line:
//   hold {impl, lockDir, config}            -> held           (keeps the handle)
//   race {impl, lockDir, config, timeoutMs} -> won {t} | lost (a winner keeps the handle)
//   drop                                    -> dropped {t}    (t: just before release())
//   wait {impl, lockDir, config, timeoutMs} -> waited {cpuUs} (the lock must stay held)
// Any failure answers {"ev":"error","message"}. Times are nowMs(), comparable across processes.
// It exits when stdin ends; the orchestrator also kills it, with SIGKILL when that is the test.

import readline from 'node:readline'
import { isTimeout, loadImpl, lockOptions, nowMs } from './common.mjs'

const HOLD_TIMEOUT_MS = 5000

const impls = {}
for (const name of process.argv.slice(2)) impls[name] = await loadImpl(name)
let held = null

function acquire(cmd, extra) {
  const acquireLock = impls[cmd.impl]
  if (!acquireLock) throw new Error(`implementation ${cmd.impl} is not loaded`)
  return acquireLock(lockOptions(cmd.lockDir, cmd.config, extra))
}

const ops = {
  async hold(cmd) {
    if (held) throw new Error('already holding a lock')
    held = await acquire(cmd, { timeoutMs: HOLD_TIMEOUT_MS })
    return { ev: 'held', lockPath: held.lockPath }
  },
  async race(cmd) {
    if (held) throw new Error('already holding a lock')
    try {
      held = await acquire(cmd, { timeoutMs: cmd.timeoutMs })
      return { ev: 'won', t: nowMs() }
    } catch (err) {
      if (!isTimeout(err)) throw err
      return { ev: 'lost' }
    }
  },
  async drop() {
    const handle = held
    held = null
    const t = nowMs()
    await handle?.release()
    return { ev: 'dropped', t }
  },
  async wait(cmd) {
    const before = process.cpuUsage()
    try {
      const handle = await acquire(cmd, { timeoutMs: cmd.timeoutMs })
      await handle.release()
      throw new Error('a waiter got a lock that should have stayed held')
    } catch (err) {
      if (!isTimeout(err)) throw err
    }
    const used = process.cpuUsage(before)
    return { ev: 'waited', cpuUs: used.user + used.system }
  },
}

function reply(message) {
  process.stdout.write(`${JSON.stringify(message)}\n`)
}

reply({ ev: 'ready' })
for await (const line of readline.createInterface({ input: process.stdin })) {
  try {
    const cmd = JSON.parse(line)
    const op = ops[cmd.op]
    if (!op) throw new Error(`unknown op ${cmd.op}`)
    reply(await op(cmd))
  } catch (err) {
    reply({ ev: 'error', message: String(err?.message ?? err) })
  }
}
await held?.release().catch(() => {})
