/**
 * The audit log through the API, on a real server and PostgreSQL, over real HTTP: what a login
 * failure, a lockout, a login, a role change, refresh-token reuse, a logout and actor-made
 * model changes leave (actor, action, target, outcome, status, the client IP from
 * X-Forwarded-For under TRUST_PROXY, user agent, request id), that a change an actor's turn
 * commits is recorded in the turn's transaction (and recovered from there when the answer's
 * record never comes), that no body or password ever reaches it, and GET /api/admin/audit:
 * filters, pages, NDJSON export, admins only.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { modelsFeature } from '../../src/features/models.ts'
import { orgsFeature } from '../../src/features/orgs.ts'
import { chainHash, GENESIS, type AuditRow } from '../../src/store/audit-chain.ts'
import { PASSWORD, testServer, type TestServer } from '../support/app.ts'
import { until } from '../support/until.ts'

const WRONG = 'Wrong-Pass-987!'
const MARKER = 'BODY-MARKER-7f3a'
let t: TestServer
let admin: { id: string; email: string; token: string }

beforeAll(async () => {
  // Two attempts on an account from one address, then a wait of ten minutes: the third is refused.
  t = await testServer({ TRUST_PROXY: 'true', LOGIN_LOCKOUT_THRESHOLD: '2', LOGIN_BACKOFF_BASE_MS: '600000', LOGIN_LOCKOUT_MS: '600000' }, { features: [modelsFeature, orgsFeature], refreshReuseGraceMs: 0 })
  admin = await t.admin()
})
afterAll(() => t.stop())

let n = 0
interface Answer {
  status: number
  body: any
  requestId: string
}
/** A request over real HTTP with its own request id, from `ip` (X-Forwarded-For) with user agent `ua`. */
async function call(method: string, path: string, o: { token?: string; body?: unknown; ip?: string; ua?: string; requestId?: string } = {}): Promise<Answer> {
  const requestId = o.requestId ?? `audit-${++n}-${crypto.randomUUID().slice(0, 8)}`
  const headers: Record<string, string> = { 'x-request-id': requestId, 'x-forwarded-for': o.ip ?? '192.0.2.1', 'user-agent': o.ua ?? 'audit-test/1.0' }
  if (o.token) headers.authorization = `Bearer ${o.token}`
  if (o.body !== undefined) headers['content-type'] = 'application/json'
  const res = await fetch(t.url + path, { method, headers, body: o.body === undefined ? undefined : JSON.stringify(o.body) })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null, requestId }
}

type Event = Pick<AuditRow, 'action' | 'actorId' | 'actorEmail' | 'orgId' | 'targetType' | 'targetId' | 'outcome' | 'status' | 'ip' | 'userAgent' | 'requestId' | 'detail'>
const eventsOf = async (requestId: string): Promise<Event[]> => [
  ...(await t.db.sql<Event[]>`
    select action, actor_id as "actorId", actor_email as "actorEmail", org_id as "orgId", target_type as "targetType", target_id as "targetId",
           outcome, status, ip, user_agent as "userAgent", request_id as "requestId", detail
    from audit_events where request_id = ${requestId} order by seq`),
]
const lost = async () => (await t.server.http.metrics.registry.getSingleMetric('audit_events_lost_total')?.get())?.values.reduce((sum, v) => sum + v.value, 0) ?? 0
const eventOf = (requestId: string) => until(async () => (await eventsOf(requestId))[0], `the audit event of ${requestId}`)

/**
 * Every event recorded so far is written: one more request's event is (events are written in
 * the order they are recorded), so a request that should have left a single event left no other.
 */
async function settled(): Promise<void> {
  await eventOf((await call('POST', '/api/models', { body: {} })).requestId)
}

