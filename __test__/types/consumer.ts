// Uses every export of index.d.ts the way a gateway would; `tsc --strict`
// must accept it, and the @ts-expect-error lines must stay errors.
import {
  acquireGatewayLock,
  clearGatewayLock,
  GatewayLockError,
  inspectGatewayLock,
  readActiveGatewayLockPort,
  type GatewayLockHandle,
  type GatewayLockOptions,
  type GatewayLockReport,
  type GatewayLockTelemetryEvent,
} from '../../index.js'

const events: GatewayLockTelemetryEvent[] = []
const options: GatewayLockOptions = {
  env: process.env,
  timeoutMs: 1000,
  pollIntervalMs: 50,
  staleMs: 30_000,
  allowInTests: true,
  platform: 'linux',
  port: 18789,
  lockDir: '/tmp/openclaw-1000',
  onTelemetry: (event) => {
    events.push(event)
    if (event.event === 'acquire-contention')
      console.log(event.ownerStatus, event.evidence[0]?.check)
    if (event.event === 'lock-lost') console.log(event.reason)
  },
}

export async function start(): Promise<number | undefined> {
  const handle: GatewayLockHandle | null = await acquireGatewayLock(options)
  const byPort = await acquireGatewayLock(18789, { timeoutMs: 0 })
  // @ts-expect-error: the port goes first or in the options, not both
  await acquireGatewayLock(18789, { port: 1 })
  if (handle) {
    const path: string = handle.lockPath + handle.configPath
    await handle.release()
    await handle[Symbol.asyncDispose]()
    console.log(path)
  }
  await byPort?.release()
  const report: GatewayLockReport = await inspectGatewayLock({ port: 18789 })
  const status: 'free' | 'alive' | 'dead' | 'unknown' = report.status
  const cleared = await clearGatewayLock({ force: true })
  console.log(status, cleared.outcome)
  return readActiveGatewayLockPort({ env: process.env, lockDir: '/tmp', platform: 'darwin' })
}

export function classify(error: unknown): string | undefined {
  if (error instanceof GatewayLockError) return error.code
  const own = new GatewayLockError('another gateway instance is already listening', error)
  return own.name
}
