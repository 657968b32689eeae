// What loading an implementation and holding one lock cost a fresh process. Usage:
// `node --expose-gc bench/footprint.mjs <impl> <lockDir> <config>`; prints one JSON line:
// {loadMs, rssLoadBytes, rssHoldBytes}. Each reading follows a full GC, so what stays
// resident is what the module and the held lock keep, not garbage waiting to be collected.

import { performance } from 'node:perf_hooks'
import { loadImpl, lockOptions, sleep } from './common.mjs'

const [impl, lockDir, config] = process.argv.slice(2)
// A held gatelock lock starts the addon's runtime threads; let them reach their idle state.
const SETTLE_MS = 50

function residentAfterGc() {
  globalThis.gc()
  return process.memoryUsage.rss()
}

const base = residentAfterGc()
const started = performance.now()
const acquire = await loadImpl(impl)
const loadMs = performance.now() - started
const loaded = residentAfterGc()
const handle = await acquire(lockOptions(lockDir, config, { timeoutMs: 2000 }))
await sleep(SETTLE_MS)
const holding = residentAfterGc()
await handle.release()
const result = { loadMs, rssLoadBytes: loaded - base, rssHoldBytes: holding - loaded }
process.stdout.write(`${JSON.stringify(result)}\n`)
