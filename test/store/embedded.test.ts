/**
 * The embedded PostgreSQL starts even when its data directory sits under a private (0700)
 * folder, which the `postgres` user it runs as (when we are root) cannot traverse.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { lstatSync, mkdtempSync, readlinkSync, rmSync, statSync } from 'node:fs'
import { tmpdir, userInfo } from 'node:os'
import { join } from 'node:path'
import postgres from 'postgres'
import { startEmbedded } from '../../src/store/embedded.ts'

const cleanup: string[] = []
afterAll(() => cleanup.forEach((d) => rmSync(d, { recursive: true, force: true })))

describe('embedded PostgreSQL', () => {
  test.if(userInfo().uid === 0)('as root, under a 0700 folder: the cluster lives elsewhere, ./data/postgres links to it, data survives a restart', async () => {
    const home = mkdtempSync(join(tmpdir(), 'quadrax-private-')) // mode 0700
    cleanup.push(home)
    expect(statSync(home).mode & 0o777).toBe(0o700)
    const dir = join(home, 'data', 'postgres')
    const first = await startEmbedded({ dir })
    try {
      expect(lstatSync(dir).isSymbolicLink()).toBe(true)
      cleanup.push(readlinkSync(dir))
      const sql = postgres(first.url, { max: 1, onnotice: () => {} })
      await sql`create table kept (v int)`
      await sql`insert into kept values (42)`
      await sql.end()
    } finally {
      await first.stop()
    }
    const second = await startEmbedded({ dir })
    try {
      const sql = postgres(second.url, { max: 1, onnotice: () => {} })
      const [row] = await sql<{ v: number }[]>`select v from kept`
      expect(row?.v).toBe(42)
      await sql.end()
    } finally {
      await second.stop()
    }
  }, 60_000)
})
