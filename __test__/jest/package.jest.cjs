'use strict'

// The package loads and works inside Jest 30. Jest evaluates test files and the modules they
// require in a realm of its own, where errors made by an addon fail `instanceof` (TOOLCHAIN P7).
// Jest sets NODE_ENV=test, hence allowInTests; the lock dir and env are passed explicitly so the
// suite never touches the real lock of this machine.

const fs = require('node:fs')
const os = require('node:os')
const path = require('node:path')
const gatelock = require('../../index.js')

const { GatewayLockError, acquireGatewayLock } = gatelock

let root

beforeEach(() => {
  root = fs.mkdtempSync(path.join(os.tmpdir(), 'gatelock-jest-'))
})

afterEach(() => {
  fs.rmSync(root, { recursive: true, force: true })
})

function options(extra) {
  return {
    allowInTests: true,
    lockDir: path.join(root, 'locks'),
    env: { OPENCLAW_CONFIG_PATH: path.join(root, 'openclaw.json'), HOME: root },
    ...extra,
  }
}

test('exports the three functions and the GatewayLockError class', () => {
  expect(typeof gatelock.acquireGatewayLock).toBe('function')
  expect(typeof gatelock.inspectGatewayLock).toBe('function')
  expect(typeof gatelock.readActiveGatewayLockPort).toBe('function')
  expect(new GatewayLockError('x')).toBeInstanceOf(Error)
  expect(new GatewayLockError('x').name).toBe('GatewayLockError')
})

test('acquires, turns a contender away with a GatewayLockError, and releases', async () => {
  const handle = await acquireGatewayLock(options())
  let error
  try {
    expect(handle.configPath).toBe(path.join(root, 'openclaw.json'))
    expect(path.dirname(handle.lockPath)).toBe(path.join(root, 'locks'))
    expect(JSON.parse(fs.readFileSync(handle.lockPath, 'utf8')).pid).toBe(process.pid)

    error = await acquireGatewayLock(options({ timeoutMs: 0 })).catch((err) => err)
  } finally {
    await handle.release()
  }

  expect(error).toBeInstanceOf(GatewayLockError)
  expect(error).toBeInstanceOf(Error)
  expect(error.name).toBe('GatewayLockError')
  expect(error.code).toBe('ELOCKED')
  expect(error.message).toBe(`gateway already running (pid ${process.pid}); lock timeout after 0ms`)
  expect(fs.existsSync(handle.lockPath)).toBe(false)

  const again = await acquireGatewayLock(options({ timeoutMs: 1000 }))
  await again.release()
})

test('rejects an invalid option with a GatewayLockError of this realm', async () => {
  const error = await acquireGatewayLock(options({ port: 0 })).catch((err) => err)

  expect(error).toBeInstanceOf(GatewayLockError)
  expect(error.name).toBe('GatewayLockError')
  expect(error.code).toBe('EINVAL')
})

test('resolves null without allowInTests when the env says test, as Jest sets it', async () => {
  const env = { ...options().env, NODE_ENV: 'test' }

  expect(await acquireGatewayLock(options({ allowInTests: undefined, env }))).toBeNull()
})
