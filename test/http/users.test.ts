import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { testServer, type TestServer } from '../support/app.ts'

let t: TestServer
let admin: Awaited<ReturnType<TestServer['admin']>>
beforeAll(async () => {
  t = await testServer()
  admin = await t.admin()
})
afterAll(() => t.stop())

describe('RBAC', () => {
  test('GET /api/users is admin only', async () => {
    const u = await t.user()
    const v = await t.user({ role: 'VIEWER' })
    expect((await t.json('GET', '/api/users', { token: u.token })).status).toBe(403)
    expect((await t.json('GET', '/api/users', { token: v.token })).status).toBe(403)
    expect((await t.json('GET', '/api/users')).status).toBe(401)
    const r = await t.json('GET', '/api/users', { token: admin.token })
    expect(r.status).toBe(200)
    expect(r.body.data.map((x: any) => x.id)).toContain(u.id)
  })

  test("user B gets 404 on user A's record; self and admin can read it", async () => {
    const a = await t.user()
    const b = await t.user()
    expect((await t.json('GET', `/api/users/${a.id}`, { token: b.token })).status).toBe(404)
    expect((await t.json('PATCH', `/api/users/${a.id}`, { token: b.token, body: { firstName: 'X' } })).status).toBe(404)
    expect((await t.json('GET', `/api/users/${a.id}`, { token: a.token })).body.data.id).toBe(a.id)
    expect((await t.json('GET', `/api/users/${a.id}`, { token: admin.token })).body.data.id).toBe(a.id)
    expect((await t.json('GET', `/api/users/not-a-uuid`, { token: admin.token })).status).toBe(400)
  })

  test('a user edits their own names but cannot change role or isActive', async () => {
    const a = await t.user()
    const ok = await t.json('PATCH', `/api/users/${a.id}`, { token: a.token, body: { firstName: 'Ada', organization: 'Lab' } })
    expect(ok.status).toBe(200)
    expect(ok.body.data).toMatchObject({ firstName: 'Ada', organization: 'Lab', role: 'USER' })
    const role = await t.json('PATCH', `/api/users/${a.id}`, { token: a.token, body: { role: 'ADMIN' } })
    expect(role.status).toBe(403)
    for (const body of [{ passwordHash: 'x' }, { id: crypto.randomUUID() }, { email: 'new@example.com' }, { firstName: 'Z', password_hash: 'x' }]) {
      const r = await t.json('PATCH', `/api/users/${a.id}`, { token: a.token, body })
      expect(r.status).toBe(400)
    }
    const [row] = await t.db.sql`select role, first_name, email from users where id = ${a.id}`
    expect(row).toEqual({ role: 'USER', first_name: 'Ada', email: a.email })
  })

  test('an admin changes roles; the new role applies to the live token at once', async () => {
    const a = await t.user()
    expect((await t.json('GET', '/api/users', { token: a.token })).status).toBe(403)
    const r = await t.json('PATCH', `/api/users/${a.id}`, { token: admin.token, body: { role: 'ADMIN' } })
    expect(r.status).toBe(200)
    expect(r.body.data.role).toBe('ADMIN')
    expect((await t.json('GET', '/api/users', { token: a.token })).status).toBe(200)
  })

  test('DELETE deactivates and revokes sessions; the user can no longer log in', async () => {
    const a = await t.user()
    const u = await t.user()
    expect((await t.json('DELETE', `/api/users/${a.id}`, { token: u.token })).status).toBe(403)
    const r = await t.json('DELETE', `/api/users/${a.id}`, { token: admin.token })
    expect(r.status).toBe(200)
    expect(r.body.data.isActive).toBe(false)
    expect((await t.json('GET', '/api/auth/me', { token: a.token })).status).toBe(401)
    expect((await t.json('POST', '/api/auth/login', { body: { email: a.email, password: a.password } })).status).toBe(401)
  })

  test('an admin cannot demote or deactivate themselves', async () => {
    expect((await t.json('PATCH', `/api/users/${admin.id}`, { token: admin.token, body: { role: 'USER' } })).status).toBe(400)
    expect((await t.json('DELETE', `/api/users/${admin.id}`, { token: admin.token })).status).toBe(400)
  })
})

