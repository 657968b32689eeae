// `npm run bench`: gatelock against the TypeScript algorithm (__test__/support/oracle.mjs) on
// this machine, printed as one table. Every measurement works in a fresh temporary directory,
// every child process is started and killed here, and every wait has a bound. The targets of
// the benchmark live here and only here; the test suite asserts none of them.

import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { performance } from 'node:perf_hooks'
import readline from 'node:readline'
import { fileURLToPath } from 'node:url'
import { IMPLS, ORACLE_PATH, ROOT, isTimeout, loadImpl, lockOptions } from './common.mjs'
import { median, nowMs, sleep } from './common.mjs'

const BENCH_DIR = path.dirname(fileURLToPath(import.meta.url))
const AGENT = path.join(BENCH_DIR, 'agent.mjs')
const FOOTPRINT = path.join(BENCH_DIR, 'footprint.mjs')
const THREADPOOL = path.join(BENCH_DIR, 'threadpool.mjs')

// Sized so that the whole run stays well under 3 minutes on a loaded 2-core machine.
const WARMUP_OPS = 100
const UNCONTENDED_BLOCKS = 10
const UNCONTENDED_BLOCK_OPS = 100
const CONTENDED_BLOCKS = 4
const CONTENDED_BLOCK_ATTEMPTS = 250
const HANDOVER_ROUNDS = 8
const RECLAIM_ROUNDS = 10
/** [racers, rounds] */
const RACES = [
  [2, 8],
  [8, 6],
  [32, 4],
]
const RACE_TIMEOUT_MS = 250
const WAITERS = 16
const WAIT_MS = 10_000
const FOOTPRINT_RUNS = 5
const WAITING_TIMEOUT_MS = 5000

// Bounds on waits, far above what a healthy run needs.
const REPLY_MS = 15_000
const START_MS = 60_000
const HELPER_MS = 60_000
const FLOOR_BUILD_MS = 600_000

const runStarted = nowMs()
const children = new Set()
let scratch

const perImpl = (make) => Object.fromEntries(IMPLS.map((impl) => [impl, make(impl)]))
const medians = (samples) => perImpl((impl) => median(samples[impl]))

function bounded(promise, ms, what) {
  let timer
  const expiry = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms)
  })
  return Promise.race([promise, expiry]).finally(() => clearTimeout(timer))
}

// A random pause before the owner goes, so the oracle's 100 ms poll is caught at any phase.
const jitter = () => sleep(20 + Math.random() * 100)

function progress(text) {
  const seconds = ((nowMs() - runStarted) / 1000).toFixed(1).padStart(5)
  process.stderr.write(`[${seconds} s] ${text}\n`)
}

/** Runs a command to its end and resolves with its stdout; kills it past `timeoutMs`. */
function run(command, args, { env = process.env, timeoutMs = HELPER_MS } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    children.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => (stdout += chunk))
    child.stderr.on('data', (chunk) => (stderr += chunk))
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      children.delete(child)
      if (code === 0) return resolve(stdout)
      const why = signal ? `killed by ${signal}` : `exit code ${code}`
      reject(new Error(`${command} ${args.join(' ')}: ${why}\n${stderr.slice(-2000)}`))
    })
  })
}

async function runNode(args, options) {
  const stdout = await run(process.execPath, args, options)
  return JSON.parse(stdout.trim().split('\n').at(-1))
}

/** A bench/agent.mjs child: one JSON command in, one JSON reply out. */
class Agent {
  constructor(impls) {
    this.child = spawn(process.execPath, [AGENT, ...impls], { stdio: 'pipe' })
    children.add(this.child)
    this.replies = []
    this.waiter = null
    this.stderr = ''
    /** The lock it holds, or held last, as an owner: {lockDir, config}. */
    this.where = null
    this.child.stdin.on('error', () => {})
    this.child.stderr.on('data', (chunk) => (this.stderr = (this.stderr + chunk).slice(-2000)))
    const lines = readline.createInterface({ input: this.child.stdout })
    lines.on('line', (line) => this.deliver(JSON.parse(line)))
    this.child.on('exit', () => {
      children.delete(this.child)
      this.deliver({ ev: 'exit', message: `agent ${this.child.pid} exited: ${this.stderr}` })
    })
  }

