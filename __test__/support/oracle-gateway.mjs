// A "TypeScript gateway": GW's flags and output, with the lock taken by the model of the
// TypeScript implementation (oracle.mjs, loaded from env GATELOCK_ORACLE). The harness copies it
// to <S>/oracle/dist/index.js, next to a copy of gateway-fixture.cjs, so its argv stays
// gateway-shaped.

import { createRequire } from 'node:module'
import { pathToFileURL } from 'node:url'

const require = createRequire(import.meta.url)
const { runGateway } = require('./gateway-fixture.cjs')

runGateway(async () => {
  const entry = process.env.GATELOCK_ORACLE
  if (!entry) throw new Error('GATELOCK_ORACLE is not set')
  const { oracleAcquire } = await import(pathToFileURL(entry).href)
  return oracleAcquire
})
