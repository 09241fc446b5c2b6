/**
 * The audit log's hash chain on a real server: GET /api/admin/audit/verify finds a row changed
 * with SQL (and one changed and re-hashed, removed, forged past the head) and names it; the
 * chain stays whole under many parallel requests of every kind, with each event attributed to
 * its own request; and an event that cannot be written is never dropped in silence — after the
 * fact it is logged and counted, in a transaction it refuses the change.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import pino from 'pino'
import { modelsFeature } from '../../src/features/models.ts'
import { chainHash, type AuditRow } from '../../src/store/audit-chain.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { until } from '../support/until.ts'

let t: TestServer
let admin: { id: string; token: string }
const errorLines: any[] = []

beforeAll(async () => {
  const logger = pino({ level: 'error' }, { write: (line: string) => void errorLines.push(JSON.parse(line)) })
  t = await testServer({ TRUST_PROXY: 'true' }, { features: [modelsFeature], logger })
  admin = await t.admin()
})
afterAll(() => t.stop())

async function call(method: string, path: string, o: { token?: string; body?: unknown; requestId?: string } = {}): Promise<{ status: number; body: any }> {
  const headers: Record<string, string> = { 'content-type': 'application/json' }
  if (o.token) headers.authorization = `Bearer ${o.token}`
  if (o.requestId) headers['x-request-id'] = o.requestId
  const res = await fetch(t.url + path, { method, headers, body: o.body === undefined ? undefined : JSON.stringify(o.body) })
  return { status: res.status, body: await res.json() }
}
const verify = async () => {
  const r = await call('GET', '/api/admin/audit/verify', { token: admin.token })
  expect(r.status).toBe(200)
  return r.body.data
}
const count = async () => (await t.db.sql<{ n: number }[]>`select count(*)::int as n from audit_events`)[0]!.n
/** Every event recorded so far is written (events are written in the order they are recorded). */
async function settled(): Promise<void> {
  const requestId = `settle-${crypto.randomUUID()}`
  await call('POST', '/api/models', { body: {}, requestId })
  await until(async () => (await t.db.sql`select 1 from audit_events where request_id = ${requestId}`).length > 0, 'the settling event')
}
const rowAt = async (seq: number) => (await t.db.sql<AuditRow[]>`select seq, id, at, actor_id as "actorId", actor_email as "actorEmail", org_id as "orgId", action, target_type as "targetType", target_id as "targetId", outcome, status, ip, user_agent as "userAgent", request_id as "requestId", detail, prev_hash as "prevHash", hash from audit_events where seq = ${seq}`)[0]!
const metric = async (name: string) => (await t.server.http.metrics.registry.getSingleMetric(name)?.get())?.values.reduce((sum, v) => sum + v.value, 0) ?? 0