describe('security events', () => {
  test('a login failure: the account, the e-mail typed, the client IP and user agent, the request id', async () => {
    const u = await t.user()
    const r = await call('POST', '/api/auth/login', { body: { email: u.email, password: WRONG }, ip: '203.0.113.10', ua: 'curl/8.5.0' })
    expect(r.status).toBe(401)
    await settled()
    expect(await eventsOf(r.requestId)).toEqual([
      {
        action: 'auth.login_failed',
        actorId: u.id,
        actorEmail: u.email,
        orgId: null,
        targetType: 'user',
        targetId: u.id,
        outcome: 'denied',
        status: 401,
        ip: '203.0.113.10',
        userAgent: 'curl/8.5.0',
        requestId: r.requestId,
        detail: { reason: 'wrong_password' },
      },
    ])
    const unknown = await call('POST', '/api/auth/login', { body: { email: 'Nobody@Example.com', password: WRONG }, ip: '203.0.113.11' })
    expect(await eventOf(unknown.requestId)).toMatchObject({ action: 'auth.login_failed', actorId: null, actorEmail: 'nobody@example.com', targetId: null, detail: { reason: 'unknown_email' } })
  })

  test('a lockout: the attempt the throttle refuses, with its rule', async () => {
    const u = await t.user()
    const ip = '203.0.113.20'
    for (let i = 0; i < 2; i++) expect((await call('POST', '/api/auth/login', { body: { email: u.email, password: WRONG }, ip })).status).toBe(401)
    const r = await call('POST', '/api/auth/login', { body: { email: u.email, password: PASSWORD }, ip })
    expect(r.status).toBe(429)
    await settled()
    expect(await eventsOf(r.requestId)).toEqual([
      { action: 'auth.lockout', actorId: null, actorEmail: u.email, orgId: null, targetType: null, targetId: null, outcome: 'denied', status: 429, ip, userAgent: 'audit-test/1.0', requestId: r.requestId, detail: { rule: 'pair' } },
    ])
  })

  test('a login: auth.login naming the session it opened, written with it', async () => {
    const u = await t.user()
    const r = await call('POST', '/api/auth/login', { body: { email: u.email, password: PASSWORD }, ip: '198.51.100.4' })
    expect(r.status).toBe(200)
    // In the login's own transaction: there when the answer is.
    const [e] = await eventsOf(r.requestId)
    expect(e).toMatchObject({ action: 'auth.login', actorId: u.id, actorEmail: u.email, targetType: 'session', outcome: 'success', status: 200, ip: '198.51.100.4' })
    expect((await t.db.sql`select user_id as "userId", ip from sessions where id = ${e!.targetId}`)[0]).toEqual({ userId: u.id, ip: '198.51.100.4' })
  })

  test('a role change: user.role_changed by the admin, from and to, in the change\'s transaction; a deactivation likewise', async () => {
    const u = await t.user()
    const r = await call('PATCH', `/api/users/${u.id}`, { token: admin.token, body: { role: 'VIEWER', firstName: 'Renamed' }, ip: '198.51.100.7' })
    expect(r.status).toBe(200)
    const expected = { actorId: admin.id, actorEmail: admin.email, orgId: null, targetType: 'user', targetId: u.id, outcome: 'success' as const, status: 200, ip: '198.51.100.7', userAgent: 'audit-test/1.0', requestId: r.requestId }
    expect(await eventsOf(r.requestId)).toEqual([{ ...expected, action: 'user.role_changed', detail: { from: 'USER', to: 'VIEWER' } }])
    await settled()
    expect(await eventsOf(r.requestId)).toHaveLength(1)
    const d = await call('DELETE', `/api/users/${u.id}`, { token: admin.token, ip: '198.51.100.7' })
    expect(d.status).toBe(200)
    expect(await eventsOf(d.requestId)).toEqual([{ ...expected, requestId: d.requestId, action: 'user.deactivated', detail: null }])
    // A name change alone is the request's event.
    const own = await t.user()
    const p = await call('PATCH', `/api/users/${own.id}`, { token: own.token, body: { lastName: 'Lovelace' } })
    expect(await eventOf(p.requestId)).toMatchObject({ action: 'user.update', actorId: own.id, targetId: own.id, outcome: 'success', detail: null })
  })

  test('refresh-token reuse revokes the session and says so; a refresh and a logout are recorded too', async () => {
    const u = await t.user()
    const r1 = await call('POST', '/api/auth/refresh', { body: { refreshToken: u.refreshToken } })
    expect(r1.status).toBe(200)
    expect(await eventOf(r1.requestId)).toMatchObject({ action: 'auth.refresh', actorId: u.id, targetType: 'user', targetId: u.id, outcome: 'success' })
    const reused = await call('POST', '/api/auth/refresh', { body: { refreshToken: u.refreshToken }, ip: '203.0.113.66' })
    expect(reused.status).toBe(401)
    const sessionId = (await t.db.sql<{ id: string }[]>`select id from sessions where user_id = ${u.id} and revoked_reason = 'refresh_token_reuse'`)[0]!.id
    expect(await eventsOf(reused.requestId)).toEqual([
      { action: 'auth.refresh_reuse', actorId: u.id, actorEmail: u.email, orgId: null, targetType: 'session', targetId: sessionId, outcome: 'denied', status: 401, ip: '203.0.113.66', userAgent: 'audit-test/1.0', requestId: reused.requestId, detail: null },
    ])
    const v = await t.user()
    const out = await call('POST', '/api/auth/logout', { token: v.token })
    expect(out.status).toBe(200)
    expect(await eventOf(out.requestId)).toMatchObject({ action: 'auth.logout', actorId: v.id, targetType: 'session', outcome: 'success' })
  })
})

