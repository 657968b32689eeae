// Stress run: N workers (worker.cjs) loop acquire → hold → release on one lock while a chaos
// loop SIGKILLs holders and waiters and restarts them; then check.mjs judges the shared log.
//
//   node __test__/stress/run.mjs [--workers 8] [--rounds 200] [--poll 100] [--bound poll+50]
//     [--kill-every 100] [--hold 25] [--timeout 5000] [--time-limit 120000] [--keep] [--json]
//
// Exits 0 when the log has no overlap, no stuck round, no unexplained death, and the lock
// directory holds no temporary file; otherwise 1, keeping the sandbox and printing its path.

import { fork } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'

import { checkLog, excerpt } from './check.mjs'

const HERE = path.dirname(fileURLToPath(import.meta.url))
const WORKER = path.join(HERE, 'worker.cjs')
const TEMP_NAME = /^\.gateway\..*\.tmp$/
const MAX_UNEXPECTED_DEATHS = 3
const EXIT_WAIT_MS = 5000

export const DEFAULTS = {
  workers: 8,
  rounds: 200,
  poll: 100,
  bound: undefined,
  killEvery: 100,
  hold: 25,
  timeout: 5000,
  timeLimit: 120000,
  keep: false,
}

// Every worker of every run in this process, so an exit or a signal can kill them all.
const allChildren = new Set()

export function killAllChildren() {
  for (const child of allChildren) {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
}

function now() {
  return process.hrtime.bigint()
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

/** Resolves true when the promise settles within ms, else false; leaves no timer behind. */
function settlesWithin(promise, ms) {
  let timer
  const expiry = new Promise((resolve) => {
    timer = setTimeout(() => resolve(false), ms)
  })
  return Promise.race([promise.then(() => true), expiry]).finally(() => clearTimeout(timer))
}

function pick(list) {
  return list[Math.floor(Math.random() * list.length)]
}

function makeSandbox() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'gatelock-stress-'))
  const tmp = path.join(root, 'tmp')
  fs.mkdirSync(tmp, { mode: 0o700 })
  const home = path.join(root, 'home')
  fs.mkdirSync(home)
  const config = path.join(root, 'cfg', 'openclaw.json')
  fs.mkdirSync(path.dirname(config))
  fs.writeFileSync(config, '{}')
  const uid = typeof process.getuid === 'function' ? process.getuid() : null
  const lockDir = path.join(tmp, uid === null ? 'openclaw' : `openclaw-${uid}`)
  return { root, tmp, home, config, lockDir, log: path.join(root, 'stress.log') }
}

// Without the runner's variables, so a worker is a plain process whatever starts the run.
function childEnv(sandbox) {
  const env = {}
  for (const [key, value] of Object.entries(process.env)) {
    if (key === 'VITEST' || key.startsWith('VITEST_') || key === 'NODE_ENV') continue
    if (key === 'OPENCLAW_ALLOW_MULTI_GATEWAY' || key === 'NODE_OPTIONS') continue
    env[key] = value
  }
  return { ...env, TMPDIR: sandbox.tmp, HOME: sandbox.home }
}

/**
 * Runs the stress test and resolves its report; never rejects for a failed check (see
 * report.failures). options: DEFAULTS' keys, plus `signal` (an AbortSignal: kill everything
 * and report) and `onProgress` (a function given one line of progress at a time).
 */
