#!/usr/bin/env node
'use strict'

// gatelock status [--port N] [--json]   what a contender would conclude now
// gatelock clear [--force]              remove a lock whose owner is gone

const { parseArgs } = require('node:util')

const USAGE = `usage: gatelock status [--port N] [--json]
       gatelock clear [--force] [--json]

Reads the lock of the gateway configuration that the environment selects
(OPENCLAW_CONFIG_PATH, OPENCLAW_STATE_DIR, HOME ...) in <tmpdir>/openclaw-<uid>.

exit codes: 0 no lock / removed, 1 owner alive, 2 usage or OS error,
            3 lock left by a dead owner, 4 owner unknown`

const EXIT = { free: 0, alive: 1, error: 2, dead: 3, unknown: 4 }

/** Each check of the evidence in an operator's words. */
function explain({ check, result }, pid) {
  const owner = pid === null || pid === undefined ? 'the owner' : `pid ${pid}`
  const words = {
    'kernel-lock': {
      held: `${owner} holds the kernel lock on the file: it is running`,
      released: `nobody holds the kernel lock any more: ${owner} has exited`,
      none: 'the file carries no kernel lock (written by the TypeScript version)',
    },
    payload: {
      torn: 'the file is empty or not complete JSON (a writer stopped mid-write)',
      'no-owner': 'the file names no usable pid',
    },
    pid: {
      'own-held': `${owner} is this process, which holds the lock`,
      'own-leftover': `${owner} is this process, which does not hold it: a leftover`,
      missing: `${owner} does not exist`,
      zombie: `${owner} has exited and waits to be reaped`,
      exists: `${owner} exists`,
    },
    'start-time': {
      matches: `${owner} started at the recorded time`,
      differs: `${owner} started at another time than recorded: the pid was reused`,
      unreadable: `the start time of ${owner} cannot be read`,
    },
    started: {
      'after-lock': `${owner} started after the lock was written: the pid was reused`,
      'before-lock': `${owner} started before the lock was written`,
    },
    cmdline: {
      gateway: `${owner} runs a gateway`,
      'not-gateway': `${owner} runs something else than a gateway`,
      unreadable: `the command line of ${owner} cannot be read`,
    },
    port: {
      listening: 'the recorded port is listening',
      free: 'nothing listens on the recorded port',
      'cannot-tell': 'the probe of the recorded port could not tell',
    },
    platform: { 'not-linux': 'nothing else decides, and off Linux a live pid counts as alive' },
    entry: {
      symlink: 'the lock path is a symbolic link, not a lock',
      directory: 'the lock path is a directory, not a lock',
      other: 'the lock path is not a regular file',
    },
  }
  const ages = { 'torn-age': 'torn file', 'created-age': 'lock', 'mtime-age': 'lock file' }
  if (ages[check]) {
    const old = result === 'stale' ? 'old enough to be reclaimed' : 'too young to be reclaimed'
    return `the ${ages[check]} is ${old}`
  }
  return words[check]?.[result] ?? `${check}: ${result}`
}

function describe(report) {
  const lines = [`lock    ${report.lockPath}`, `config  ${report.configPath}`]
  if (!report.exists) return [...lines, 'status  free: no lock']
  const owner = report.owner ?? {}
  if (owner.pid !== undefined) {
    const parts = [`pid ${owner.pid}`]
    if (owner.createdAt) parts.push(`since ${owner.createdAt}`)
    if (owner.port) parts.push(`port ${owner.port}`)
    lines.push(`owner   ${parts.join(', ')}`)
  }
  lines.push(`status  ${report.status}`)
  const pid = owner.pid
  for (const item of report.evidence ?? []) lines.push(`  - ${explain(item, pid)}`)
  for (const { port, recorded, state } of report.ports ?? []) {
    const which = recorded ? 'recorded port' : 'port'
    const said = { listening: 'is listening', free: 'is free', 'cannot-tell': 'cannot be probed' }
    lines.push(`  - ${which} ${port} ${said[state] ?? state}`)
  }
  return lines
}

function fail(message, json) {
  if (json) console.log(JSON.stringify({ error: message }))
  else console.error(`gatelock: ${message}`)
  return EXIT.error
}

async function main(argv) {
  let parsed
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        port: { type: 'string' },
        json: { type: 'boolean', default: false },
        force: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    })
  } catch (error) {
    return fail(`${error.message}\n${USAGE}`, false)
  }
  const { values, positionals } = parsed
  const [command, ...extra] = positionals
  if (values.help) {
    console.log(USAGE)
    return 0
  }
  if (!['status', 'clear'].includes(command) || extra.length > 0) {
    return fail(`expected "status" or "clear"\n${USAGE}`, values.json)
  }
  let port
  if (values.port !== undefined) {
    port = Number(values.port)
    if (command !== 'status' || !/^\d+$/.test(values.port) || port < 1 || port > 65535) {
      return fail(`--port takes a port from 1 to 65535 with status\n${USAGE}`, values.json)
    }
  }
  if (values.force && command !== 'clear') {
    return fail(`--force goes with clear\n${USAGE}`, values.json)
  }

  const gatelock = require('./index.js')
  try {
    if (command === 'status') {
      const report = await gatelock.inspectGatewayLock({ port })
      console.log(values.json ? JSON.stringify(report, null, 2) : describe(report).join('\n'))
      return EXIT[report.status] ?? EXIT.error
    }
    const result = await gatelock.clearGatewayLock({ force: values.force })
    if (values.json) console.log(JSON.stringify(result, null, 2))
    else if (result.outcome === 'none') console.log('no lock to clear')
    else {
      const verb = result.outcome === 'removed' ? 'removed' : `refused: owner ${result.status}`
      console.log(`${verb}`)
      for (const item of result.evidence ?? []) console.log(`  - ${explain(item, result.ownerPid)}`)
      if (result.outcome === 'refused' && result.status === 'unknown') {
        console.log('  (gatelock clear --force removes a lock whose owner is unknown)')
      }
    }
    if (result.outcome !== 'refused') return 0
    return result.status === 'alive' ? EXIT.alive : EXIT.unknown
  } catch (error) {
    const code = error.code ? ` (${error.code})` : ''
    return fail(`${error.message}${code}`, values.json)
  }
}

main(process.argv.slice(2)).then((code) => {
  process.exitCode = code
})