describe('changes made by actors', () => {
  test('a model created, changed, deployed (refused), touched by others and deleted: each with its actor, target and outcome', async () => {
    const owner = await t.user()
    const other = await t.user()
    const viewer = await t.user({ role: 'VIEWER' })
    const created = await call('POST', '/api/models', { token: owner.token, body: { name: 'churn', type: 'CLASSIFICATION', description: MARKER }, ip: '198.51.100.20' })
    expect(created.status).toBe(201)
    const id = created.body.data.id as string
    const base = { actorId: owner.id, actorEmail: owner.email, orgId: null, targetType: 'model', targetId: id, ip: '198.51.100.20', userAgent: 'audit-test/1.0', detail: null }
    expect(await eventOf(created.requestId)).toEqual({ ...base, action: 'model.create', outcome: 'success', status: 201, requestId: created.requestId })

    const patched = await call('PATCH', `/api/models/${id}`, { token: owner.token, body: { description: `${MARKER} again` }, ip: '198.51.100.20' })
    expect(patched.status).toBe(200)
    expect(await eventOf(patched.requestId)).toEqual({ ...base, action: 'model.update', outcome: 'success', status: 200, requestId: patched.requestId })

    // Nothing trained yet: the deploy fails (409), and is recorded as failed.
    const deploy = await call('POST', `/api/models/${id}/deploy`, { token: owner.token, body: {}, ip: '198.51.100.20' })
    expect(deploy.status).toBe(409)
    expect(await eventOf(deploy.requestId)).toEqual({ ...base, action: 'model.deploy', outcome: 'failed', status: deploy.status, requestId: deploy.requestId })

    const stranger = await call('PATCH', `/api/models/${id}`, { token: other.token, body: { description: 'mine now' } })
    expect(stranger.status).toBe(404)
    expect(await eventOf(stranger.requestId)).toMatchObject({ action: 'model.update', actorId: other.id, targetId: id, outcome: 'denied', status: 404 })
    const readOnly = await call('DELETE', `/api/models/${id}`, { token: viewer.token })
    expect(readOnly.status).toBe(403)
    expect(await eventOf(readOnly.requestId)).toMatchObject({ action: 'model.delete', actorId: viewer.id, targetId: id, outcome: 'denied', status: 403 })
    const anonymous = await call('DELETE', `/api/models/${id}`)
    expect(await eventOf(anonymous.requestId)).toMatchObject({ action: 'model.delete', actorId: null, actorEmail: null, targetId: id, outcome: 'denied', status: 401 })

    const deleted = await call('DELETE', `/api/models/${id}`, { token: owner.token, ip: '198.51.100.20' })
    expect(deleted.status).toBe(200)
    expect(await eventOf(deleted.requestId)).toEqual({ ...base, action: 'model.delete', outcome: 'success', status: 200, requestId: deleted.requestId })
  })

  test("a change an actor's turn commits is recorded in the turn's transaction; when the answer's record never comes, it is recovered from there", async () => {
    const owner = await t.user()
    const ip = '198.51.100.30'
    const created = await call('POST', '/api/models', { token: owner.token, body: { name: 'pending', type: 'CLASSIFICATION' }, ip })
    const id = created.body.data.id as string
    // What turns insert into audit_pending, as they commit (the rows are gone once the answer is chained).
    await t.db.sql`create table test_pending_seen (key uuid, event jsonb)`
    await t.db.sql`create function test_pending_seen() returns trigger language plpgsql as $$ begin insert into test_pending_seen values (new.key, new.event); return new; end $$`
    await t.db.sql`create trigger test_pending_seen after insert on audit_pending for each row execute function test_pending_seen()`
    const pendingOf = async (requestId: string) => [...(await t.db.sql<{ key: string }[]>`select key from audit_pending where event->>'requestId' = ${requestId}`)]

    const patched = await call('PATCH', `/api/models/${id}`, { token: owner.token, body: { description: 'changed by a turn' }, ip })
    expect(patched.status).toBe(200)
    const base = { actorId: owner.id, actorEmail: owner.email, orgId: null, targetType: 'model', targetId: id, ip, userAgent: 'audit-test/1.0' }
    expect(await eventOf(patched.requestId)).toEqual({ ...base, action: 'model.update', outcome: 'success', status: 200, requestId: patched.requestId, detail: null })
    const seen = await t.db.sql<{ key: string; event: Record<string, unknown> }[]>`select key, event from test_pending_seen where event->>'requestId' = ${patched.requestId}`
    expect(seen.map((r) => r.event)).toEqual([
      { action: 'model.update', outcome: 'success', actorId: owner.id, targetType: 'model', targetId: id, ip, userAgent: 'audit-test/1.0', requestId: patched.requestId, at: expect.any(String) },
    ])
    // The answer's event carries the pending event's key as its id: the sweep drops it, recovers nothing.
    const [chained] = await t.db.sql<{ id: string }[]>`select id from audit_events where request_id = ${patched.requestId}`
    expect(chained!.id).toBe(seen[0]!.key)

    // The node dies between the turn's commit and the answer's record: the database refuses
    // the answer's event (a trigger stands for the crash), so only the pending one is left.
    await t.db.sql`create function test_refuse_answer() returns trigger language plpgsql as $$ begin raise exception 'the node died'; end $$`
    await t.db.sql`create trigger test_refuse_answer before insert on audit_events for each row when (new.request_id like 'doomed-%' and new.status is not null) execute function test_refuse_answer()`
    const lostBefore = await lost()
    const doomed = await call('PATCH', `/api/models/${id}`, { token: owner.token, body: { description: 'the answer is never recorded' }, ip, requestId: `doomed-${crypto.randomUUID()}` })
    expect(doomed.status).toBe(200)
    await until(async () => (await lost()) > lostBefore, "the answer's event to be refused")
    await t.db.sql`drop trigger test_refuse_answer on audit_events`
    expect(await eventsOf(doomed.requestId)).toEqual([])
    expect((await pendingOf(doomed.requestId)).length).toBe(1)
    // Every other request of this file has its event in the chain.
    const unchained = () => t.db.sql`select 1 from audit_pending p where event->>'requestId' <> ${doomed.requestId} and not exists (select 1 from audit_events e where e.id = p.key)`
    await until(async () => (await unchained()).length === 0, 'the other requests to be chained')
    expect(await t.server.http.audit.recoverPending(0)).toBe(1)
    expect(await pendingOf(patched.requestId)).toEqual([])
    expect(await eventsOf(doomed.requestId)).toEqual([{ ...base, action: 'model.update', outcome: 'success', status: null, requestId: doomed.requestId, detail: { recovered: true } }])
    expect(await pendingOf(doomed.requestId)).toEqual([])
    const verified = await call('GET', '/api/admin/audit/verify', { token: admin.token })
    expect(verified.body.data).toMatchObject({ valid: true, broken: null })
    await t.db.sql`drop trigger test_pending_seen on audit_pending`
  })

  test("a change a route makes with its own SQL is recorded in its transaction too: an org renamed, a user's names changed, recovered when the answer's record never comes", async () => {
    const user = await t.user()
    const org = await call('POST', '/api/orgs', { token: admin.token, body: { name: 'Lost', slug: `lost-${crypto.randomUUID().slice(0, 8)}` } })
    expect(org.status).toBe(201)
    const orgId = org.body.data.id as string
    await t.db.sql`create function test_refuse_lost() returns trigger language plpgsql as $$ begin raise exception 'the node died'; end $$`
    await t.db.sql`create trigger test_refuse_lost before insert on audit_events for each row when (new.request_id like 'lost-%' and new.status is not null) execute function test_refuse_lost()`
    const ip = '198.51.100.40'
    const lostBefore = await lost()
    const renamed = await call('PATCH', `/api/orgs/${orgId}`, { token: admin.token, body: { name: 'Found' }, ip, requestId: `lost-${crypto.randomUUID()}` })
    expect(renamed.status).toBe(200)
    const names = await call('PATCH', `/api/users/${user.id}`, { token: admin.token, body: { firstName: 'Renamed' }, ip, requestId: `lost-${crypto.randomUUID()}` })
    expect(names.status).toBe(200)
    await until(async () => (await lost()) >= lostBefore + 2, "the answers' events to be refused")
    await t.db.sql`drop trigger test_refuse_lost on audit_events`
    // Every other request of this file has its event in the chain; these two only their pending ones.
    await until(async () => (await t.db.sql`select 1 from audit_pending p where event->>'requestId' not like 'lost-%' and not exists (select 1 from audit_events e where e.id = p.key)`).length === 0, 'the other requests to be chained')
    expect(await t.server.http.audit.recoverPending(0)).toBe(2)
    const base = { actorId: admin.id, actorEmail: admin.email, ip, userAgent: 'audit-test/1.0', outcome: 'success' as const, status: null, detail: { recovered: true } }
    expect(await eventsOf(renamed.requestId)).toEqual([{ ...base, action: 'org.update', orgId, targetType: 'org', targetId: orgId, requestId: renamed.requestId }])
    expect(await eventsOf(names.requestId)).toEqual([{ ...base, action: 'user.update', orgId: null, targetType: 'user', targetId: user.id, requestId: names.requestId }])
    // Without the trigger, the answer's event is chained under the pending event's key: nothing is recovered.
    const again = await call('PATCH', `/api/orgs/${orgId}`, { token: admin.token, body: { name: 'Found again' }, ip })
    expect(await eventOf(again.requestId)).toMatchObject({ action: 'org.update', status: 200, detail: null })
    expect(await t.server.http.audit.recoverPending(0)).toBe(0)
  })

  test('no request body and no password is ever in the log', async () => {
    await settled()
    const [row] = await t.db.sql<{ total: number; leaks: number }[]>`
      select count(*)::int as total,
             count(*) filter (where row_to_json(e)::text like any(${[`%${MARKER}%`, `%${PASSWORD}%`, `%${WRONG}%`, '%mine now%', '%Renamed%']}::text[]))::int as leaks
      from audit_events e`
    expect(row!.total).toBeGreaterThan(10)
    expect(row!.leaks).toBe(0)
  })
})