export async function runStress(options = {}) {
  const opts = { ...DEFAULTS, ...options }
  const boundMs = opts.bound ?? opts.poll + 50
  const sandbox = makeSandbox()
  const logFd = fs.openSync(sandbox.log, 'a')
  const env = childEnv(sandbox)
  const workerConfig = {
    log: sandbox.log,
    lockDir: sandbox.lockDir,
    env: { OPENCLAW_CONFIG_PATH: sandbox.config, HOME: sandbox.home },
    pollIntervalMs: opts.poll,
    timeoutMs: opts.timeout,
    holdMs: opts.hold,
    lifetimeMs: opts.timeLimit + 1000,
  }
  const records = new Set()
  const controllerFailures = []
  const deathNotes = []
  let stopping = false
  let acquired = 0
  let onHolder = null
  let unexpectedDeaths = 0
  let finish
  const finished = new Promise((resolve) => {
    finish = resolve
  })

  function write(t, type, pid, slot, extra) {
    fs.writeSync(logFd, `${t} ${type} ${pid} ${slot} ${JSON.stringify(extra)}\n`)
  }

  function spawnWorker(slot) {
    const config = JSON.stringify({ ...workerConfig, slot })
    const child = fork(WORKER, [config], {
      env,
      execArgv: [],
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    })
    const record = { slot, child, pid: child.pid, state: 'starting', killed: false, stderr: '' }
    record.exited = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        write(now(), 'EXIT', record.pid, slot, { code, signal })
        allChildren.delete(child)
        records.delete(record)
        record.state = 'exited'
        if (!record.killed && !(stopping && code === 0)) {
          unexpectedDeaths += 1
          const stderr = record.stderr.trim().split('\n').slice(-8).join('\n')
          deathNotes.push({ pid: record.pid, slot, code, signal, stderr })
          opts.onProgress?.(`worker ${record.pid} exited: code ${code} signal ${signal}`)
          if (!stopping && unexpectedDeaths >= MAX_UNEXPECTED_DEATHS) finish('deaths')
        }
        if (!stopping) spawnWorker(slot)
        resolve()
      })
    })
    child.once('error', (error) => {
      controllerFailures.push(`could not run worker in slot ${slot}: ${error.message}`)
      finish('spawn-error')
    })
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (chunk) => {
      record.stderr = (record.stderr + chunk).slice(-4000)
    })
    child.on('message', (state) => {
      if (record.state === 'exited') return
      record.state = state
      if (state === 'holding') {
        onHolder?.(record)
        acquired += 1
        if (acquired >= opts.rounds) finish('rounds')
      }
    })
    write(now(), 'SPAWN', record.pid, slot, {})
    allChildren.add(child)
    records.add(record)
    return record
  }

  function kill(record, reason) {
    if (record.killed || record.child.exitCode !== null || record.child.signalCode !== null) {
      return false
    }
    record.killed = true
    const holding = isHolding(record)
    // The time is taken before the signal: a hold then never looks longer than it was.
    const t = now()
    record.child.kill('SIGKILL')
    write(t, 'KILL', record.pid, record.slot, { holding, reason })
    return true
  }

  const isHolding = (record) => record.state === 'holding' || record.state === 'releasing'

  function nextHolder(ms) {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        onHolder = null
        resolve(null)
      }, ms)
      onHolder = (record) => {
        clearTimeout(timer)
        onHolder = null
        resolve(record)
      }
    })
  }

  // Holds last a few ms and a state report lags behind, so a holder picked from the states
  // has often let go already: take the next one that reports, at a random point of its hold.
  async function pickHolder() {
    const record = await nextHolder(opts.killEvery)
    if (record === null) return null
    await sleep((Math.random() * opts.hold) / 2)
    return isHolding(record) && !record.killed ? record : null
  }

  function pickWaiter() {
    const waiters = [...records].filter((r) => r.state === 'waiting' && !r.killed)
    return waiters.length > 0 ? pick(waiters) : null
  }

  async function chaos() {
    // Alternating keeps holder kills, the ones that need a reclaim, about half of all.
    let holderTurn = true
    let kills = 0
    while (!stopping) {
      await sleep(opts.killEvery * (0.5 + Math.random()))
      if (stopping) return
      const victim = holderTurn ? await pickHolder() : pickWaiter()
      if (victim === null || stopping || !kill(victim, 'chaos')) continue
      holderTurn = !holderTurn
      kills += 1
      if (kills % 10 === 0) opts.onProgress?.(`${acquired} rounds, ${kills} kills`)
    }
  }

  const started = now()
  const limit = setTimeout(() => finish('time-limit'), opts.timeLimit)
  const onAbort = () => finish('aborted')
  opts.signal?.addEventListener('abort', onAbort, { once: true })
  if (opts.signal?.aborted) finish('aborted')

  for (let slot = 0; slot < opts.workers; slot += 1) spawnWorker(slot)
  const chaosDone = chaos()
  const why = await finished
  stopping = true
  clearTimeout(limit)
  opts.signal?.removeEventListener('abort', onAbort)
  await chaosDone

  if (why === 'aborted') {
    for (const record of [...records]) kill(record, 'abort')
  } else {
    for (const record of records) {
      if (record.child.connected) record.child.send('stop', () => {})
    }
  }
  const grace = opts.timeout + opts.hold + 5000
  const allExited = () => Promise.all([...records].map((record) => record.exited))
  if (!(await settlesWithin(allExited(), grace))) {
    for (const record of [...records]) {
      controllerFailures.push(`worker ${record.pid} did not stop within ${grace} ms`)
      kill(record, 'shutdown')
    }
    await settlesWithin(allExited(), EXIT_WAIT_MS)
  }
  const durationMs = Number(now() - started) / 1e6
  fs.closeSync(logFd)

  if (why === 'aborted') controllerFailures.push('interrupted')
  if (why === 'time-limit') {
    controllerFailures.push(`only ${acquired} of ${opts.rounds} rounds in ${opts.timeLimit} ms`)
  }
  if (why === 'deaths') controllerFailures.push(`stopped after ${unexpectedDeaths} worker deaths`)

  const result = checkLog(fs.readFileSync(sandbox.log, 'utf8'), { boundMs })
  let leftovers = []
  try {
    leftovers = fs.readdirSync(sandbox.lockDir).filter((name) => TEMP_NAME.test(name))
  } catch (error) {
    if (error.code !== 'ENOENT') controllerFailures.push(`cannot list lock dir: ${error.message}`)
  }
  const failures = [...result.failures, ...controllerFailures]
  if (leftovers.length > 0) failures.push(`${leftovers.length} leftover temporary file(s)`)
  if (why !== 'aborted' && result.kills.holders === 0) {
    failures.push('the chaos loop killed no holder')
  }

  const ok = failures.length === 0
  if (ok && !opts.keep) fs.rmSync(sandbox.root, { recursive: true, force: true })
  return {
    ok,
    failures,
    settings: { ...opts, bound: boundMs, signal: undefined, onProgress: undefined },
    stoppedBy: why,
    durationMs,
    rounds: result.rounds,
    kills: result.kills,
    overlaps: result.overlaps.length,
    reclaim: result.reclaims,
    stuck: result.stuck.length,
    leftovers,
    deathNotes,
    check: result,
    sandbox: ok && !opts.keep ? null : sandbox.root,
    logPath: sandbox.log,
  }
}

