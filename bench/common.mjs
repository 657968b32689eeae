// What the benchmark's orchestrator and its child processes share: how to load either
// implementation, the options every acquire gets, and one clock for all processes.

import { createRequire } from 'node:module'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const ENTRY_PATH = path.join(ROOT, 'index.js')
export const ORACLE_PATH = path.join(ROOT, '__test__', 'support', 'oracle.mjs')
export const IMPLS = ['gatelock', 'oracle']

/** CLOCK_MONOTONIC in ms: the same clock in every process on the host, so times compare. */
export const nowMs = () => Number(process.hrtime.bigint()) / 1e6

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** The acquire function of `gatelock` (the addon's JS entry) or `oracle` (the TS model). */
export async function loadImpl(name) {
  if (name === 'gatelock') return createRequire(import.meta.url)(ENTRY_PATH).acquireGatewayLock
  if (name === 'oracle') return (await import(pathToFileURL(ORACLE_PATH).href)).oracleAcquire
  throw new Error(`unknown implementation ${name}`)
}

// A one-key env: both sides then resolve the config path the same short way, and a test
// runner's VITEST or NODE_ENV in the caller's environment cannot make them skip.
export function lockOptions(lockDir, configPath, extra = {}) {
  return { env: { OPENCLAW_CONFIG_PATH: configPath }, lockDir, allowInTests: true, ...extra }
}

/** A rejection that means "the owner is alive": gatelock's ELOCKED, or the oracle's message. */
export function isTimeout(err) {
  return err?.code === 'ELOCKED' || /lock timeout after/.test(String(err?.message))
}

export function median(values) {
  if (values.length === 0) return NaN
  const sorted = [...values].sort((a, b) => a - b)
  const mid = sorted.length >> 1
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2
}