  deliver(reply) {
    const waiter = this.waiter
    this.waiter = null
    if (waiter) waiter(reply)
    else this.replies.push(reply)
  }

  next(ms = REPLY_MS) {
    if (this.replies.length > 0) return Promise.resolve(this.replies.shift())
    const reply = new Promise((resolve) => (this.waiter = resolve))
    return bounded(reply, ms, `a reply from agent ${this.child.pid}`)
  }

  send(command) {
    this.child.stdin.write(`${JSON.stringify(command)}\n`)
  }

  expect(reply) {
    if (reply.ev === 'error' || reply.ev === 'exit') {
      throw new Error(`agent ${this.child.pid}: ${reply.message}`)
    }
    return reply
  }

  async ask(command, ms) {
    this.send(command)
    return this.expect(await this.next(ms))
  }

  kill() {
    this.child.kill('SIGKILL')
  }

  async killAndWait() {
    this.kill()
    for (let reply = await this.next(); reply.ev !== 'exit'; reply = await this.next()) {
      // A reply sent before the kill; only the exit matters here.
    }
  }
}

async function startAgents(impls, count) {
  const agents = Array.from({ length: count }, () => new Agent(impls))
  await Promise.all(agents.map(async (agent) => agent.expect(await agent.next(START_MS))))
  return agents
}

/** Where one lock lives: a lock directory and the config path that names the file. */
function place(dir, name) {
  return { lockDir: path.join(dir, name), config: path.join(dir, 'openclaw.json') }
}

/**
 * Starts an acquire against a held lock. `waiting` resolves once it has judged the owner
 * and waits (its contention event); `won` once it has the lock, with the time it got it.
 */
function contender(acquire, where) {
  let judged
  const contention = new Promise((resolve) => (judged = resolve))
  const onTelemetry = (event) => event.event === 'acquire-contention' && judged()
  const options = { timeoutMs: WAITING_TIMEOUT_MS, onTelemetry }
  const won = acquire(lockOptions(where.lockDir, where.config, options)).then((handle) => ({
    handle,
    t: nowMs(),
  }))
  const early = won.then(() => {
    throw new Error('the contender got the lock while the owner held it')
  })
  return { waiting: bounded(Promise.race([contention, early]), REPLY_MS, 'contention'), won }
}

// ---- measurements -------------------------------------------------------------------------

async function uncontended(impls, dir) {
  const times = perImpl(() => [])
  const once = async (impl) => {
    const where = place(dir, impl)
    const started = performance.now()
    const handle = await impls[impl](lockOptions(where.lockDir, where.config, { timeoutMs: 1000 }))
    await handle.release()
    return performance.now() - started
  }
  for (const impl of IMPLS) {
    for (let i = 0; i < WARMUP_OPS; i += 1) await once(impl)
  }
  // Blocks in turn, so a change in the machine's load weighs on both sides alike.
  for (let block = 0; block < UNCONTENDED_BLOCKS; block += 1) {
    for (const impl of IMPLS) {
      for (let i = 0; i < UNCONTENDED_BLOCK_OPS; i += 1) times[impl].push(await once(impl))
    }
  }
  return medians(times)
}

function floorArgs() {
  const host = /^host: (\S+)$/m.exec(execFileSync('rustc', ['-vV'], { encoding: 'utf8' }))[1]
  return [
    ...['bench', '--target', host, '--bench', 'floor'],
    // A profile of its own: with the usual bench settings, this build and `napi build` differ
    // only in an environment variable of the build script, so each would rebuild the addon
    // after the other. The timed loop calls libc only; LTO could not change it.
    ...['--config', 'profile.bench.lto=false', '--config', 'profile.bench.codegen-units=16'],
  ]
}

async function buildFloor() {
  try {
    await run('cargo', [...floorArgs(), '--no-run'], { timeoutMs: FLOOR_BUILD_MS })
    return true
  } catch (err) {
    progress(`the syscall floor did not build: ${err.message}`)
    return false
  }
}

