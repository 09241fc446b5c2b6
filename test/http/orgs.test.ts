/**
 * Organisations over HTTP on a real server and PostgreSQL: create (the creator is OWNER), list
 * mine, read, rename and delete by role; members and their roles — the last OWNER stays one
 * (409, also when two demotions race), nobody grants a role above their own (403), an ADMIN
 * does not touch an OWNER; leaving; an outsider gets 404 everywhere; an org that still holds
 * objects is not deleted (409 naming them).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { orgsFeature } from '../../src/features/orgs.ts'
import { testServer, type TestServer } from '../support/app.ts'

type U = Awaited<ReturnType<TestServer['user']>>

let t: TestServer
beforeAll(async () => {
  t = await testServer({}, { features: [orgsFeature] })
})
afterAll(() => t?.stop())

let n = 0
const slug = () => `team-${++n}-${crypto.randomUUID().slice(0, 6)}`

async function newOrg(owner: U, name = 'Team') {
  const r = await t.json('POST', '/api/orgs', { token: owner.token, body: { name, slug: slug() } })
  expect(r.status).toBe(201)
  return r.body.data as { id: string; slug: string; name: string; role: string }
}

/** Put `u` in the org with `role` (the invitation flow is test/http/org-invitations.test.ts's). */
async function join(orgId: string, u: U, role: string) {
  await t.db.sql`insert into org_members (org_id, user_id, role) values (${orgId}, ${u.id}, ${role})`
}

