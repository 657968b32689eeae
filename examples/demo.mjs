#!/usr/bin/env node
// The whole story in one run: a gateway takes the lock and serves; a second
// start is refused and names the first; after `kill -9` of the first, a new
// start takes over at once.

import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const gateway = path.join(path.dirname(fileURLToPath(import.meta.url)), 'gateway.mjs')
const home = mkdtempSync(path.join(tmpdir(), 'gatelock-demo-'))
const env = { ...process.env, OPENCLAW_CONFIG_PATH: path.join(home, 'openclaw.json') }
delete env.VITEST
delete env.NODE_ENV
const port = Number(process.argv[2] ?? 18789)

function start(label, timeoutMs) {
  const args = [gateway, '--port', String(port), '--timeout', String(timeoutMs)]
  const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'pipe', 'pipe'] })
  const begun = performance.now()
  const exited = new Promise((resolve) => child.on('exit', resolve))
  const output = (stream) =>
    stream.on('data', (chunk) => {
      for (const line of chunk.toString().trim().split('\n')) {
        const ms = (performance.now() - begun).toFixed(0)
        console.log(`  [${label} pid ${child.pid}, +${ms} ms] ${line}`)
      }
    })
  output(child.stdout)
  output(child.stderr)
  const listening = new Promise((resolve) => {
    child.stdout.on('data', (chunk) => chunk.toString().includes('listening') && resolve())
  })
  return { child, exited, listening }
}

async function get() {
  const response = await fetch(`http://127.0.0.1:${port}/`)
  return (await response.text()).trim()
}

console.log(`1. gateway A takes the lock for ${env.OPENCLAW_CONFIG_PATH} and serves on :${port}`)
const a = start('A', 5000)
await a.listening
console.log(`   GET / -> ${await get()}`)

console.log('2. gateway B starts for the same config: refused, naming A (timeout 1000 ms)')
const b = start('B', 1000)
console.log(`   B exited with code ${await b.exited}`)

console.log('3. kill -9 A: it cannot release anything')
a.child.kill('SIGKILL')
await a.exited

console.log('4. gateway C starts: the dead lock is reclaimed on the first attempt')
const c = start('C', 5000)
await c.listening
console.log(`   GET / -> ${await get()}`)

c.child.kill('SIGTERM')
await c.exited
rmSync(home, { recursive: true, force: true })
console.log('done: C released its lock on SIGTERM')