describe('GET /api/admin/audit', () => {
  const list = (query: string, token = admin.token) => call('GET', `/api/admin/audit${query}`, { token })

  test('an event as the API shows it, newest first, filtered, a page at a time', async () => {
    const u = await t.user()
    const failed = await call('POST', '/api/auth/login', { body: { email: u.email, password: WRONG }, ip: '203.0.113.30' })
    await settled()
    const r = await list(`?actorId=${u.id}&action=auth.login_f&limit=5`)
    expect(r.status).toBe(200)
    const [row] = await t.db.sql<{ id: string; seq: number; at: Date; prevHash: string; hash: string }[]>`
      select id, seq, at, prev_hash as "prevHash", hash from audit_events where request_id = ${failed.requestId}`
    expect(r.body).toEqual({
      success: true,
      data: [
        {
          ...row,
          at: row!.at.toISOString(),
          actorId: u.id,
          actorEmail: u.email,
          orgId: null,
          action: 'auth.login_failed',
          targetType: 'user',
          targetId: u.id,
          outcome: 'denied',
          status: 401,
          ip: '203.0.113.30',
          userAgent: 'audit-test/1.0',
          requestId: failed.requestId,
          detail: { reason: 'wrong_password' },
        },
      ],
      meta: { nextCursor: null, limit: 5 },
    })

    // Every denied event, two a page: the same set as in the table, newest first.
    const seen: number[] = []
    let cursor: string | null = ''
    while (cursor !== null) {
      const page = await list(`?outcome=denied&limit=2${cursor ? `&cursor=${cursor}` : ''}`)
      expect(page.status).toBe(200)
      expect(page.body.data.length).toBeLessThanOrEqual(2)
      seen.push(...page.body.data.map((e: { seq: number }) => e.seq))
      cursor = page.body.meta.nextCursor
    }
    const denied = (await t.db.sql<{ seq: number }[]>`select seq from audit_events where outcome = 'denied' order by seq desc`).map((x) => x.seq)
    expect(seen).toEqual(denied)

    const future = await list(`?from=${encodeURIComponent(new Date(Date.now() + 3_600_000).toISOString())}`)
    expect(future.body.data).toEqual([])
    // `to` excludes its instant, `from` includes it.
    const around = (bound: string) => list(`?${bound}=${encodeURIComponent(row!.at.toISOString())}&action=auth.login_failed&targetType=user&targetId=${u.id}`)
    expect((await around('to')).body.data).toEqual([])
    expect((await around('from')).body.data.map((e: { seq: number }) => e.seq)).toEqual([row!.seq])
  })

  test('a bad filter or cursor is a 400 naming it', async () => {
    expect((await list('?cursor=nonsense')).body).toEqual({ success: false, error: 'Validation failed', details: [{ field: 'cursor', message: 'Invalid cursor' }] })
    expect((await list('?from=yesterday')).status).toBe(400)
    expect((await list('?outcome=maybe')).status).toBe(400)
    expect((await list('?actorId=42')).status).toBe(400)
  })

  test('admins only: 401 without a token, 403 for a USER and a VIEWER', async () => {
    const user = await t.user()
    const viewer = await t.user({ role: 'VIEWER' })
    for (const path of ['', '/verify']) {
      expect((await call('GET', `/api/admin/audit${path}`)).status).toBe(401)
      for (const who of [user, viewer]) {
        const r = await call('GET', `/api/admin/audit${path}`, { token: who.token })
        expect(r).toMatchObject({ status: 403, body: { success: false, error: 'This action requires the ADMIN role', details: [] } })
      }
    }
  })

  test('?format=ndjson streams every event, oldest first, and the chain can be checked from the export alone', async () => {
    // More than one export page (500 events).
    for (let i = 0; i < 11; i++) await Promise.all(Array.from({ length: 50 }, () => t.call('POST', '/api/models', { body: {} })))
    await settled()
    const res = await fetch(`${t.url}/api/admin/audit?format=ndjson`, { headers: { authorization: `Bearer ${admin.token}` } })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('application/x-ndjson; charset=utf-8')
    const lines = (await res.text()).split('\n')
    expect(lines.pop()).toBe('')
    const events = lines.map((l) => JSON.parse(l))
    const total = (await t.db.sql<{ n: number }[]>`select count(*)::int as n from audit_events`)[0]!.n
    expect(total).toBeGreaterThan(550)
    expect(events.map((e) => e.seq)).toEqual(Array.from({ length: total }, (_, i) => i + 1))
    let prev = GENESIS
    for (const e of events) {
      expect(e.prevHash).toBe(prev)
      expect(chainHash(prev, { ...e, at: new Date(e.at) })).toBe(e.hash)
      prev = e.hash
    }
    const auth = (await (await fetch(`${t.url}/api/admin/audit?format=ndjson&action=auth.`, { headers: { authorization: `Bearer ${admin.token}` } })).text()).trim().split('\n').map((l) => JSON.parse(l))
    expect(auth.length).toBeGreaterThan(5)
    expect(auth.every((e) => e.action.startsWith('auth.'))).toBe(true)
  })
})
