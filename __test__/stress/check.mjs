// The stress log checker: pure, so its verdicts can be tested on hand-made logs.
//
// A log line is `<ns> <TYPE> <pid> <slot> [json]`, ns from CLOCK_MONOTONIC. Workers write
// START, WAITING, ACQUIRED, RELEASING, RELEASED, TIMEOUT, ERROR and DONE about themselves; the
// controller writes SPAWN, KILL ({ holding, reason }) and EXIT ({ code, signal }) about a
// worker. Lines are merged by time, whatever order the appends landed in.
//
// A holder's interval runs from its ACQUIRED to its RELEASING, or to its KILL or EXIT. ACQUIRED
// is written after acquire resolves and RELEASING before release() is called, so each interval
// lies inside the real ownership, and two that overlap are two real owners at once.
//
// Reclaim: after a holder is killed, the clock runs until the next ACQUIRED. It starts at the
// KILL when some worker is already waiting, else at the first WAITING after it, so it never
// counts the start-up of a respawned process. A KILL while the clock runs restarts it: the
// victim may have just taken the lock without logging it yet, and its lock is then the one to
// reclaim. A clock that passes the bound with a worker waiting is a stuck round.

const WORKER_NEXT = {
  START: ['WAITING', 'DONE'],
  WAITING: ['ACQUIRED', 'TIMEOUT', 'ERROR'],
  ACQUIRED: ['RELEASING'],
  RELEASING: ['RELEASED', 'ERROR'],
  RELEASED: ['WAITING', 'DONE'],
  TIMEOUT: ['WAITING', 'DONE'],
  ERROR: [],
  DONE: [],
}
const CONTROLLER_TYPES = new Set(['SPAWN', 'KILL', 'EXIT'])
const LINE = /^(\d+) ([A-Z]+) (\d+) (\S+)(?: (\{.*\}))?$/

/** Events sorted by time (file order breaks ties), and the lines that are not events. */
export function parseLog(text) {
  const events = []
  const malformed = []
  text.split('\n').forEach((line, seq) => {
    if (line === '') return
    const match = LINE.exec(line)
    let extra = {}
    let ok = match !== null && (match[2] in WORKER_NEXT || CONTROLLER_TYPES.has(match[2]))
    if (ok && match[5] !== undefined) {
      try {
        extra = JSON.parse(match[5])
      } catch {
        ok = false
      }
    }
    if (!ok) {
      malformed.push({ seq, line })
      return
    }
    const [, ns, type, pid, slot] = match
    events.push({ t: BigInt(ns), type, pid: Number(pid), slot, extra, seq, line })
  })
  events.sort((a, b) => compareTimes(a.t, b.t) || a.seq - b.seq)
  return { events, malformed }
}

function compareTimes(a, b) {
  return a < b ? -1 : a > b ? 1 : 0
}

function toMs(ns) {
  return Number(ns) / 1e6
}

function median(values) {
  if (values.length === 0) return null
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}

function findOverlaps(intervals) {
  const overlaps = []
  const byStart = [...intervals].sort((a, b) => compareTimes(a.start, b.start))
  let reach = null
  for (const interval of byStart) {
    if (reach !== null && interval.start < reach.end && interval.pid !== reach.pid) {
      const end = interval.end < reach.end ? interval.end : reach.end
      const ms = toMs(end - interval.start)
      overlaps.push({ first: reach, second: interval, at: interval.start, ms })
    }
    if (reach === null || interval.end > reach.end) reach = interval
  }
  return overlaps
}

/**
 * Checks a stress log. boundMs: the longest allowed reclaim after a holder's kill.
 * Returns counts, the findings behind each failure, and `failures`, one sentence per kind;
 * the log passes when that list is empty.
 */
