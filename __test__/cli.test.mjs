// `gatelock status` and `gatelock clear` run as real processes, with the
// exit codes of SPEC section 10.

import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { afterEach, expect, test } from 'vitest'

import {
  cleanupAll,
  freePort,
  isoAgo,
  lockPathFor,
  makeSandbox,
  runNode,
  spawnGateway,
  writeLock,
} from './support/harness.mjs'

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../cli.js')

afterEach(cleanupAll)

function gatelock(sandbox, args, extraEnv) {
  return runNode(CLI, { args, env: sandbox.childEnv(extraEnv) })
}

test('status reports a free lock and exits 0', async () => {
  const sandbox = makeSandbox()
  const run = await gatelock(sandbox, ['status'])
  expect(run.code).toBe(0)
  expect(run.stdout).toContain(`lock    ${lockPathFor(sandbox)}`)
  expect(run.stdout).toContain('status  free: no lock')
})

test('status explains a live owner in words and exits 1; clear refuses it', async () => {
  const sandbox = makeSandbox()
  const port = await freePort()
  const gw = spawnGateway(sandbox, ['--port', port, '--listen', '127.0.0.1'])
  expect(await gw.firstLine).toBe(`ACQUIRED ${gw.pid}`)
  const other = await freePort()

  const status = await gatelock(sandbox, ['status', '--port', other])
  expect(status.code).toBe(1)
  expect(status.stdout).toContain('status  alive')
  expect(status.stdout).toContain(`pid ${gw.pid} holds the kernel lock on the file: it is running`)
  expect(status.stdout).toContain(`recorded port ${port} is listening`)
  expect(status.stdout).toContain(`port ${other} is free`)

  const clear = await gatelock(sandbox, ['clear', '--force'])
  expect(clear.code).toBe(1)
  expect(clear.stdout).toContain('refused: owner alive')
  expect(fs.existsSync(lockPathFor(sandbox))).toBe(true)
})

test('a killed owner is dead (status exits 3); clear removes its lock (exit 0)', async () => {
  const sandbox = makeSandbox()
  const gw = spawnGateway(sandbox)
  expect(await gw.firstLine).toBe(`ACQUIRED ${gw.pid}`)
  gw.kill('SIGKILL')
  await gw.exited

  const status = await gatelock(sandbox, ['status', '--json'])
  expect(status.code).toBe(3)
  const report = JSON.parse(status.stdout)
  expect(report).toMatchObject({ exists: true, status: 'dead', owner: { pid: gw.pid } })
  expect(report.evidence).toContainEqual({ check: 'kernel-lock', result: 'released' })

  const clear = await gatelock(sandbox, ['clear'])
  expect(clear.code).toBe(0)
  expect(clear.stdout).toContain('removed')
  expect(fs.existsSync(lockPathFor(sandbox))).toBe(false)
})

test('a young ownerless lock is unknown (exit 4); only clear --force removes it', async () => {
  const sandbox = makeSandbox()
  const lockPath = lockPathFor(sandbox)
  writeLock(lockPath, { pid: 0, createdAt: isoAgo(1000), configPath: sandbox.cfg })

  const status = await gatelock(sandbox, ['status'])
  expect(status.code).toBe(4)
  expect(status.stdout).toContain('the file names no usable pid')

  const refused = await gatelock(sandbox, ['clear'])
  expect(refused.code).toBe(4)
  expect(refused.stdout).toContain('refused: owner unknown')
  expect(fs.existsSync(lockPath)).toBe(true)

  const forced = await gatelock(sandbox, ['clear', '--force'])
  expect(forced.code).toBe(0)
  expect(fs.existsSync(lockPath)).toBe(false)
})

test('a lock the age rules would reclaim is reported as dead', async () => {
  const sandbox = makeSandbox()
  writeLock(lockPathFor(sandbox), '', { mtimeMsAgo: 10_000 })
  const status = await gatelock(sandbox, ['status'])
  expect(status.code).toBe(3)
  expect(status.stdout).toContain('the torn file is old enough to be reclaimed')
})

test('usage errors and OS errors exit 2', async () => {
  const sandbox = makeSandbox()
  for (const args of [[], ['bogus'], ['status', '--port', '0'], ['status', '--force']]) {
    const run = await gatelock(sandbox, args)
    expect(run.code, args.join(' ')).toBe(2)
    expect(run.stderr).toContain('usage: gatelock status')
  }
  const file = path.join(sandbox.root, 'not-a-dir')
  fs.writeFileSync(file, '')
  const broken = await gatelock(sandbox, ['status'], { TMPDIR: file })
  expect(broken.code).toBe(2)
  expect(broken.stderr).toContain('failed to prepare gateway lock directory at')
  expect(broken.stderr).toContain('(ENOTDIR)')
})
