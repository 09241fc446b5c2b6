/**
 * Test preload (bunfig.toml): make sure a real PostgreSQL is reachable.
 * With DATABASE_URL set (CI: the machine's PostgreSQL) it is used as the admin connection
 * from which each test file creates its own database; otherwise one embedded PostgreSQL is
 * started for the whole run in a throw-away directory.
 */
import { afterAll } from 'bun:test'
import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startEmbedded } from '../../src/store/embedded.ts'

process.env.NODE_ENV = 'test'
process.env.LOG_LEVEL ??= 'silent'
// No balancer in front of a test's servers: a stop does not wait for one to notice
// (test/ops/drain.test.ts sets its own delay).
process.env.SHUTDOWN_DRAIN_DELAY_MS ??= '0'

if (!process.env.DATABASE_URL) {
  const dir = mkdtempSync(join(tmpdir(), 'quadrax-test-pg-'))
  chmodSync(dir, 0o755) // the server runs as the `postgres` user and must reach its data dir
  const db = await startEmbedded({ dir: join(dir, 'pg'), persistent: false })
  process.env.DATABASE_URL = db.url
  process.env.QUADRAX_EMBEDDED_TEST_DB = '1'
  afterAll(async () => {
    await db.stop()
    rmSync(dir, { recursive: true, force: true })
  })
}