/** ms per create + lock + link + unlink, or NaN when it cannot be measured. */
async function floor(dir) {
  try {
    const stdout = await run('cargo', [...floorArgs(), '--', dir])
    const match = /^floor_ns_per_op (\d+)$/m.exec(stdout)
    if (!match) throw new Error(`no floor_ns_per_op line in: ${stdout}`)
    return Number(match[1]) / 1e6
  } catch (err) {
    progress(`the syscall floor did not run: ${err.message}`)
    return NaN
  }
}

async function contended(impls, owners) {
  const attempt = async (impl) => {
    let judgedAt = 0
    let attempts = 1
    // The oracle's timeoutMs 0 makes no attempt at all (SPEC 9); with 1 it makes one, then
    // sleeps out the millisecond, so its clock stops when it has judged the owner.
    const onTelemetry = (event) => {
      if (event.event === 'acquire-contention') judgedAt ||= performance.now()
      if (event.event === 'acquire-timeout') attempts = event.attempts
    }
    const options = impl === 'gatelock' ? { timeoutMs: 0 } : { timeoutMs: 1, onTelemetry }
    const { lockDir, config } = owners[impl].where
    const started = performance.now()
    try {
      await (await impls[impl](lockOptions(lockDir, config, options))).release()
      throw new Error(`${impl} got a lock that its owner holds`)
    } catch (err) {
      if (!isTimeout(err)) throw err
    }
    return { ms: (judgedAt || performance.now()) - started, attempts }
  }
  const times = perImpl(() => [])
  const attempts = perImpl(() => 0)
  const activeMs = perImpl(() => 0)
  for (let block = 0; block < CONTENDED_BLOCKS; block += 1) {
    for (const impl of IMPLS) {
      const before = performance.eventLoopUtilization()
      for (let i = 0; i < CONTENDED_BLOCK_ATTEMPTS; i += 1) {
        const made = await attempt(impl)
        times[impl].push(made.ms)
        attempts[impl] += made.attempts
      }
      activeMs[impl] += performance.eventLoopUtilization(before).active
    }
  }
  return {
    wall: medians(times),
    js: perImpl((impl) => activeMs[impl] / attempts[impl]),
    attempts,
  }
}

async function handOver(impls, owners) {
  const times = perImpl(() => [])
  for (let round = 0; round < HANDOVER_ROUNDS; round += 1) {
    for (const impl of IMPLS) {
      const owner = owners[impl]
      const { waiting, won } = contender(impls[impl], owner.where)
      await waiting
      await jitter()
      const { t: released } = await owner.ask({ op: 'drop' })
      const { handle, t } = await bounded(won, REPLY_MS, `${impl} hand-over`)
      times[impl].push(t - released)
      await handle.release()
      await owner.ask({ op: 'hold', impl, ...owner.where })
    }
  }
  return medians(times)
}

/** The two ways to meet a lock whose owner was just killed; both time from the kill. */
const afterKill = {
  async waiting(acquire, owner, where) {
    const { waiting, won } = contender(acquire, where)
    await waiting
    await jitter()
    const killed = nowMs()
    owner.kill()
    return { ...(await bounded(won, REPLY_MS, 'a reclaim')), killed }
  },
  async fresh(acquire, owner, where) {
    const killed = nowMs()
    owner.kill()
    const options = lockOptions(where.lockDir, where.config, { timeoutMs: WAITING_TIMEOUT_MS })
    const handle = await acquire(options)
    return { handle, t: nowMs(), killed }
  },
}

async function reclaim(impls, dir) {
  const slots = []
  for (let round = 0; round < RECLAIM_ROUNDS; round += 1) {
    for (const impl of IMPLS) {
      for (const kind of Object.keys(afterKill)) {
        slots.push({ impl, kind, where: place(dir, `${impl}-${kind}-${round}`) })
      }
    }
  }
  // Every round's owner is started at once: starting Node costs more than a round.
  const agents = await Promise.all(
    IMPLS.map((impl) => startAgents([impl], slots.length / IMPLS.length)),
  )
  for (const slot of slots) slot.owner = agents[IMPLS.indexOf(slot.impl)].pop()
  await Promise.all(
    slots.map(({ impl, owner, where }) => owner.ask({ op: 'hold', impl, ...where })),
  )
  const times = { waiting: perImpl(() => []), fresh: perImpl(() => []) }
  for (const { impl, kind, owner, where } of slots) {
    const { handle, t, killed } = await afterKill[kind](impls[impl], owner, where)
    times[kind][impl].push(t - killed)
    await handle.release()
  }
  return { waiting: medians(times.waiting), fresh: medians(times.fresh) }
}