export function checkLog(text, { boundMs }) {
  const { events, malformed } = parseLog(text)
  const bound = BigInt(Math.round(boundMs * 1e6))
  const last = new Map()
  const killedAt = new Map()
  const holding = new Map()
  const intervals = []
  const protocol = []
  const deaths = []
  const errors = []
  const stuck = []
  const reclaims = []
  const kills = { total: 0, holders: 0, waiters: 0, other: 0 }
  let rounds = 0
  let lastAcquirer = null
  let clock = null

  const waitingNow = () => {
    const pids = new Set()
    for (const [pid, type] of last) if (type === 'WAITING' && !killedAt.has(pid)) pids.add(pid)
    return pids
  }

  function closeInterval(pid, t) {
    const start = holding.get(pid)
    if (start === undefined) return
    holding.delete(pid)
    intervals.push({ pid, start, end: t > start ? t : start })
  }

  function stopClock(event) {
    const ms = toMs(event.t - clock.start)
    const { kill, restarts } = clock
    const entry = { at: kill.t, killed: kill.pid, by: event.pid, ms, restarts }
    reclaims.push(entry)
    if (clock.late) stuck.push({ kind: 'slow-reclaim', ...entry })
    clock = null
  }

  function workerEvent(event) {
    const previous = last.get(event.pid)
    const allowed = previous === undefined ? ['START'] : WORKER_NEXT[previous]
    if (!allowed.includes(event.type)) {
      const why = `${previous ?? 'nothing'} → ${event.type}`
      protocol.push({ at: event.t, pid: event.pid, why })
    }
    last.set(event.pid, event.type)
    if (event.type === 'WAITING' && clock !== null && clock.waiters === 0) {
      clock.start = event.t
      clock.waiters = 1
    } else if (event.type === 'ACQUIRED') {
      rounds += 1
      lastAcquirer = event.pid
      holding.set(event.pid, event.t)
      // Signalled before it logged: its hold ended by the kill, not later.
      if (killedAt.has(event.pid)) closeInterval(event.pid, event.t)
      if (clock !== null) stopClock(event)
    } else if (event.type === 'RELEASING') {
      closeInterval(event.pid, event.t)
    } else if (event.type === 'TIMEOUT') {
      stuck.push({ kind: 'timeout', at: event.t, pid: event.pid, message: event.extra.message })
    } else if (event.type === 'ERROR') {
      errors.push({ at: event.t, pid: event.pid, ...event.extra })
    }
  }

  function killEvent(event) {
    const state = last.get(event.pid)
    const wasHolder =
      (state === 'ACQUIRED' || state === 'RELEASING') &&
      lastAcquirer === event.pid &&
      !killedAt.has(event.pid)
    kills.total += 1
    if (wasHolder) kills.holders += 1
    else if (state === 'WAITING') kills.waiters += 1
    else kills.other += 1
    killedAt.set(event.pid, event.t)
    closeInterval(event.pid, event.t)
    if (clock !== null && !clock.late) {
      clock.start = event.t
      clock.restarts += 1
      clock.waiters = waitingNow().size
    } else if (clock === null && wasHolder) {
      clock = { kill: event, start: event.t, waiters: waitingNow().size, restarts: 0, late: false }
    }
  }

  function exitEvent(event) {
    closeInterval(event.pid, event.t)
    const { code, signal } = event.extra
    const chaos = killedAt.has(event.pid) && signal === 'SIGKILL'
    const clean = code === 0 && last.get(event.pid) === 'DONE'
    if (!chaos && !clean) {
      deaths.push({ at: event.t, pid: event.pid, code, signal, lastStep: last.get(event.pid) })
    }
  }

  for (const event of events) {
    if (clock !== null && clock.waiters > 0 && event.t - clock.start > bound) clock.late = true
    if (event.type === 'KILL') killEvent(event)
    else if (event.type === 'EXIT') exitEvent(event)
    else if (event.type !== 'SPAWN') workerEvent(event)
  }

  const end = events.length > 0 ? events[events.length - 1].t : 0n
  for (const pid of [...holding.keys()]) closeInterval(pid, end)
  let unmeasured = 0
  if (clock !== null && clock.waiters > 0 && (clock.late || end - clock.start > bound)) {
    stuck.push({ kind: 'no-reclaim', at: clock.kill.t, killed: clock.kill.pid, ms: null })
  } else if (clock !== null) {
    unmeasured += 1
  }

  const overlaps = findOverlaps(intervals)
  const times = reclaims.map((entry) => entry.ms)
  const failures = []
  const fail = (list, what) => list.length > 0 && failures.push(`${list.length} ${what}`)
  fail(overlaps, 'overlapping holder(s)')
  fail(stuck, 'stuck round(s): acquire timeouts or reclaims slower than the bound')
  fail(deaths, 'worker death(s) not caused by the chaos loop')
  fail(errors, 'acquire/release error(s) other than a timeout')
  fail(protocol, 'out-of-order step(s) in a worker log')
  fail(malformed, 'malformed log line(s)')

  return {
    rounds,
    kills,
    overlaps,
    reclaims: {
      measured: reclaims.length,
      unmeasured,
      worstMs: times.length > 0 ? Math.max(...times) : null,
      medianMs: median(times),
      entries: reclaims,
    },
    stuck,
    deaths,
    errors,
    protocol,
    malformed,
    failures,
    events,
    start: events.length > 0 ? events[0].t : 0n,
    end,
  }
}

/** The merged log lines around a time, for a failure report. */
export function excerpt(events, at, { before = 8, after = 8 } = {}) {
  let index = events.findIndex((event) => event.t >= at)
  if (index < 0) index = events.length - 1
  const t0 = events.length > 0 ? events[0].t : 0n
  const stamp = (event) => `${toMs(event.t - t0).toFixed(3)}`.padStart(10)
  return events
    .slice(Math.max(0, index - before), index + after + 1)
    .map((event) => `${stamp(event)} ms  ${event.line}`)
}