describe('organisations', () => {
  test('create: the creator is OWNER; the slug is unique (409); bodies are checked (400, no extra fields); a platform VIEWER cannot create (403)', async () => {
    const u = await t.user()
    const s = slug()
    const r = await t.json('POST', '/api/orgs', { token: u.token, body: { name: 'Data Science', slug: s } })
    expect(r.status).toBe(201)
    expect(r.body.data).toMatchObject({ name: 'Data Science', slug: s, role: 'OWNER', createdBy: u.id })
    const [m] = await t.db.sql`select role from org_members where org_id = ${r.body.data.id} and user_id = ${u.id}`
    expect(m!.role).toBe('OWNER')

    const taken = await t.json('POST', '/api/orgs', { token: (await t.user()).token, body: { name: 'Other', slug: s } })
    expect(taken.status).toBe(409)
    expect(taken.body.details).toEqual([{ field: 'slug', message: 'Already taken' }])
    expect((await t.json('POST', '/api/orgs', { token: u.token, body: { name: 'X', slug: 'Not A Slug' } })).status).toBe(400)
    expect((await t.json('POST', '/api/orgs', { token: u.token, body: { name: 'X', slug: slug(), createdBy: crypto.randomUUID() } })).status).toBe(400)
    expect((await t.json('POST', '/api/orgs', { token: u.token, body: { name: '', slug: slug() } })).status).toBe(400)
    const viewer = await t.user({ role: 'VIEWER' })
    expect((await t.json('POST', '/api/orgs', { token: viewer.token, body: { name: 'V', slug: slug() } })).status).toBe(403)
    expect((await t.json('POST', '/api/orgs', { body: { name: 'V', slug: slug() } })).status).toBe(401)
  })

  test('list mine: only the orgs I am in, with my role, a page at a time', async () => {
    const a = await t.user()
    const b = await t.user()
    const mine = [await newOrg(a, 'A1'), await newOrg(a, 'A2'), await newOrg(a, 'A3')]
    const theirs = await newOrg(b, 'B1')
    await join(theirs.id, a, 'VIEWER')
    await newOrg(b, 'B2')
    const first = await t.json('GET', '/api/orgs?limit=2', { token: a.token })
    expect(first.status).toBe(200)
    expect(first.body.data.map((o: any) => o.id)).toEqual([mine[0]!.id, mine[1]!.id])
    expect(first.body.meta).toMatchObject({ limit: 2 })
    const second = await t.json('GET', `/api/orgs?limit=2&cursor=${first.body.meta.nextCursor}`, { token: a.token })
    expect(second.body.data.map((o: any) => [o.id, o.role])).toEqual([
      [mine[2]!.id, 'OWNER'],
      [theirs.id, 'VIEWER'],
    ])
    expect(second.body.meta.nextCursor).toBeNull()
    expect((await t.json('GET', '/api/orgs?cursor=nope', { token: a.token })).status).toBe(400)
  })

  test('read, rename, delete by role: members read, ADMINs rename, OWNERs delete; outsiders get 404 as for no org', async () => {
    const [owner, admin, member, viewer, outsider] = [await t.user(), await t.user(), await t.user(), await t.user(), await t.user()]
    const org = await newOrg(owner)
    await join(org.id, admin, 'ADMIN')
    await join(org.id, member, 'MEMBER')
    await join(org.id, viewer, 'VIEWER')
    const missing = await t.json('GET', `/api/orgs/${crypto.randomUUID()}`, { token: outsider.token })
    expect(missing.status).toBe(404)

    for (const [u, role] of [[viewer, 'VIEWER'], [member, 'MEMBER'], [admin, 'ADMIN']] as const) {
      const r = await t.json('GET', `/api/orgs/${org.id}`, { token: u.token })
      expect(r.status).toBe(200)
      expect(r.body.data.role).toBe(role)
    }
    for (const [method, body] of [['GET'], ['PATCH', { name: 'Mine now' }], ['DELETE']] as const) {
      const r = await t.json(method, `/api/orgs/${org.id}`, { token: outsider.token, body })
      expect([method, r.status, r.body]).toEqual([method, missing.status, missing.body])
    }
    for (const u of [viewer, member]) expect((await t.json('PATCH', `/api/orgs/${org.id}`, { token: u.token, body: { name: 'Nope' } })).status).toBe(403)
    const renamed = await t.json('PATCH', `/api/orgs/${org.id}`, { token: admin.token, body: { name: 'Renamed' } })
    expect(renamed.status).toBe(200)
    expect(renamed.body.data).toMatchObject({ id: org.id, name: 'Renamed', slug: org.slug, role: 'ADMIN' })
    expect((await t.json('PATCH', `/api/orgs/${org.id}`, { token: admin.token, body: {} })).status).toBe(400)
    const other = await newOrg(owner)
    expect((await t.json('PATCH', `/api/orgs/${org.id}`, { token: admin.token, body: { slug: other.slug } })).status).toBe(409)

    for (const u of [viewer, member, admin]) expect((await t.json('DELETE', `/api/orgs/${org.id}`, { token: u.token })).status).toBe(403)
    const del = await t.json('DELETE', `/api/orgs/${org.id}`, { token: owner.token })
    expect(del.status).toBe(200)
    expect(del.body.data).toEqual({ id: org.id, deleted: true })
    expect((await t.json('GET', `/api/orgs/${org.id}`, { token: owner.token })).status).toBe(404)
    const [left] = await t.db.sql`select count(*)::int as n from org_members where org_id = ${org.id}`
    expect(left!.n).toBe(0)
  })

  test('a platform admin reads and manages any org (as an OWNER would) without being a member', async () => {
    const owner = await t.user()
    const admin = await t.admin()
    const org = await newOrg(owner)
    const r = await t.json('GET', `/api/orgs/${org.id}`, { token: admin.token })
    expect(r.status).toBe(200)
    expect(r.body.data.role).toBeNull()
    expect((await t.json('GET', `/api/orgs/${org.id}/members`, { token: admin.token })).body.data.map((m: any) => m.userId)).toEqual([owner.id])
  })

  test('an org that still holds objects is not deleted: 409 naming them; once they are gone it is', async () => {
    const owner = await t.user()
    const org = await newOrg(owner)
    const kit = crypto.randomUUID()
    await t.db.sql`insert into datakits (id, owner_id, name, status, current_version, org_id) values (${kit}, ${owner.id}, 'shared', 'READY', 1, ${org.id})`
    const r = await t.json('DELETE', `/api/orgs/${org.id}`, { token: owner.token })
    expect(r.status).toBe(409)
    expect(r.body.error).toContain('1 datakits')
    expect(r.body.details).toEqual([{ field: 'datakits', message: '1 left in the organisation' }])
    expect((await t.json('GET', `/api/orgs/${org.id}`, { token: owner.token })).status).toBe(200)
    await t.db.sql`delete from datakits where id = ${kit}`
    expect((await t.json('DELETE', `/api/orgs/${org.id}`, { token: owner.token })).status).toBe(200)
  })
})

