#!/usr/bin/env node
// Installs gatelock as a user would: `npm pack` of the package and of this
// platform's binary package, `npm install` of both tarballs into an empty
// project, then the demo gateway and `npx gatelock status` from there.

import { execFileSync, spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'gatelock-install-'))
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm'

function run(command, args, cwd, env = process.env) {
  return execFileSync(command, args, { cwd, env, encoding: 'utf8', stdio: 'pipe' })
}

function platformDir() {
  const abi =
    process.platform === 'linux'
      ? process.report.getReport().header.glibcVersionRuntime
        ? '-gnu'
        : '-musl'
      : process.platform === 'win32'
        ? '-msvc'
        : ''
  return `${process.platform}-${process.arch}${abi}`
}

async function freePort() {
  const server = net.createServer().listen(0, '127.0.0.1')
  await new Promise((resolve) => server.once('listening', resolve))
  const { port } = server.address()
  await new Promise((resolve) => server.close(resolve))
  return port
}

function waitFor(child, text, ms) {
  return new Promise((resolve, reject) => {
    let seen = ''
    const timer = setTimeout(() => reject(new Error(`no "${text}" within ${ms} ms: ${seen}`)), ms)
    child.stdout.on('data', (chunk) => {
      seen += chunk
      if (seen.includes(text)) {
        clearTimeout(timer)
        resolve(seen)
      }
    })
  })
}

async function main() {
  const target = platformDir()
  const binary = `gatelock.${target}.node`
  if (!fs.existsSync(path.join(root, binary))) throw new Error(`build first: ${binary} is missing`)

  const platformPkg = path.join(work, 'platform')
  fs.cpSync(path.join(root, 'npm', target), platformPkg, { recursive: true })
  fs.copyFileSync(path.join(root, binary), path.join(platformPkg, binary))
  const mainTgz = path.join(
    work,
    run(npm, ['pack', '--pack-destination', work], root).trim().split('\n').pop(),
  )
  const platformTgz = path.join(
    work,
    run(npm, ['pack', '--pack-destination', work], platformPkg).trim().split('\n').pop(),
  )

  const project = path.join(work, 'project')
  fs.mkdirSync(project)
  fs.writeFileSync(path.join(project, 'package.json'), '{"name":"user-app","private":true}\n')
  run(npm, ['install', '--no-audit', '--no-fund', '--omit=optional', platformTgz, mainTgz], project)

  const env = { ...process.env, OPENCLAW_CONFIG_PATH: path.join(work, 'openclaw.json') }
  for (const key of ['VITEST', 'NODE_ENV', 'OPENCLAW_ALLOW_MULTI_GATEWAY']) delete env[key]
  const port = await freePort()
  const demo = path.join(project, 'node_modules', 'gatelock', 'examples', 'gateway.mjs')
  const gateway = spawn(process.execPath, [demo, '--port', String(port)], { cwd: project, env })
  try {
    await waitFor(gateway, 'listening', 15000)
    const response = await fetch(`http://127.0.0.1:${port}/`)
    const body = (await response.text()).trim()
    if (body !== `gateway pid ${gateway.pid}`) throw new Error(`GET / answered ${body}`)
    let status
    try {
      run(process.platform === 'win32' ? 'npx.cmd' : 'npx', ['gatelock', 'status'], project, env)
      throw new Error('npx gatelock status exited 0 while a gateway holds the lock')
    } catch (error) {
      if (error.status !== 1) throw error
      status = error.stdout
    }
    if (!status.includes('status  alive')) throw new Error(`unexpected status:\n${status}`)
    const packed = (fs.statSync(mainTgz).size / 1024).toFixed(1)
    console.log(
      `install test passed: ${path.basename(mainTgz)} (${packed} KiB) + ${path.basename(platformTgz)}`,
    )
    console.log(status.trim())
  } finally {
    gateway.kill('SIGTERM')
    await new Promise((resolve) => gateway.once('exit', resolve))
    fs.rmSync(work, { recursive: true, force: true })
  }
}

main().catch((error) => {
  console.error(`install test failed: ${error.stack ?? error}`)
  console.error(`work dir kept: ${work}`)
  process.exitCode = 1
})
