/**
 * The audit log's writer and chain (src/store/audit.ts, audit-chain.ts, audit-read.ts) against a
 * real PostgreSQL: the canonical form and hash, several nodes (recorders with pools of their
 * own) and transactions appending at once into one unbroken chain, an event that cannot be
 * written lost alone and counted, a rolled-back transaction taking its event with it, and
 * retention removing only a prefix, with a checkpoint the rest verifies from.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import pino from 'pino'
import { Metrics } from '../../src/core/metrics.ts'
import { canonical, chainHash, clean, GENESIS, type AuditEvent } from '../../src/store/audit-chain.ts'
import { verifyChain } from '../../src/store/audit-read.ts'
import { AuditLog } from '../../src/store/audit.ts'
import { removeBefore } from '../../src/store/audit-rows.ts'
import { connect, type Sql } from '../../src/store/db.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'

let db: TestDatabase
const pools: Sql[] = []
const silent = pino({ level: 'silent' })
beforeAll(async () => {
  db = await testDatabase()
})
afterAll(async () => {
  for (const p of pools) await p.end()
  await db.drop()
})

/** A recorder with a pool of its own: one node. */
function node(opts: { enabled?: boolean; metrics?: Metrics } = {}): AuditLog {
  const sql = connect(db.url, { max: 4 })
  pools.push(sql)
  return new AuditLog(sql, { enabled: opts.enabled ?? true, logger: silent, metrics: opts.metrics ?? new Metrics({ defaultMetrics: false }) })
}
const event = (i: number, extra: Partial<AuditEvent> = {}): AuditEvent => ({ action: 'model.update', outcome: 'success', status: 200, targetType: 'model', targetId: `m-${i}`, actorId: null, ...extra })
const total = async () => (await db.sql<{ n: number }[]>`select count(*)::int as n from audit_events`)[0]!.n
const lost = async (m: Metrics) => (await m.registry.getSingleMetric('audit_events_lost_total')!.get()).values.reduce((s, v) => s + v.value, 0)

describe('the chain', () => {
  test('canonical form: one JSON array in a fixed order, detail keys sorted, times in UTC milliseconds', () => {
    const c = clean({ action: 'user.role_changed', outcome: 'success', at: new Date('2026-12-04T10:15:02.318Z'), actorId: null, actorEmail: 'Admin@Example.COM', status: 200, detail: { to: 'VIEWER', from: 'USER' }, userAgent: 'ua\0x' })
    const text = canonical({ ...c, seq: 7 })
    expect(text).toBe('[1,7,"2026-12-04T10:15:02.318Z",null,"admin@example.com",null,"user.role_changed",null,null,"success",200,null,"uax",null,{"from":"USER","to":"VIEWER"}]')
    expect(chainHash(GENESIS, { ...c, seq: 7 })).toBe(new Bun.CryptoHasher('sha256').update(GENESIS + text).digest('hex'))
    expect(() => clean({ action: 'Model Deploy', outcome: 'success' })).toThrow('is not an action name')
  })

  test('three nodes and twenty transactions appending at once: one unbroken chain, every event in it once', async () => {
    const nodes = [node(), node(), node()]
    const before = await total()
    const tx = node()
    await Promise.all([
      ...nodes.flatMap((n, k) => Array.from({ length: 200 }, (_, i) => n.record(event(i, { targetId: `n${k}-${i}` })))),
      ...Array.from({ length: 20 }, (_, i) => db.sql.begin((t) => tx.recordIn(t, event(i, { action: 'user.role_changed', targetId: `tx-${i}` })))),
    ])
    expect(await total()).toBe(before + 620)
    expect(await verifyChain(db.sql, 97)).toMatchObject({ valid: true, checked: before + 620, head: { seq: before + 620 }, broken: null })
    const ids = await db.sql<{ targetId: string }[]>`select target_id as "targetId" from audit_events`
    expect(new Set(ids.map((r) => r.targetId)).size).toBe(ids.length)
  })

  test('a rolled-back transaction takes its event with it; a recorder switched off writes nothing', async () => {
    const before = await total()
    const log = node()
    await expect(
      db.sql.begin(async (t) => {
        await log.recordIn(t, event(1, { targetId: 'rolled-back' }))
        throw new Error('the change fails')
      }),
    ).rejects.toThrow('the change fails')
    const off = node({ enabled: false })
    await off.record(event(2))
    await db.sql.begin((t) => off.recordIn(t, event(3)))
    expect(await total()).toBe(before)
    await log.record(event(4, { targetId: 'after-rollback' }))
    expect((await verifyChain(db.sql)).valid).toBe(true)
  })
})

