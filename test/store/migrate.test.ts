import { afterAll, describe, expect, test } from 'bun:test'
import { cpSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { connect } from '../../src/store/db.ts'
import { migrate, MigrationError, readMigrations } from '../../src/store/migrate.ts'
import { testDatabase } from '../support/db.ts'

const dirs: string[] = []
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })))
function tempDir(files: Record<string, string>) {
  const d = mkdtempSync(join(tmpdir(), 'qmig-'))
  dirs.push(d)
  for (const [name, body] of Object.entries(files)) writeFileSync(join(d, name), body)
  return d
}

describe('migrations', () => {
  test('the repository migrations apply once; a second run applies nothing', async () => {
    await using db = await testDatabase({ migrate: false })
    const first = await migrate(db.sql)
    expect(first.applied).toEqual(readdirSync(join(import.meta.dir, '../../sql')).filter((f) => f.endsWith('.sql')).sort())
    expect((await migrate(db.sql)).applied).toEqual([])
    const indexes = await db.sql`select indexname from pg_indexes where tablename = 'users'`
    expect(indexes.map((r) => r.indexname)).toContain('idx_users_email')
  })

  test('three nodes migrating at once: exactly one applies, none fails', async () => {
    await using db = await testDatabase({ migrate: false })
    const pools = [0, 1, 2].map(() => connect(db.url, { max: 2 }))
    try {
      const results = await Promise.all(pools.map((p) => migrate(p)))
      const appliedCounts = results.map((r) => r.applied.length).sort()
      expect(appliedCounts[0]).toBe(0)
      expect(appliedCounts[1]).toBe(0)
      expect(appliedCounts[2]).toBeGreaterThan(0)
      const rows = await db.sql`select version from schema_migrations`
      expect(rows.length).toBe(appliedCounts[2]!)
    } finally {
      await Promise.all(pools.map((p) => p.end()))
    }
  })

  test('an applied migration whose file changed stops with a clear error', async () => {
    await using db = await testDatabase({ migrate: false })
    const dir = tempDir({ '0001_a.sql': 'create table a (id int);' })
    await migrate(db.sql, dir, 'mig_test')
    writeFileSync(join(dir, '0001_a.sql'), 'create table a (id bigint);')
    expect(migrate(db.sql, dir, 'mig_test')).rejects.toThrow(/0001_a\.sql was changed after it was applied/)
  })

  test('gaps and bad names are refused before anything runs', () => {
    expect(() => readMigrations(tempDir({ '0001_a.sql': '', '0003_c.sql': '' }))).toThrow(MigrationError)
    expect(() => readMigrations(tempDir({ '1_a.sql': '' }))).toThrow(/NNNN_snake_name/)
  })

  test('a failing migration rolls back entirely', async () => {
    await using db = await testDatabase({ migrate: false })
    const dir = tempDir({ '0001_ok.sql': 'create table ok_t (id int);', '0002_bad.sql': 'create table bad_t (id int); select 1/0;' })
    expect(migrate(db.sql, dir, 'mig_test')).rejects.toThrow()
    const [t] = await db.sql`select count(*)::int as n from pg_tables where tablename in ('ok_t', 'bad_t')`
    expect(t!.n).toBe(0)
  })
})
