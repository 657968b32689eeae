// The model of the TypeScript implementation that the other suites compare gatelock with:
// its pure helpers against the reference's worked examples, and its exclusion of itself.

import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { afterEach, expect, test } from 'vitest'
import {
  cleanupAll,
  lockPathFor,
  makeSandbox,
  spawnGateway,
  startTimeOf,
} from './support/harness.mjs'
import {
  isGatewayArgv,
  lockFileName,
  oracleAcquire,
  parseProcCmdline,
  parseStatStartTime,
  resolveConfigPath,
  resolveLockDir,
} from './support/oracle.mjs'

afterEach(cleanupAll)

test.each([
  ['A (Linux)', '/home/alice/.openclaw/openclaw.json', 'gateway.b33b0d7f.lock'],
  ['B (state dir override)', '/srv/oc/state/openclaw.json', 'gateway.a00b32f2.lock'],
  ['C (macOS)', '/Users/alice/.openclaw/openclaw.json', 'gateway.dd9c04cd.lock'],
  ['D (Windows)', 'C:\\Users\\me\\.openclaw\\openclaw.json', 'gateway.0dad65c1.lock'],
])('names the lock file of worked example %s', (_, configPath, fileName) => {
  expect(lockFileName(configPath)).toBe(fileName)
})

test('finds the config path of worked example A in an existing ~/.openclaw', () => {
  const sandbox = makeSandbox()
  const config = path.join(sandbox.home, '.openclaw', 'openclaw.json')
  fs.mkdirSync(path.dirname(config))
  fs.writeFileSync(config, '{}')
  expect(resolveConfigPath({ HOME: sandbox.home })).toBe(config)
})

test('takes <state dir>/openclaw.json for a state dir with no config yet (example B)', () => {
  const env = { HOME: '/home/alice', OPENCLAW_STATE_DIR: '/srv/oc/state' }
  expect(resolveConfigPath(env)).toBe('/srv/oc/state/openclaw.json')
})

test('puts the lock directory under the real temp dir, named after the uid', () => {
  expect(resolveLockDir()).toBe(path.join(os.tmpdir(), `openclaw-${process.getuid()}`))
})

test.each([
  [['node', 'dist/index.js', '--port', '18789'], false, false],
  [['NODE', 'C:\\OpenClaw\\DIST\\ENTRY.JS', 'gateway'], false, true],
  [['bun', '/srv/openclaw/scripts/run-node.mjs', 'gateway'], false, true],
  [['node', '/srv/openclaw/openclaw.mjs', 'gateway'], false, true],
  [['tsx', '/srv/openclaw/src/entry.ts', 'gateway'], false, true],
  [['tsx', '/srv/openclaw/src/index.ts', 'gateway'], false, true],
  [['C:\\bin\\openclaw.cmd', 'gateway'], false, true],
  [['/usr/local/bin/openclaw-gateway', 'gateway'], false, false],
  [['/usr/local/bin/openclaw-gateway', 'gateway'], true, true],
  [['C:\\bin\\openclaw-gateway.EXE', 'gateway'], true, true],
  [['openclaw-gateway'], false, false],
  [['openclaw-gateway'], true, true],
  [['node', '/srv/openclaw/custom.js', 'gateway'], false, false],
  [['python', 'gateway', 'script.py'], false, false],
])("judges argv %j (allowGatewayBinary %s) as a gateway's: %s", (args, allow, expected) => {
  expect(isGatewayArgv(args, { allowGatewayBinary: allow })).toBe(expected)
})

test('splits /proc cmdline text on NUL, trimming and dropping empty arguments', () => {
  expect(parseProcCmdline(' node \0 gateway \0\0 --port \0 18789 \0')).toEqual([
    'node',
    'gateway',
    '--port',
    '18789',
  ])
  expect(parseProcCmdline(' \0\t\0 ')).toEqual([])
})

test("reads the start time as the 20th field after the last ')' of /proc/<pid>/stat", () => {
  const tail = 'S 1 1234 1234 0 -1 4194560 2000 0 0 0 10 5 0 0 20 0 11 0 98765 1000000 5000'
  expect(parseStatStartTime(`1234 (node) ${tail}\n`)).toBe(98765)
  const tricky = '42 (My App (v2)) S 1 42 42 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55555 0 0'
  expect(parseStatStartTime(tricky)).toBe(55555)
  const planted = '7 (x) 1 2 3) S 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 4242 0 0'
  expect(parseStatStartTime(planted)).toBe(4242)
  expect(parseStatStartTime('no parenthesis')).toBe(null)
  const own = fs.readFileSync('/proc/self/stat', 'utf8')
  expect(parseStatStartTime(own)).toBe(startTimeOf(process.pid))
})

test('keeps the lock of a live oracle gateway and names its pid at the deadline', async () => {
  const sandbox = makeSandbox()
  const owner = spawnGateway(sandbox, [], { entry: 'oracle' })
  expect(await owner.firstLine).toBe(`ACQUIRED ${owner.pid}`)
  const lockPath = lockPathFor(sandbox)
  const bytes = fs.readFileSync(lockPath, 'utf8')
  expect(JSON.parse(bytes)).toMatchObject({
    pid: owner.pid,
    configPath: sandbox.cfg,
    startTime: startTimeOf(owner.pid),
  })

  const events = []
  const contender = oracleAcquire({
    env: { OPENCLAW_CONFIG_PATH: sandbox.cfg, HOME: sandbox.home },
    lockDir: sandbox.lockDir,
    allowInTests: true,
    timeoutMs: 300,
    onTelemetry: (event) => events.push(event),
  })

  await expect(contender).rejects.toMatchObject({
    name: 'GatewayLockError',
    message: `gateway already running (pid ${owner.pid}); lock timeout after 300ms`,
  })
  expect(events.map((event) => event.event)).toEqual([
    'acquire-start',
    'acquire-contention',
    'acquire-timeout',
  ])
  expect(events[0].lockPath).toBe(lockPath)
  expect(events[1]).toMatchObject({ ownerPid: owner.pid, ownerStatus: 'alive' })
  expect(fs.readFileSync(lockPath, 'utf8')).toBe(bytes)
  expect(owner.exitInfo).toBe(null)
})

test('an oracle gateway releases its lock and exits 0 on SIGTERM', async () => {
  const sandbox = makeSandbox()
  const owner = spawnGateway(sandbox, [], { entry: 'oracle' })
  expect(await owner.firstLine).toBe(`ACQUIRED ${owner.pid}`)
  expect(fs.existsSync(lockPathFor(sandbox))).toBe(true)

  expect(await owner.stop()).toEqual({ code: 0, signal: null })
  expect(fs.existsSync(lockPathFor(sandbox))).toBe(false)
})