describe('failures', () => {
  test('an event the database refuses is lost alone (its group is written one by one), counted and logged', async () => {
    const metrics = new Metrics({ defaultMetrics: false })
    const errors: any[] = []
    const sql = connect(db.url, { max: 2 })
    pools.push(sql)
    const log = new AuditLog(sql, { enabled: true, metrics, logger: pino({ level: 'error' }, { write: (l: string) => void errors.push(JSON.parse(l)) }) })
    await db.sql`alter table audit_events add constraint test_refuse check (target_id <> 'poison') not valid`
    try {
      const before = await total()
      // Recorded in one tick: one group.
      await Promise.all([log.record(event(1)), log.record(event(2)), log.record(event(3, { targetId: 'poison', requestId: 'req-poison' })), log.record(event(4))])
      expect(await total()).toBe(before + 3)
      expect(await lost(metrics)).toBe(1)
      expect(errors.filter((e) => e.msg === 'audit events could not be written and are lost').map((e) => e.events)).toEqual([
        [{ action: 'model.update', outcome: 'success', actorId: null, targetId: 'poison', requestId: 'req-poison' }],
      ])
      // Not an action name: refused at once, alone.
      await log.record({ action: 'not an action', outcome: 'success' })
      expect(await lost(metrics)).toBe(2)
    } finally {
      await db.sql`alter table audit_events drop constraint test_refuse`
    }
    expect((await verifyChain(db.sql)).valid).toBe(true)
  })
})

describe('retention', () => {
  test('removes the oldest events up to the first recent one — a prefix, in batches — and leaves a checkpoint the rest verifies from', async () => {
    const log = node()
    for (let i = 0; i < 10; i++) await log.record(event(i, { targetId: `r-${i}` }))
    const rows = await db.sql<{ seq: number; hash: string }[]>`select seq, hash from audit_events order by seq`
    const last = rows[rows.length - 1]!.seq
    // Everything but the last three is old, and one of those three is old too: it must stay,
    // or the chain would have a hole.
    const old = rows.slice(0, -3).map((r) => r.seq)
    await db.sql`update audit_events set at = now() - interval '40 days' where seq = any(${[...old, last - 1]}::int8[])`
    const cutoff = new Date(Date.now() - 30 * 86_400_000)
    let removed = 0
    for (let n; (n = await db.sql.begin((t) => removeBefore(t, cutoff, 100))) > 0; ) removed += n
    expect(removed).toBe(old.length)
    expect((await db.sql<{ seq: number }[]>`select seq from audit_events order by seq`).map((r) => r.seq)).toEqual([last - 2, last - 1, last])
    const [cp] = await db.sql<{ seq: number; hash: string; removed: number }[]>`select seq, hash, removed from audit_checkpoints order by seq desc limit 1`
    expect(cp).toEqual({ seq: last - 3, hash: rows[rows.length - 4]!.hash, removed: old.length % 100 || 100 })
    // The old event left in the chain was changed (its time): the walk from the checkpoint says so.
    expect((await verifyChain(db.sql)).broken).toMatchObject({ seq: last - 1, reason: 'altered' })
    await db.sql`delete from audit_events where seq = ${last - 1}`
    expect((await verifyChain(db.sql)).broken).toMatchObject({ seq: last - 1, reason: 'missing' })
  })
})