async function races(dir, racers, victims) {
  const config = path.join(dir, 'openclaw.json')
  // A lock file left by a process killed with -9, copied into each round's directory.
  const dead = {}
  for (const impl of IMPLS) {
    const where = { lockDir: path.join(dir, `victim-${impl}`), config }
    const { lockPath } = await victims[impl].ask({ op: 'hold', impl, ...where })
    await victims[impl].killAndWait()
    dead[impl] = { name: path.basename(lockPath), bytes: fs.readFileSync(lockPath) }
  }
  const result = {}
  for (const [n, rounds] of RACES) {
    const winners = perImpl(() => [])
    const toWinner = perImpl(() => [])
    for (let round = 0; round < rounds; round += 1) {
      for (const impl of IMPLS) {
        const lockDir = path.join(dir, `${impl}-n${n}-${round}`)
        fs.mkdirSync(lockDir, { mode: 0o700 })
        fs.writeFileSync(path.join(lockDir, dead[impl].name), dead[impl].bytes, { mode: 0o600 })
        const field = racers.slice(0, n)
        const command = { op: 'race', impl, lockDir, config, timeoutMs: RACE_TIMEOUT_MS }
        const started = nowMs()
        for (const racer of field) racer.send(command)
        const replies = await Promise.all(field.map(async (r) => r.expect(await r.next())))
        const won = field.filter((_, i) => replies[i].ev === 'won')
        winners[impl].push(won.length)
        const wonAt = replies.filter((reply) => reply.ev === 'won').map((reply) => reply.t)
        if (wonAt.length > 0) toWinner[impl].push(Math.min(...wonAt) - started)
        await Promise.all(won.map((winner) => winner.ask({ op: 'drop' })))
      }
    }
    result[n] = { winners, toWinner: medians(toWinner) }
  }
  return result
}

async function waitingCost(dir, owners, pool) {
  const replies = []
  for (const [index, impl] of IMPLS.entries()) {
    const owner = owners[impl]
    await owner.ask({ op: 'drop' })
    owner.where = place(dir, impl)
    await owner.ask({ op: 'hold', impl, ...owner.where })
    const waiters = pool.slice(index * WAITERS, (index + 1) * WAITERS)
    for (const waiter of waiters) {
      waiter.send({ op: 'wait', impl, ...owner.where, timeoutMs: WAIT_MS })
      replies.push(waiter.next(WAIT_MS + REPLY_MS).then((reply) => ({ impl, reply })))
    }
  }
  // Both sides wait at once: CPU time, unlike latency, barely feels the other side.
  const cpuSeconds = perImpl(() => 0)
  for (const { impl, reply } of await Promise.all(replies)) {
    if (reply.ev !== 'waited') throw new Error(`a ${impl} waiter: ${reply.message}`)
    cpuSeconds[impl] += reply.cpuUs / 1e6
  }
  return cpuSeconds
}

async function footprint(dir) {
  const runs = perImpl(() => [])
  for (let i = 0; i < FOOTPRINT_RUNS; i += 1) {
    for (const impl of IMPLS) {
      const { lockDir, config } = place(dir, `${impl}-${i}`)
      runs[impl].push(await runNode(['--expose-gc', FOOTPRINT, impl, lockDir, config]))
    }
  }
  const pick = (key) => medians(perImpl((impl) => runs[impl].map((result) => result[key])))
  return { loadMs: pick('loadMs'), rssLoad: pick('rssLoadBytes'), rssHold: pick('rssHoldBytes') }
}