function ms(value) {
  return value === null ? '-' : `${value.toFixed(1)} ms`
}

/** The report as printed lines; the log excerpts behind each failure follow the summary. */
export function formatReport(report) {
  const { settings: s, kills, reclaim, check } = report
  const lines = [
    `gatelock stress: ${s.workers} workers, poll ${s.poll} ms, reclaim bound ${s.bound} ms, ` +
      `kill every ~${s.killEvery} ms, hold < ${s.hold} ms`,
    `rounds     ${report.rounds} (target ${s.rounds})`,
    `kills      ${kills.total} (holders ${kills.holders}, waiters ${kills.waiters}, ` +
      `other ${kills.other})`,
    `overlaps   ${report.overlaps}`,
    `reclaim    worst ${ms(reclaim.worstMs)}, median ${ms(reclaim.medianMs)} ` +
      `(${reclaim.measured} measured, ${reclaim.unmeasured} unmeasured)`,
    `stuck      ${report.stuck}`,
    `leftovers  ${report.leftovers.length}${report.leftovers.map((n) => ` ${n}`).join('')}`,
    `deaths     ${check.deaths.length} not by the chaos loop`,
    `duration   ${(report.durationMs / 1000).toFixed(1)} s`,
    `result     ${report.ok ? 'PASS' : `FAIL: ${report.failures.join('; ')}`}`,
  ]
  const findings = [
    ...check.overlaps.map((o) => [`overlap: ${o.first.pid} and ${o.second.pid}`, o.at]),
    ...check.stuck.map((x) => [`stuck (${x.kind}): ${JSON.stringify(x, bigints)}`, x.at]),
    ...check.deaths.map((d) => [`death: ${JSON.stringify(d, bigints)}`, d.at]),
    ...check.errors.map((e) => [`error: ${JSON.stringify(e, bigints)}`, e.at]),
    ...check.protocol.map((p) => [`protocol: ${p.pid} ${p.why}`, p.at]),
  ]
  for (const [title, at] of findings.slice(0, 10)) {
    lines.push('', title, ...excerpt(check.events, at).map((line) => `  ${line}`))
  }
  for (const { line } of check.malformed.slice(0, 10)) lines.push(`malformed: ${line}`)
  for (const note of report.deathNotes) {
    const { pid, slot, code, signal } = note
    const title = `worker ${pid} (slot ${slot}) died: code ${code}, signal ${signal}; its stderr:`
    lines.push('', title, ...note.stderr.split('\n').map((l) => `  ${l}`))
  }
  if (report.sandbox) lines.push('', `sandbox kept: ${report.sandbox} (log ${report.logPath})`)
  return lines
}