describe('under load', () => {
  test('many parallel requests — role changes by several admins, model edits, failed logins — leave one unbroken chain, each event its request\'s', async () => {
    const admins = await Promise.all([0, 1, 2].map(() => t.user({ role: 'ADMIN' })))
    const targets = await Promise.all(Array.from({ length: 6 }, () => t.user()))
    const owners = await Promise.all(Array.from({ length: 4 }, () => t.user()))
    const models = await Promise.all(owners.map(async (o, i) => (await call('POST', '/api/models', { token: o.token, body: { name: `m${i}`, type: 'REGRESSION' } })).body.data.id as string))
    const roleChanges: { requestId: string; admin: string; target: string }[] = []
    const work: Promise<unknown>[] = []
    for (let i = 0; i < 60; i++) {
      const a = admins[i % 3]!
      const u = targets[i % 6]!
      const requestId = `role-${i}-${crypto.randomUUID().slice(0, 8)}`
      roleChanges.push({ requestId, admin: a.id, target: u.id })
      work.push(call('PATCH', `/api/users/${u.id}`, { token: a.token, body: { role: ['VIEWER', 'USER', 'ADMIN'][i % 3] }, requestId }))
    }
    for (let i = 0; i < 120; i++) work.push(call('PATCH', `/api/models/${models[i % 4]}`, { token: owners[i % 4]!.token, body: { description: `edit ${i}` } }))
    for (let i = 0; i < 20; i++) work.push(call('POST', '/api/auth/login', { body: { email: targets[0]!.email, password: 'Wrong-123!' } }))
    const answers = (await Promise.all(work)) as { status: number }[]
    // Every role change and edit went through (logins: 401): none lost a race for the chain.
    expect(answers.slice(0, 180).filter((a) => a.status !== 200)).toEqual([])
    await settled()

    const result = await verify()
    const total = await count()
    expect(result).toMatchObject({ valid: true, checked: total, head: { seq: total }, broken: null })
    expect((await t.db.sql<{ seq: number }[]>`select seq from audit_events order by seq`).map((r) => r.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1))
    // Each role change names the admin who made it, and each one's `from` is the role the one before it left.
    const changes = await t.db.sql<{ requestId: string; actorId: string; targetId: string; detail: { from: string; to: string } | null }[]>`
      select request_id as "requestId", actor_id as "actorId", target_id as "targetId", detail from audit_events
      where request_id = any(${roleChanges.map((c) => c.requestId)}::text[]) order by seq`
    const byRequest = new Map(roleChanges.map((c) => [c.requestId, c]))
    for (const c of changes) expect({ actorId: c.actorId, targetId: c.targetId }).toEqual({ actorId: byRequest.get(c.requestId)!.admin, targetId: byRequest.get(c.requestId)!.target })
    for (const u of targets) {
      const roles = changes.filter((c) => c.targetId === u.id && c.detail).map((c) => c.detail!)
      roles.forEach((d, i) => expect(d.from).toBe(i === 0 ? 'USER' : roles[i - 1]!.to))
      const [row] = await t.db.sql<{ role: string }[]>`select role from users where id = ${u.id}`
      if (roles.length) expect(row!.role).toBe(roles[roles.length - 1]!.to)
    }
    expect(await t.db.sql`select 1 from audit_events where action = 'model.update' and outcome = 'success'`).toHaveLength(120)
  }, 60_000)
})

describe('GET /api/admin/audit/verify', () => {
  test('a row changed with SQL is found and named; put back, the chain is whole again', async () => {
    await settled()
    const total = await count()
    expect((await verify()).valid).toBe(true)
    const k = Math.floor(total / 2)
    const original = await rowAt(k)
    await t.db.sql`update audit_events set actor_email = 'mallory@example.com' where seq = ${k}`
    expect(await verify()).toMatchObject({
      valid: false,
      checked: k - 1,
      broken: { seq: k, id: original.id, reason: 'altered', message: `Event ${k} was altered: its content does not match its hash` },
    })
    await t.db.sql`update audit_events set actor_email = ${original.actorEmail} where seq = ${k}`
    expect(await verify()).toMatchObject({ valid: true, broken: null })
  })

  test('a row changed and re-hashed breaks the link to the next; a removed row is missing; a forged one past the head is named', async () => {
    const total = await count()
    const k = 3
    const original = await rowAt(k)
    const forged = { ...original, outcome: 'denied' as const }
    await t.db.sql`update audit_events set outcome = 'denied', hash = ${chainHash(original.prevHash, forged)} where seq = ${k}`
    const next = await rowAt(k + 1)
    expect((await verify()).broken).toEqual({ seq: k + 1, id: next.id, reason: 'unlinked', message: `Event ${k + 1} does not follow event ${k}: its prev_hash is not that event's hash (an event before it was changed and re-hashed, or replaced)` })
    await t.db.sql`update audit_events set outcome = ${original.outcome}, hash = ${original.hash} where seq = ${k}`

    await t.db.sql`delete from audit_events where seq = ${k}`
    expect((await verify()).broken).toEqual({ seq: k, id: null, reason: 'missing', message: `Event ${k} is missing: the chain goes from event ${k - 1} to event ${k + 1}` })
    await t.db.sql`insert into audit_events (seq, id, at, actor_id, actor_email, org_id, action, target_type, target_id, outcome, status, ip, user_agent, request_id, detail, prev_hash, hash)
      values (${original.seq}, ${original.id}, ${original.at}, ${original.actorId}, ${original.actorEmail}, ${original.orgId}, ${original.action}, ${original.targetType}, ${original.targetId},
              ${original.outcome}, ${original.status}, ${original.ip}, ${original.userAgent}, ${original.requestId}, ${original.detail === null ? null : t.db.sql.json(original.detail)}, ${original.prevHash}, ${original.hash})`
    expect((await verify()).valid).toBe(true)

    const last = await rowAt(total)
    await t.db.sql`insert into audit_events (seq, id, at, action, outcome, prev_hash, hash) values (${total + 1}, ${crypto.randomUUID()}, now(), 'user.role_changed', 'success', ${last.hash}, ${'a'.repeat(64)})`
    expect((await verify()).broken).toMatchObject({ seq: total + 1, reason: 'head' })
    await t.db.sql`delete from audit_events where seq = ${total + 1}`
    await t.db.sql`delete from audit_events where seq = ${total}`
    expect((await verify()).broken).toEqual({ seq: total, id: null, reason: 'missing', message: `Events ${total} to ${total} are missing: the chain's head is event ${total}` })
  })
})