async function threadPool(dir, pool) {
  const result = {}
  for (const impl of IMPLS) {
    const base = path.join(dir, impl)
    const configs = [1, 2, 3].map((k) => path.join(base, 'cfg', `${k}.json`))
    fs.mkdirSync(path.join(base, 'cfg'), { recursive: true })
    for (const config of configs) fs.writeFileSync(config, '{}')
    const lockDir = path.join(base, 'lock')
    const owners = pool.slice(0, configs.length)
    await Promise.all(
      owners.map((o, k) => o.ask({ op: 'hold', impl, lockDir, config: configs[k] })),
    )
    const spec = JSON.stringify({ impl, lockDir, configs, readPath: configs[0] })
    const env = { ...process.env, UV_THREADPOOL_SIZE: '2' }
    result[impl] = await runNode([THREADPOOL, spec], { env })
    await Promise.all(owners.map((owner) => owner.ask({ op: 'drop' })))
  }
  return result
}

// ---- the binary --------------------------------------------------------------------------

/** The section names of a 64-bit little-endian ELF file, such as the addon. */
function elfSections(file) {
  const buf = fs.readFileSync(file)
  if (buf.readUInt32BE(0) !== 0x7f454c46 || buf[4] !== 2 || buf[5] !== 1) return []
  const tableAt = Number(buf.readBigUInt64LE(0x28))
  const entrySize = buf.readUInt16LE(0x3a)
  const count = buf.readUInt16LE(0x3c)
  const namesAt = Number(buf.readBigUInt64LE(tableAt + buf.readUInt16LE(0x3e) * entrySize + 0x18))
  return Array.from({ length: count }, (_, i) => {
    const start = namesAt + buf.readUInt32LE(tableAt + i * entrySize)
    return buf.toString('latin1', start, buf.indexOf(0, start))
  })
}

/**
 * Loads the addon from a private copy of the built .node, so that a build started elsewhere
 * during the run cannot swap it under later child processes, which inherit the override.
 * Refuses a debug build: its figures say nothing about what users run.
 */
async function loadPinned(dir) {
  const name = `gatelock.${process.platform}-${process.arch}-gnu.node`
  const source = path.join(ROOT, name)
  if (!fs.existsSync(source)) throw new Error(`no ${name}: run \`npm run build\` first`)
  const copy = path.join(dir, name)
  fs.copyFileSync(source, copy)
  if (elfSections(copy).includes('.debug_info')) {
    throw new Error(`${source} is a debug build: run \`npm run build\` first`)
  }
  process.env.NAPI_RS_NATIVE_LIBRARY_PATH = copy
  const impls = {}
  for (const impl of IMPLS) impls[impl] = await loadImpl(impl)
  const maps = fs.readFileSync('/proc/self/maps', 'utf8').split('\n')
  const loaded = new Set(
    maps.map((line) => line.split(/\s+/)[5]).filter((p) => p?.endsWith('.node')),
  )
  if (loaded.size !== 1 || !loaded.has(copy)) {
    throw new Error(`expected ${copy} to be loaded, found: ${[...loaded].join(', ')}`)
  }
  return { impls, source, size: fs.statSync(copy).size }
}

// ---- the table ---------------------------------------------------------------------------

function ms(value) {
  if (!Number.isFinite(value)) return 'n/a'
  if (value < 1) return `${(value * 1000).toFixed(value < 0.1 ? 1 : 0)} µs`
  return `${value.toFixed(value < 10 ? 2 : 1)} ms`
}

function bytes(value) {
  if (value < 1024 * 1024) return `${(value / 1024).toFixed(0)} KB`
  return `${(value / 1024 / 1024).toFixed(2)} MB`
}

const seconds = (value) => `${value.toFixed(3)} s`
const ratioText = (value) => (Number.isFinite(value) ? `${value.toFixed(2)}×` : 'n/a')
const verdict = (met) => (met === undefined ? '—' : met ? 'yes' : 'NO')

function winnersText(counts) {
  const [low, high] = [Math.min(...counts), Math.max(...counts)]
  const ones = counts.filter((count) => count === 1).length
  return `${low === high ? low : `${low}–${high}`}; 1 in ${ones}/${counts.length} rounds`
}

