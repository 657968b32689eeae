/** A lock failure: the owner is alive at the deadline, an option is invalid, or the OS refused. */
export declare class GatewayLockError extends Error {
  constructor(message: string, cause?: unknown)
  readonly name: 'GatewayLockError'
  readonly cause?: unknown
  /**
   * Domain code: "ELOCKED" (timeout, owner alive), "EINVAL" (bad option), or the OS code of the
   * underlying failure ("EACCES", "EROFS", "ENOSPC", "EMFILE", ...).
   */
  readonly code?: string
}

/** One check made while judging an owner, e.g. `{ check: 'pid', result: 'exists' }`. */
export type GatewayLockEvidence = { check: string; result: string }

export type GatewayLockTelemetryEvent =
  | { event: 'acquire-skipped'; reason: 'multi-gateway-override' | 'test-env' }
  | {
      event: 'acquire-start'
      lockPath: string
      configPath: string
      timeoutMs: number
      pollIntervalMs: number
      staleMs: number
      platform: string
      port?: number
    }
  | {
      event: 'acquire-contention'
      lockPath: string
      ownerPid?: number
      ownerStatus: 'alive' | 'dead' | 'unknown'
      waitedMs: number
      attempt: number
      evidence: GatewayLockEvidence[]
    }
  | {
      event: 'stale-lock-recovered'
      lockPath: string
      ownerPid?: number
      ownerStatus: 'alive' | 'dead' | 'unknown'
      reason: 'owner-dead' | 'stale-unknown-owner'
      waitedMs: number
      attempt: number
      evidence: GatewayLockEvidence[]
    }
  | {
      event: 'acquire-success'
      lockPath: string
      configPath: string
      waitedMs: number
      attempts: number
      staleRecoveries: number
    }
  | {
      event: 'acquire-timeout'
      lockPath: string
      ownerPid?: number
      waitedMs: number
      timeoutMs: number
      attempts: number
    }
  | {
      event: 'lock-lost'
      lockPath: string
      ownerPid?: number
      reason: 'replaced' | 'unrecoverable'
    }

export type GatewayLockOptions = {
  /** Where the config path rules read from; default `process.env`. */
  env?: Record<string, string | undefined>
  /** Total wait budget; default 5000. `0` makes one attempt. */
  timeoutMs?: number
  /** Longest pause between attempts; default 100. */
  pollIntervalMs?: number
  /** Age after which a lock with no usable owner is reclaimed; default 30000. */
  staleMs?: number
  /** Take the lock even when `VITEST` or `NODE_ENV=test` is set. */
  allowInTests?: boolean
  /** Selects the owner-platform rules only; files and processes follow the real OS. */
  platform?: NodeJS.Platform
  /** The gateway's port: recorded in the lock for other contenders' probe. */
  port?: number
  /** Overrides `<os.tmpdir()>/openclaw-<uid>`. */
  lockDir?: string
  /** Receives the acquire's events on the JS thread, in order, before it settles. */
  onTelemetry?: (event: GatewayLockTelemetryEvent) => void
}

export type GatewayLockHandle = {
  lockPath: string
  configPath: string
  /** Removes the lock if it is still this handle's; a second call does nothing. */
  release(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export type GatewayLockReport = {
  lockPath: string
  configPath: string
  exists: boolean
  owner?: {
    pid: number | null
    createdAt: string | null
    startTime: number | null
    port: number | null
    kernelLock: boolean
  }
  status: 'free' | 'alive' | 'dead' | 'unknown'
  evidence: GatewayLockEvidence[]
  torn?: boolean
  mtimeMs?: number | null
}

/** Takes the gateway lock of this configuration, or resolves `null` when skipped. */
export declare function acquireGatewayLock(
  opts?: GatewayLockOptions,
): Promise<GatewayLockHandle | null>
export declare function acquireGatewayLock(
  port: number,
  opts?: Omit<GatewayLockOptions, 'port'>,
): Promise<GatewayLockHandle | null>

/** The port of the live gateway that holds the lock, else undefined. */
export declare function readActiveGatewayLockPort(
  opts?: Pick<GatewayLockOptions, 'env' | 'lockDir' | 'platform'>,
): Promise<number | undefined>

/** What a contender would conclude right now, without touching the lock. */
export declare function inspectGatewayLock(opts?: GatewayLockOptions): Promise<GatewayLockReport>

/** What `clearGatewayLock` did, with the judgement it acted on. */
export type GatewayLockClearResult = {
  outcome: 'none' | 'removed' | 'refused'
  status?: 'alive' | 'dead' | 'unknown'
  evidence?: GatewayLockEvidence[]
  ownerPid?: number | null
}

/**
 * Removes a lock that an acquire would reclaim now; an unknown owner's only with `force`, a live
 * owner's never. What `npx gatelock clear` runs.
 */
export declare function clearGatewayLock(
  opts?: Pick<GatewayLockOptions, 'env' | 'lockDir' | 'platform' | 'staleMs'> & { force?: boolean },
): Promise<GatewayLockClearResult>
