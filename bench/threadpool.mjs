// Field failure B23 as a measurement: the latency of thread-pool calls (fs, crypto, dns,
// zlib) and the event-loop delay while three acquires wait on live owners, against the same
// with none waiting. Run with UV_THREADPOOL_SIZE=2 (the orchestrator sets it), and with the
// three owners already holding. Usage: `node bench/threadpool.mjs '<json>'`, json =
// {impl, lockDir, configs: [3 paths], readPath}. Prints one JSON line: {measures: {name:
// {idle, waiting}}, waitedThrough, acquires}, the measures being medians and a p99, in ms.

import crypto from 'node:crypto'
import dns from 'node:dns'
import fsp from 'node:fs/promises'
import { monitorEventLoopDelay, performance } from 'node:perf_hooks'
import { promisify } from 'node:util'
import zlib from 'node:zlib'
import { isTimeout, loadImpl, lockOptions, median, sleep } from './common.mjs'

// The scenario's acquires: they wait 4 s and poll once a second.
const ACQUIRE_TIMEOUT_MS = 4000
const ACQUIRE_POLL_MS = 1000
// The scenario samples from 500 ms to 3500 ms; every 50 ms rather than 250 ms gives a
// median of 60 samples per call instead of 12. The idle run is split around the waiting
// one so that a change in the machine's load during the run weighs on both alike.
const WAIT_FROM_MS = 500
const WAIT_SAMPLE_MS = 3000
const IDLE_SAMPLE_MS = 1500
const TICK_MS = 50
const WARMUP_ROUNDS = 5
const DELAY_RESOLUTION_MS = 5

const { impl, lockDir, configs, readPath } = JSON.parse(process.argv[2])
const pbkdf2 = promisify(crypto.pbkdf2)
const gzip = promisify(zlib.gzip)
const kilobyte = crypto.randomBytes(1024)
const calls = {
  fs: () => fsp.readFile(readPath),
  crypto: () => pbkdf2('secret', 'salt', 1, 32, 'sha256'),
  dns: () => dns.promises.lookup('localhost'),
  zlib: () => gzip(kilobyte),
}

function samples() {
  return Object.fromEntries(Object.keys(calls).map((kind) => [kind, []]))
}

async function sample(durationMs, into, delay) {
  delay.enable()
  const end = performance.now() + durationMs
  while (performance.now() < end) {
    const tick = performance.now()
    for (const [kind, call] of Object.entries(calls)) {
      const started = performance.now()
      await call()
      into[kind].push(performance.now() - started)
    }
    await sleep(Math.max(0, tick + TICK_MS - performance.now()))
  }
  delay.disable()
}

const acquire = await loadImpl(impl)
// First calls pay for lazy set-up (the pool's threads, OpenSSL, the resolver).
for (let i = 0; i < WARMUP_ROUNDS; i += 1) {
  for (const call of Object.values(calls)) await call()
}

const idle = samples()
const waiting = samples()
const idleDelay = monitorEventLoopDelay({ resolution: DELAY_RESOLUTION_MS })
const waitingDelay = monitorEventLoopDelay({ resolution: DELAY_RESOLUTION_MS })

await sample(IDLE_SAMPLE_MS, idle, idleDelay)
const started = performance.now()
const options = { timeoutMs: ACQUIRE_TIMEOUT_MS, pollIntervalMs: ACQUIRE_POLL_MS }
const acquires = configs.map((config) =>
  acquire(lockOptions(lockDir, config, options)).then(
    async (handle) => {
      await handle.release()
      return { outcome: 'acquired', ms: performance.now() - started }
    },
    (err) => ({
      outcome: isTimeout(err) ? 'timeout' : err.message,
      ms: performance.now() - started,
    }),
  ),
)
await sleep(WAIT_FROM_MS)
await sample(WAIT_SAMPLE_MS, waiting, waitingDelay)
const settled = await Promise.all(acquires)
await sample(IDLE_SAMPLE_MS, idle, idleDelay)

const measures = {}
for (const kind of Object.keys(calls)) {
  measures[`${kind} call`] = { idle: median(idle[kind]), waiting: median(waiting[kind]) }
}
measures['event-loop delay p99'] = {
  idle: idleDelay.percentile(99) / 1e6,
  waiting: waitingDelay.percentile(99) / 1e6,
}
// The waiting samples count only if all three acquires were still waiting when they ended.
const waitedThrough = settled.every(
  ({ outcome, ms }) => outcome === 'timeout' && ms >= WAIT_FROM_MS + WAIT_SAMPLE_MS,
)
process.stdout.write(`${JSON.stringify({ measures, waitedThrough, acquires: settled })}\n`)