function rows(r) {
  const out = []
  const add = (name, cells, ratio, target = '—', met = undefined) => {
    const ratioCell = ratio === undefined ? '—' : ratioText(ratio)
    out.push([name, ...cells, ratioCell, target, verdict(met)])
  }
  // Medians where lower is better; `met(ratio, pair)` judges the target, if there is one.
  const versus = (name, pair, format, target, met) => {
    const ratio = pair.oracle / pair.gatelock
    add(
      name,
      IMPLS.map((impl) => format(pair[impl])),
      ratio,
      target,
      met?.(ratio, pair),
    )
  }
  const under5ms = (_, pair) => pair.gatelock < 5

  versus('uncontended acquire + release', r.uncontended, ms, '≥ 3×', (x) => x >= 3)
  const floorRatio = r.floor / r.uncontended.gatelock
  add(
    '  the same, against the syscall floor',
    [ms(r.uncontended.gatelock), `floor ${ms(r.floor)}`],
    floorRatio,
    '≥ 0.33× (within 3×)',
    Number.isFinite(floorRatio) ? floorRatio >= 1 / 3 : undefined,
  )
  versus('contended attempt (owner alive), wall', r.contended.wall, ms)
  versus('contended attempt, JS-thread time', r.contended.js, ms, '≥ 5×', (x) => x >= 5)
  versus('reclaim after kill -9, contender waiting', r.reclaim.waiting, ms, '< 5 ms', under5ms)
  versus('reclaim after kill -9, fresh start', r.reclaim.fresh, ms)
  versus('hand-over after release()', r.handOver, ms, '< 5 ms', under5ms)
  for (const [n] of RACES) {
    const { winners, toWinner } = r.races[n]
    const allOne = winners.gatelock.every((count) => count === 1)
    const cells = IMPLS.map((impl) => winnersText(winners[impl]))
    add(`race of ${n} for a dead lock: winners`, cells, undefined, 'exactly 1 a round', allOne)
    versus(`race of ${n}: time to the winner`, toWinner, ms)
  }
  const waitingName = `${WAITERS} waiters for ${WAIT_MS / 1000} s: CPU time`
  versus(waitingName, r.waiting, seconds, 'below the oracle', (x) => x > 1)
  versus('require (oracle: import) time', r.footprint.loadMs, ms)
  add('.node size', [bytes(r.binarySize), `${bytes(r.oracleSize)} (JS source)`])
  versus('resident memory added by loading', r.footprint.rssLoad, bytes)
  versus('resident memory added by one held lock', r.footprint.rssHold, bytes)
  for (const name of Object.keys(r.threadPool.gatelock.measures)) {
    const of = (impl) => r.threadPool[impl].measures[name]
    const cells = IMPLS.map((impl) => `${ms(of(impl).waiting)} (idle ${ms(of(impl).idle)})`)
    const { idle, waiting } = of('gatelock')
    const ratio = of('oracle').waiting / waiting
    add(`B23: ${name}, 3 acquires waiting`, cells, ratio, '≤ 1.2× idle', waiting <= 1.2 * idle)
  }
  return out
}

function printTable(table) {
  const header = ['measurement', 'gatelock median', 'oracle median', 'ratio', 'target', 'met?']
  const all = [header, ...table]
  const widths = header.map((_, c) => Math.max(...all.map((row) => row[c].length)))
  const line = (row) => row.map((cell, c) => cell.padEnd(widths[c])).join('  ')
  console.log(line(header))
  console.log(line(widths.map((width) => '-'.repeat(width))))
  for (const row of table) console.log(line(row).trimEnd())
}

// ---- main ---------------------------------------------------------------------------------

function cleanUp() {
  for (const child of children) child.kill('SIGKILL')
  if (scratch) fs.rmSync(scratch, { recursive: true, force: true })
}

const loadAverage = () =>
  `${os
    .loadavg()
    .map((load) => load.toFixed(2))
    .join(' ')} (1, 5, 15 min)`