describe('an event that cannot be written', () => {
  test('after the fact: logged at error level and counted, and only it is lost; in a transaction: the change is refused', async () => {
    await t.db.sql`alter table audit_events add constraint test_refuse_updates check (action <> 'model.update') not valid`
    try {
      const owner = await t.user()
      const model = (await call('POST', '/api/models', { token: owner.token, body: { name: 'refused', type: 'REGRESSION' } })).body.data.id as string
      const lostBefore = await metric('audit_events_lost_total')
      const created: string[] = []
      const answers = await Promise.all(
        Array.from({ length: 20 }, (_, i) => {
          const requestId = `create-${i}-${crypto.randomUUID().slice(0, 8)}`
          created.push(requestId)
          return Promise.all([call('PATCH', `/api/models/${model}`, { token: owner.token, body: { description: `d${i}` } }), call('POST', '/api/models', { body: {}, requestId })])
        }),
      )
      expect(answers.map(([patch]) => patch.status)).toEqual(Array(20).fill(200))
      await until(async () => (await metric('audit_events_lost_total')) - lostBefore === 20, 'the 20 refused events to be counted lost')
      await until(async () => (await t.db.sql`select 1 from audit_events where request_id = any(${created}::text[])`).length === 20, 'the other events of their groups')
      expect(errorLines.filter((l) => l.msg === 'audit events could not be written and are lost').reduce((n, l) => n + l.lost, 0)).toBeGreaterThanOrEqual(20)
    } finally {
      await t.db.sql`alter table audit_events drop constraint test_refuse_updates`
    }

    await t.db.sql`alter table audit_events add constraint test_refuse_roles check (action <> 'user.role_changed') not valid`
    try {
      const u = await t.user()
      const failuresBefore = await metric('audit_write_failures_total')
      const r = await call('PATCH', `/api/users/${u.id}`, { token: admin.token, body: { role: 'VIEWER' } })
      expect(r.status).toBe(500)
      expect((await t.db.sql<{ role: string }[]>`select role from users where id = ${u.id}`)[0]!.role).toBe('USER')
      expect(await metric('audit_write_failures_total')).toBeGreaterThan(failuresBefore)
      expect(errorLines.some((l) => l.msg === 'audit events could not be written; the change they record is refused')).toBe(true)
    } finally {
      await t.db.sql`alter table audit_events drop constraint test_refuse_roles`
    }
  })
})
