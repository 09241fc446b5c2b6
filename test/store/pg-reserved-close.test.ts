// postgres.js 3.4.9 and a reserved connection whose backend dies (porsager/postgres#1208): the
// next query through the handle threw `socket.write` on a null socket from a timer — an uncaught
// exception that ended the server (seen when an embedded PostgreSQL was stopped under a running
// cluster: the turn group's ROLLBACK went to its dead reserved connection). With that guarded
// alone, the query hung instead: the pool had taken the closed connection back (and could hand it
// to another caller) while the handle kept sending to it, a close after a socket error rejected
// only what was in flight at the error, and the dead backend's last error answered the next
// query on the reconnected connection. patches/postgres+3.4.9.patch fixes all four; these tests
// fail on the unpatched driver (by crashing the test process, hanging, or a wrong answer).
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import postgres from 'postgres'
import type { Sql } from '../../src/store/db.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { until } from '../support/until.ts'

let db: TestDatabase
let killer: Sql

beforeAll(async () => {
  db = await testDatabase({ migrate: false, max: 2 })
  killer = postgres(db.url, { max: 1, onnotice: () => {} })
})

afterAll(async () => {
  await killer?.end()
  await db?.drop()
})

type Reserved = Awaited<ReturnType<Sql['reserve']>>

/** Terminate the backend behind `conn`, and wait until it is gone. */
async function killBackend(conn: Reserved): Promise<void> {
  const [row] = await conn<{ pid: number }[]>`select pg_backend_pid() as pid`
  const pid = row!.pid
  await killer`select pg_terminate_backend(${pid})`
  await until(async () => (await killer`select 1 from pg_stat_activity where pid = ${pid}`).length === 0, `backend ${pid} to exit`)
}

/** The error code a query rejected with (a query that resolves fails the test). */
async function rejection(query: Promise<unknown>): Promise<string> {
  try {
    await query
  } catch (err) {
    return (err as { code?: string }).code ?? String(err)
  }
  throw new Error('the query succeeded on a dead connection')
}

/** Both of the pool's connections answer, several rounds over, each query with its own value. */
async function poolAnswers(): Promise<void> {
  for (let round = 0; round < 4; round++) {
    const values = [1, 2, 3, 4].map((i) => round * 10 + i)
    const rows = await Promise.all(values.map((v) => db.sql<{ v: number }[]>`select ${v}::int as v`))
    expect(rows.map(([r]) => r!.v)).toEqual(values)
  }
}

describe('postgres.js reserved connections whose backend died (patched)', () => {
  test('every later query through the handle fails with a connection error, release gives nothing back, and the pool carries on', async () => {
    const conn = await db.sql.reserve()
    await killBackend(conn)
    // The first may see the reset itself; every one after it is told the connection closed.
    expect(['CONNECTION_CLOSED', 'ECONNRESET']).toContain(await rejection(conn`select 1`))
    expect(await rejection(conn`select 2`)).toBe('CONNECTION_CLOSED')
    expect(await rejection(conn`select 3`)).toBe('CONNECTION_CLOSED')
    conn.release()
    await poolAnswers()
  })

  test("a transaction's statements, COMMIT and then ROLLBACK sent after the backend died are all rejected", async () => {
    const conn = await db.sql.reserve()
    await conn`begin`
    await killBackend(conn)
    // Pipelined as the actor runtime sends a turn group: writes, then COMMIT right behind them.
    const [write, commit] = await Promise.all([rejection(conn`select pg_sleep(0)`), rejection(conn`commit`)])
    expect(['CONNECTION_CLOSED', 'ECONNRESET']).toContain(write)
    expect(['CONNECTION_CLOSED', 'ECONNRESET']).toContain(commit)
    // The runtime's catch sends ROLLBACK on the same handle: it must settle too.
    expect(await rejection(conn`rollback`)).toBe('CONNECTION_CLOSED')
    conn.release()
    await poolAnswers()
  })

  test("a caller waiting for a connection gets its own answer, never the dead handle's queries", async () => {
    const first = await db.sql.reserve()
    const second = await db.sql.reserve()
    // Both connections are held: this query waits, and is given the first's slot when it closes.
    const waiting = db.sql<{ who: string }[]>`select 'waiter' as who`
    await killBackend(first)
    expect(['CONNECTION_CLOSED', 'ECONNRESET']).toContain(await rejection(first`select 'first' as who`))
    expect((await waiting).map((r) => r.who)).toEqual(['waiter'])
    expect(await rejection(first`select 'first again' as who`)).toBe('CONNECTION_CLOSED')
    expect((await second<{ who: string }[]>`select 'second' as who`).map((r) => r.who)).toEqual(['second'])
    first.release()
    second.release()
    await poolAnswers()
  })
})