async function main() {
  if (process.platform !== 'linux') throw new Error('the benchmark runs on Linux only')
  scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'gatelock-bench-'))
  const fresh = (name) => fs.mkdtempSync(path.join(scratch, `${name}-`))
  const { impls, source, size } = await loadPinned(scratch)

  const cpus = os.cpus()
  const memory = `${(os.totalmem() / 2 ** 30).toFixed(1)} GiB`
  console.log(`machine: ${cpus[0].model}, ${cpus.length} cores, ${memory}`)
  console.log(`node:    ${process.version}`)
  console.log(
    `build:   release (${path.relative(ROOT, source)}, no debug info; loaded from a copy)`,
  )
  console.log(`date:    ${new Date().toISOString()}`)
  console.log(`load:    ${loadAverage()} at the start`)

  const r = { binarySize: size, oracleSize: fs.statSync(ORACLE_PATH).size }
  progress('building the syscall floor (cargo bench --no-run; slow only the first time)')
  const floorBuilt = await buildFloor()

  progress('uncontended acquire + release, then the syscall floor')
  r.uncontended = await uncontended(impls, fresh('uncontended'))
  r.floor = floorBuilt ? await floor(fresh('floor')) : NaN

  progress('contended attempts, then hand-over after release()')
  const contendedDir = fresh('contended')
  const ownerAgents = await Promise.all(IMPLS.map((impl) => startAgents([impl], 1)))
  const owners = perImpl((impl) => ownerAgents[IMPLS.indexOf(impl)][0])
  for (const impl of IMPLS) {
    owners[impl].where = place(contendedDir, impl)
    await owners[impl].ask({ op: 'hold', impl, ...owners[impl].where })
  }
  r.contended = await contended(impls, owners)
  r.handOver = await handOver(impls, owners)

  progress('reclaim after kill -9')
  r.reclaim = await reclaim(impls, fresh('reclaim'))

  progress('require time and resident memory')
  r.footprint = await footprint(fresh('footprint'))

  progress('starting racers')
  const poolSize = Math.max(...RACES.map(([n]) => n), IMPLS.length * WAITERS)
  const [pool, victims] = await Promise.all([
    startAgents(IMPLS, poolSize),
    startAgents(IMPLS, IMPLS.length),
  ])
  progress('races for a dead lock')
  r.races = await races(
    fresh('race'),
    pool,
    perImpl((impl) => victims[IMPLS.indexOf(impl)]),
  )

  progress('thread pool and event loop while acquires wait (B23)')
  r.threadPool = await threadPool(fresh('threadpool'), pool)

  progress(`cost of waiting: ${WAITERS} waiters a side for ${WAIT_MS / 1000} s`)
  r.waiting = await waitingCost(fresh('waiting'), owners, pool)

  console.log()
  printTable(rows(r))
  console.log()
  const made = IMPLS.map((impl) => `${impl} ${r.contended.attempts[impl]}`).join(', ')
  const notes = [
    'ratio: oracle ÷ gatelock, so above 1 gatelock is better; floor row: floor ÷ gatelock.',
    'contended attempt: gatelock with timeoutMs 0 (one attempt), timed to its rejection; the',
    "  oracle's 0 makes no attempt, so it runs with 1 and is timed to its contention event;",
    `  attempts made: ${made}. JS-thread time is event-loop active time ÷ attempts.`,
    'reclaim: timed from the kill(2) call; hand-over: from just before release().',
    `race: losers give up after ${RACE_TIMEOUT_MS} ms; a dead lock is the file of a killed owner.`,
    'B23: UV_THREADPOOL_SIZE=2, three acquires (timeout 4 s, poll 1 s) on live owners.',
  ]
  for (const impl of IMPLS) {
    if (!r.threadPool[impl].waitedThrough) {
      const acquires = JSON.stringify(r.threadPool[impl].acquires)
      notes.push(`B23 ${impl}: not every acquire waited through the samples: ${acquires}`)
    }
  }
  for (const note of notes) console.log(note)
  console.log(`load:    ${loadAverage()} at the end`)
  console.log(`total:   ${((nowMs() - runStarted) / 1000).toFixed(1)} s`)
}

for (const [signal, code] of [
  ['SIGINT', 130],
  ['SIGTERM', 143],
]) {
  process.on(signal, () => {
    cleanUp()
    process.exit(code)
  })
}

main()
  .then(
    () => 0,
    (err) => {
      console.error(`bench failed: ${err.stack ?? err}`)
      return 1
    },
  )
  .then((code) => {
    cleanUp()
    process.exit(code)
  })