describe('members', () => {
  test('listed with e-mail, names and role to every member; 404 to outsiders', async () => {
    const [owner, viewer, outsider] = [await t.user(), await t.user(), await t.user()]
    const org = await newOrg(owner)
    await join(org.id, viewer, 'VIEWER')
    const r = await t.json('GET', `/api/orgs/${org.id}/members`, { token: viewer.token })
    expect(r.status).toBe(200)
    expect(r.body.data.map((m: any) => [m.userId, m.email, m.role])).toEqual([
      [owner.id, owner.email, 'OWNER'],
      [viewer.id, viewer.email, 'VIEWER'],
    ])
    expect(r.body.data[0]).toMatchObject({ firstName: 'Test', lastName: expect.stringMatching(/^User/) })
    const page = await t.json('GET', `/api/orgs/${org.id}/members?limit=1`, { token: viewer.token })
    const next = await t.json('GET', `/api/orgs/${org.id}/members?limit=1&cursor=${page.body.meta.nextCursor}`, { token: viewer.token })
    expect(next.body.data.map((m: any) => m.userId)).toEqual([viewer.id])
    expect((await t.json('GET', `/api/orgs/${org.id}/members`, { token: outsider.token })).status).toBe(404)
    for (const [method, body] of [['PATCH', { role: 'OWNER' }], ['DELETE']] as const) {
      expect((await t.json(method, `/api/orgs/${org.id}/members/${owner.id}`, { token: outsider.token, body })).status).toBe(404)
      expect((await t.json(method, `/api/orgs/${org.id}/members/${outsider.id}`, { token: outsider.token, body })).status).toBe(404)
    }
  })

  test('role changes: ADMINs and OWNERs only; nobody grants above their own role; an ADMIN does not touch an OWNER; the last OWNER stays', async () => {
    const [owner, admin, member, other] = [await t.user(), await t.user(), await t.user(), await t.user()]
    const org = await newOrg(owner)
    await join(org.id, admin, 'ADMIN')
    await join(org.id, member, 'MEMBER')
    const patch = (by: U, who: U, role: string) => t.json('PATCH', `/api/orgs/${org.id}/members/${who.id}`, { token: by.token, body: { role } })

    expect((await patch(member, member, 'ADMIN')).status).toBe(403)
    const grant = await patch(admin, member, 'OWNER')
    expect(grant.status).toBe(403)
    expect(grant.body.error).toContain('above your own')
    expect((await patch(admin, owner, 'MEMBER')).status).toBe(403)
    const ok = await patch(admin, member, 'ADMIN')
    expect(ok.status).toBe(200)
    expect(ok.body.data).toMatchObject({ userId: member.id, email: member.email, role: 'ADMIN' })
    expect((await patch(admin, member, 'VIEWER')).body.data.role).toBe('VIEWER')
    expect((await patch(owner, other, 'MEMBER')).status).toBe(404)
    expect((await patch(owner, member, 'SUPERUSER')).status).toBe(400)
    expect((await t.json('PATCH', `/api/orgs/${org.id}/members/${member.id}`, { token: owner.token, body: { role: 'MEMBER', orgId: crypto.randomUUID() } })).status).toBe(400)

    const last = await patch(owner, owner, 'ADMIN')
    expect(last.status).toBe(409)
    expect(last.body.error).toContain('at least one OWNER')
    expect((await patch(owner, admin, 'OWNER')).body.data.role).toBe('OWNER')
    // Two OWNERs now: one may step down, the other is then the last.
    expect((await patch(owner, owner, 'ADMIN')).status).toBe(200)
    expect((await patch(admin, admin, 'MEMBER')).status).toBe(409)
  })

  test('two OWNERs demoting each other at once: one wins, the other is refused, the org keeps an OWNER', async () => {
    const [a, b] = [await t.user(), await t.user()]
    const org = await newOrg(a)
    await join(org.id, b, 'OWNER')
    const [ra, rb] = await Promise.all([
      t.json('PATCH', `/api/orgs/${org.id}/members/${b.id}`, { token: a.token, body: { role: 'MEMBER' } }),
      t.json('PATCH', `/api/orgs/${org.id}/members/${a.id}`, { token: b.token, body: { role: 'MEMBER' } }),
    ])
    // The loser is checked after the winner committed: no longer an OWNER, it may change no role.
    expect([ra.status, rb.status].sort()).toEqual([200, 403])
    const [owners] = await t.db.sql`select count(*)::int as n from org_members where org_id = ${org.id} and role = 'OWNER'`
    expect(owners!.n).toBe(1)
  })

  test('removing: ADMINs remove members, not OWNERs; anyone may leave except the last OWNER; a platform VIEWER may not (read-only)', async () => {
    const [owner, admin, member, viewer, other] = [await t.user(), await t.user(), await t.user(), await t.user(), await t.user()]
    const org = await newOrg(owner)
    await join(org.id, admin, 'ADMIN')
    await join(org.id, member, 'MEMBER')
    await join(org.id, viewer, 'VIEWER')
    await join(org.id, other, 'MEMBER')
    const remove = (by: U, who: U) => t.json('DELETE', `/api/orgs/${org.id}/members/${who.id}`, { token: by.token })

    expect((await remove(member, other)).status).toBe(403)
    expect((await remove(admin, owner)).status).toBe(403)
    const removed = await remove(admin, other)
    expect(removed.status).toBe(200)
    expect(removed.body.data).toEqual({ orgId: org.id, userId: other.id, role: 'MEMBER', removed: true })
    expect((await remove(admin, other)).status).toBe(404)
    expect((await t.json('GET', `/api/orgs/${org.id}`, { token: other.token })).status).toBe(404)

    expect((await remove(viewer, viewer)).status).toBe(200) // leaving
    const last = await remove(owner, owner)
    expect(last.status).toBe(409)
    expect((await remove(member, member)).status).toBe(200)

    const platformViewer = await t.user({ role: 'VIEWER' })
    await join(org.id, platformViewer, 'MEMBER')
    expect((await remove(platformViewer, platformViewer)).status).toBe(403)
  })
})