describe('pagination and search', () => {
  test('cursor pagination walks every user once', async () => {
    for (let i = 0; i < 7; i++) await t.user()
    const seen: string[] = []
    let cursor: string | null = null
    let pages = 0
    do {
      const q: string = `/api/users?limit=3${cursor ? `&cursor=${cursor}` : ''}`
      const r = await t.json('GET', q, { token: admin.token })
      expect(r.status).toBe(200)
      expect(r.body.data.length).toBeLessThanOrEqual(3)
      expect(r.body.meta.limit).toBe(3)
      seen.push(...r.body.data.map((u: any) => u.id))
      cursor = r.body.meta.nextCursor
      pages++
    } while (cursor && pages < 50)
    const [row] = await t.db.sql`select count(*)::int as n from users`
    expect(seen.length).toBe(row!.n)
    expect(new Set(seen).size).toBe(seen.length)
  })

  test('search by email, bad cursor and bad limit are handled', async () => {
    const u = await t.user({ email: `findme-${crypto.randomUUID().slice(0, 6)}@example.com` })
    const r = await t.json('GET', `/api/users?search=findme`, { token: admin.token })
    expect(r.body.data.map((x: any) => x.id)).toEqual([u.id])
    const bad = await t.json('GET', '/api/users?cursor=%%%', { token: admin.token })
    expect(bad.status).toBe(400)
    expect(bad.body.details).toEqual([{ field: 'cursor', message: 'Invalid cursor' }])
    expect((await t.json('GET', '/api/users?limit=1000', { token: admin.token })).status).toBe(400)
  })
})

describe('response cache', () => {
  test('GET /api/auth/me: MISS then HIT, ETag → 304, and an own write is visible at once', async () => {
    const u = await t.user()
    const first = await t.call('GET', '/api/auth/me', { token: u.token })
    expect(first.headers.get('x-cache')).toBe('MISS')
    const etag = first.headers.get('etag')!
    const second = await t.call('GET', '/api/auth/me', { token: u.token })
    expect(second.headers.get('x-cache')).toBe('HIT')
    expect(await second.json()).toEqual(await first.json())
    const nm = await t.call('GET', '/api/auth/me', { token: u.token, headers: { 'if-none-match': etag } })
    expect(nm.status).toBe(304)
    expect(await nm.text()).toBe('')
    await t.json('PATCH', `/api/users/${u.id}`, { token: u.token, body: { lastName: 'Changed' } })
    const after = await t.json('GET', '/api/auth/me', { token: u.token })
    expect(after.headers.get('x-cache')).toBe('MISS')
    expect(after.body.data.lastName).toBe('Changed')
    expect(after.headers.get('etag')).not.toBe(etag)
    expect((await t.call('GET', '/api/auth/me', { token: u.token, headers: { 'if-none-match': etag } })).status).toBe(200)
  })

  test('GET /api/users is invalidated by registrations; entries are per viewer', async () => {
    const a2 = await t.user({ role: 'ADMIN' })
    await t.call('GET', '/api/users?limit=100', { token: admin.token })
    expect((await t.call('GET', '/api/users?limit=100', { token: admin.token })).headers.get('x-cache')).toBe('HIT')
    expect((await t.call('GET', '/api/users?limit=100', { token: a2.token })).headers.get('x-cache')).toBe('MISS')
    const fresh = await t.user()
    const r = await t.json('GET', '/api/users?limit=100', { token: admin.token })
    expect(r.headers.get('x-cache')).toBe('MISS')
    expect(r.body.data.map((x: any) => x.id)).toContain(fresh.id)
    const metrics = await (await t.call('GET', '/metrics')).text()
    expect(metrics).toMatch(/http_cache_requests_total\{route="\/api\/users",result="hit"\} [1-9]/)
    expect(metrics).toMatch(/http_cache_requests_total\{route="\/api\/auth\/me",result="not_modified"\} [1-9]/)
  })
})
