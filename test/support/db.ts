/**
 * Each test file gets its own database, created from the run's PostgreSQL (see preload.ts)
 * and migrated, then dropped when the file is done:
 *
 *   await using db = await testDatabase()
 *   // or: const db = await testDatabase(); afterAll(() => db.drop())
 */
import postgres from 'postgres'
import { connect, type Sql } from '../../src/store/db.ts'
import { migrate } from '../../src/store/migrate.ts'

export interface TestDatabase {
  name: string
  url: string
  sql: Sql
  drop(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

function adminUrl(): string {
  const url = process.env.DATABASE_URL
  if (!url) throw new Error('DATABASE_URL is not set: the test preload should have set it')
  return url
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url)
  u.pathname = '/' + name
  return u.toString()
}

export async function testDatabase(opts: { migrate?: boolean; max?: number } = {}): Promise<TestDatabase> {
  const name = `qt_${crypto.randomUUID().replaceAll('-', '').slice(0, 20)}`
  const admin = postgres(adminUrl(), { max: 1, onnotice: () => {} })
  try {
    await admin.unsafe(`create database ${name}`)
  } finally {
    await admin.end()
  }
  const url = withDatabase(adminUrl(), name)
  const sql = connect(url, { max: opts.max ?? 10, name })
  if (opts.migrate !== false) await migrate(sql)
  let dropped = false
  const drop = async () => {
    if (dropped) return
    dropped = true
    await sql.end({ timeout: 5 })
    const a = postgres(adminUrl(), { max: 1, onnotice: () => {} })
    try {
      await a.unsafe(`drop database if exists ${name} with (force)`)
    } finally {
      await a.end()
    }
  }
  return { name, url, sql, drop, [Symbol.asyncDispose]: drop }
}
