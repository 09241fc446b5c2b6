/**
 * Audit retention (AUDIT_RETENTION_DAYS) on a real server: its durable reminder removes the
 * events past the retention from the start of the chain, leaves a checkpoint, and
 * GET /api/admin/audit/verify still finds the chain whole, from that checkpoint; an event past
 * the retention behind a recent one stays. And AUDIT_ENABLED=false records nothing.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { AUDIT_RETENTION_ID, AUDIT_RETENTION_KIND } from '../../src/actors/audit-retention.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { until } from '../support/until.ts'

let t: TestServer
let admin: { token: string }
beforeAll(async () => {
  t = await testServer({ AUDIT_RETENTION_DAYS: '30' }, { features: [], actorConfig: { reminderPollMs: 50 } })
  admin = await t.admin()
})
afterAll(() => t.stop())

const seqs = async () => (await t.db.sql<{ seq: number }[]>`select seq from audit_events order by seq`).map((r) => r.seq)
const verify = async () => (await t.json('GET', '/api/admin/audit/verify', { token: admin.token })).body.data
const ask = (message: unknown) => t.server.http.actors.ask(AUDIT_RETENTION_KIND, AUDIT_RETENTION_ID, message) as Promise<number>

describe('retention', () => {
  test('the reminder removes the events older than AUDIT_RETENTION_DAYS; the chain verifies from the checkpoint', async () => {
    // The admin's login, then each user's registration and login: 9 events.
    for (let i = 0; i < 4; i++) await t.user()
    await until(async () => (await seqs()).length === 9, 'the events of four registrations and logins')
    const before = await seqs()
    const k = 5
    const [kept] = await t.db.sql<{ hash: string; at: Date }[]>`select hash, at from audit_events where seq = ${k}`
    await t.db.sql`update audit_events set at = at - interval '31 days' where seq <= ${k}`
    // As every node does at boot: a new generation of reminders, the first due now.
    await ask({ type: 'arm' })
    await until(async () => (await seqs())[0] === k + 1, 'the sweep to remove the old events')
    expect(await seqs()).toEqual(before.filter((s) => s > k))
    const [cp] = await t.db.sql`select seq, hash, removed from audit_checkpoints`
    expect(cp).toEqual({ seq: k, hash: kept!.hash, removed: k })
    expect(await verify()).toEqual({
      valid: true,
      checked: before.length - k,
      from: { seq: k, hash: kept!.hash, checkpointAt: new Date(kept!.at.getTime() - 31 * 86_400_000).toISOString() },
      head: { seq: before[before.length - 1], hash: expect.any(String) },
      broken: null,
    })
    // New events go on from where the chain was.
    await t.user()
    await until(async () => (await verify()).checked > before.length - k, 'new events to be verified')
    expect((await verify()).valid).toBe(true)
  })

  test('an old event behind a recent one stays (only a prefix goes); each sweep sets the next reminder, and an older generation\'s reminder does nothing', async () => {
    const [first, second] = (await seqs()) as [number, number]
    const [row] = await t.db.sql<{ at: Date }[]>`select at from audit_events where seq = ${second}`
    await t.db.sql`update audit_events set at = at - interval '31 days' where seq = ${second}`
    const generation = await ask({ type: 'arm' })
    expect(await ask({ type: 'sweep', generation })).toBe(0)
    expect((await seqs()).slice(0, 2)).toEqual([first, second])
    await t.db.sql`update audit_events set at = ${row!.at} where seq = ${second}`
    expect(await ask({ type: 'sweep', generation: generation - 1 })).toBeUndefined()
    const reminders = await t.db.sql<{ message: { generation: number } }[]>`select message from actor_reminders where kind = ${AUDIT_RETENTION_KIND} and due_at > now() + interval '30 minutes'`
    expect(reminders.map((r) => r.message.generation)).toContain(generation)
    expect((await verify()).valid).toBe(true)
  })
})

describe('AUDIT_ENABLED=false', () => {
  test('nothing is recorded, and the empty chain verifies', async () => {
    const off = await testServer({ AUDIT_ENABLED: 'false' }, { features: [] })
    try {
      const u = await off.user()
      expect((await off.json('POST', '/api/auth/login', { body: { email: u.email, password: 'Wrong-Pass-1!' } })).status).toBe(401)
      expect((await off.json('PATCH', `/api/users/${u.id}`, { token: u.token, body: { lastName: 'Off' } })).status).toBe(200)
      const a = await off.admin()
      expect((await off.json('PATCH', `/api/users/${u.id}`, { token: a.token, body: { role: 'VIEWER' } })).status).toBe(200)
      expect((await off.db.sql`select count(*)::int as n from audit_events`)[0]).toEqual({ n: 0 })
      const v = await off.json('GET', '/api/admin/audit/verify', { token: a.token })
      expect(v.body.data).toMatchObject({ valid: true, checked: 0, head: { seq: 0 } })
    } finally {
      await off.stop()
    }
  }, 30_000)
})