function bigints(_key, value) {
  return typeof value === 'bigint' ? value.toString() : value
}

function cliOptions(argv) {
  const { values } = parseArgs({
    args: argv,
    options: {
      workers: { type: 'string' },
      rounds: { type: 'string' },
      poll: { type: 'string' },
      bound: { type: 'string' },
      'kill-every': { type: 'string' },
      hold: { type: 'string' },
      timeout: { type: 'string' },
      'time-limit': { type: 'string' },
      keep: { type: 'boolean' },
      json: { type: 'boolean' },
    },
  })
  const options = { keep: values.keep === true }
  const names = { 'kill-every': 'killEvery', 'time-limit': 'timeLimit' }
  for (const flag of [
    'workers',
    'rounds',
    'poll',
    'bound',
    'kill-every',
    'hold',
    'timeout',
    'time-limit',
  ]) {
    if (values[flag] === undefined) continue
    const value = Number(values[flag])
    if (!Number.isInteger(value) || value < 1) throw new Error(`--${flag} must be an integer >= 1`)
    options[names[flag] ?? flag] = value
  }
  return { options, json: values.json === true }
}

async function main() {
  let parsed
  try {
    parsed = cliOptions(process.argv.slice(2))
  } catch (error) {
    process.stderr.write(`${error.message}\n`)
    return 2
  }
  const { options, json } = parsed
  const controller = new AbortController()
  const abort = () => controller.abort()
  process.once('SIGINT', abort)
  process.once('SIGTERM', abort)
  process.once('SIGHUP', abort)
  process.on('exit', killAllChildren)
  const settings = { ...DEFAULTS, ...options }
  // A last bound over the whole run, in case its own limits fail.
  const hardLimit = settings.timeLimit + 2 * (settings.timeout + settings.hold + 5000) + 30000
  setTimeout(() => {
    process.stderr.write(`stress run exceeded ${hardLimit} ms; killing its workers\n`)
    killAllChildren()
    process.exit(2)
  }, hardLimit).unref()

  const report = await runStress({
    ...options,
    signal: controller.signal,
    onProgress: (line) => process.stderr.write(`${line}\n`),
  })
  if (json) {
    const summary = { ...report, check: undefined }
    process.stdout.write(`${JSON.stringify(summary, bigints, 2)}\n`)
  } else {
    process.stdout.write(`${formatReport(report).join('\n')}\n`)
  }
  return report.ok ? 0 : 1
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  process.exitCode = await main()
}
