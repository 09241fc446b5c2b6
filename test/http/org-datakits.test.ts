/**
 * DataKits shared in organisations, on a real server (PostgreSQL, the datakit actor, DuckDB):
 * created in an org, listed with `?orgId=`, read and queried by its members, changed by its
 * MEMBERs, deleted by its ADMINs (a MEMBER only their own), moved in by an owner who is ADMIN
 * there, invisible (404) to everyone outside it, and counted against the org's storage quota.
 *
 * Orgs and memberships are written with SQL (the /api/orgs routes are not needed here).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { addMember, orgWith } from '../support/org-fixtures.ts'
import { sampleRows, tempDir, toDelimited } from '../support/datasets.ts'
import { multipartBytes, postUpload, type FormPart } from '../support/datakit-upload.ts'
import { until } from '../support/until.ts'
import { wsClient } from '../support/ws.ts'

type Account = Awaited<ReturnType<TestServer['user']>>
type OrgRole = 'OWNER' | 'ADMIN' | 'MEMBER' | 'VIEWER'

const dir = tempDir('quadrax-org-datakits-test-')
const CSV = toDelimited(sampleRows(50))

let t: TestServer
/** MEMBER of `org` (ADMIN of `other`); makes the datakits. */
let owner: Account
let member: Account
let admin: Account
let viewer: Account
/** OWNER of `other` only. */
let outsider: Account
let org: string
let other: string

const makeOrg = (members: [Account, OrgRole][]) => orgWith(t.db.sql, members.map(([u, role]) => ({ userId: u.id, role })))
const setRole = (orgId: string, u: Account, role: OrgRole) => addMember(t.db.sql, orgId, u.id, role)

beforeAll(async () => {
  t = await testServer({ UPLOAD_DIR: join(dir.path, 'uploads') }, { features: [datakitsFeature] })
  ;[owner, member, admin, viewer, outsider] = await Promise.all([t.user(), t.user(), t.user(), t.user(), t.user()])
  org = await makeOrg([
    [owner, 'MEMBER'],
    [member, 'MEMBER'],
    [admin, 'ADMIN'],
    [viewer, 'VIEWER'],
  ])
  other = await makeOrg([
    [outsider, 'OWNER'],
    [owner, 'ADMIN'],
  ])
}, 60_000)

afterAll(async () => {
  await t?.stop()
  dir[Symbol.dispose]()
})

const api = (method: string, path: string, who: Account, body?: unknown) => t.json(method, path, { token: who.token, body })

async function upload(who: Account, fields: Record<string, string>, query = '') {
  const parts: FormPart[] = [{ name: 'dataset', filename: 'data.csv', contentType: 'text/csv', data: CSV }, ...Object.entries(fields).map(([name, value]) => ({ name, value }))]
  const form = await multipartBytes(parts)
  const headers: Record<string, string> = { 'content-type': form.contentType, authorization: `Bearer ${who.token}` }
  const res = await fetch(`${t.url}/api/datakits/upload${query}`, { method: 'POST', headers, body: form.body })
  const text = await res.text()
  return { status: res.status, body: text ? JSON.parse(text) : null }
}

/** Upload a datakit (in `orgId`, if given) and wait until it is READY. */
async function readyKit(who: Account, orgId?: string): Promise<any> {
  const r = await upload(who, { name: `kit-${crypto.randomUUID().slice(0, 8)}`, ...(orgId ? { orgId } : {}) })
  expect(r.status).toBe(201)
  const id = r.body.data.id as string
  return until(async () => {
    const d = (await api('GET', `/api/datakits/${id}`, who)).body.data
    return d.status === 'READY' ? d : undefined
  }, `datakit ${id} to be READY`)
}

const query = (who: Account, id: string) => api('POST', `/api/datakits/${id}/query`, who, { sql: 'select count(*) as n from data' })

describe('DataKits in an organisation', () => {
  test('created in the org: members list, read and query it; a MEMBER cannot delete it, a VIEWER cannot change it, an ADMIN deletes it; outsiders get 404', async () => {
    const kit = await readyKit(owner, org)
    expect(kit).toMatchObject({ ownerId: owner.id, orgId: org })

    // The org's list: every member sees it; the owner's own list too.
    for (const who of [owner, member, admin, viewer]) {
      const list = await api('GET', `/api/datakits?orgId=${org}`, who)
      expect(list.status).toBe(200)
      expect(list.body.data.map((d: any) => d.id)).toContain(kit.id)
    }
    expect((await api('GET', '/api/datakits', owner)).body.data.map((d: any) => d.id)).toContain(kit.id)
    // Not in another member's own list: it is not theirs.
    expect((await api('GET', '/api/datakits', member)).body.data.map((d: any) => d.id)).not.toContain(kit.id)

    // Members and viewers read and query.
    for (const who of [member, viewer]) {
      expect((await api('GET', `/api/datakits/${kit.id}`, who)).status).toBe(200)
      const q = await query(who, kit.id)
      expect(q.status).toBe(200)
      expect(q.body.data.rows).toEqual([{ n: 50 }])
    }

    // A MEMBER changes it but cannot delete what they did not make; a VIEWER changes nothing.
    expect((await api('PATCH', `/api/datakits/${kit.id}`, member, { description: 'shared' })).status).toBe(200)
    expect((await api('DELETE', `/api/datakits/${kit.id}`, member)).status).toBe(403)
    expect((await api('PATCH', `/api/datakits/${kit.id}`, viewer, { name: 'renamed' })).status).toBe(403)
    expect((await api('DELETE', `/api/datakits/${kit.id}`, viewer)).status).toBe(403)

    // Outside the org it does not exist.
    expect((await api('GET', `/api/datakits/${kit.id}`, outsider)).status).toBe(404)
    expect((await query(outsider, kit.id)).status).toBe(404)
    expect((await api('PATCH', `/api/datakits/${kit.id}`, outsider, { name: 'x' })).status).toBe(404)
    expect((await api('DELETE', `/api/datakits/${kit.id}`, outsider)).status).toBe(404)
    const foreignList = await api('GET', `/api/datakits?orgId=${org}`, outsider)
    expect(foreignList.status).toBe(404)
    expect(foreignList.body.error).toBe('Organisation not found')
    expect((await api('GET', '/api/datakits', outsider)).body.data).toEqual([])

    // An org ADMIN deletes anyone's datakit of the org.
    expect((await api('DELETE', `/api/datakits/${kit.id}`, admin)).status).toBe(200)
    expect((await api('GET', `/api/datakits/${kit.id}`, owner)).status).toBe(404)
  }, 60_000)

  test('a MEMBER deletes their own datakit of the org', async () => {
    const kit = await readyKit(member, org)
    expect((await api('DELETE', `/api/datakits/${kit.id}`, member)).status).toBe(200)
  }, 60_000)

  test('creating in an org needs MEMBER or above there: a VIEWER gets 403, a stranger 404; a bad orgId 400', async () => {
    expect((await upload(viewer, { name: 'v', orgId: org })).status).toBe(403)
    expect((await upload(outsider, { name: 'o', orgId: org })).status).toBe(404)
    expect((await upload(outsider, { name: 'o' }, `?orgId=${org}`)).status).toBe(404)
    expect((await upload(owner, { name: 'x', orgId: 'not-a-uuid' })).status).toBe(400)
    expect((await upload(owner, { name: 'x', orgId: other }, `?orgId=${org}`)).status).toBe(400)
    // No datakit was left behind by the refusals.
    expect((await api('GET', `/api/datakits?orgId=${org}`, admin)).body.data.filter((d: any) => ['v', 'o', 'x'].includes(d.name))).toEqual([])
  })

  test('the org list pages with a cursor', async () => {
    const pagesOrg = await makeOrg([
      [owner, 'MEMBER'],
      [member, 'VIEWER'],
    ])
    const made: string[] = []
    for (let i = 0; i < 3; i++) made.push((await upload(owner, { name: `page-${i}`, orgId: pagesOrg })).body.data.id)
    const first = await api('GET', `/api/datakits?orgId=${pagesOrg}&limit=2`, member)
    expect(first.body.data.map((d: any) => d.id)).toEqual(made.slice(0, 2))
    const second = await api('GET', `/api/datakits?orgId=${pagesOrg}&limit=2&cursor=${first.body.meta.nextCursor}`, member)
    expect(second.body.data.map((d: any) => d.id)).toEqual(made.slice(2))
    expect(second.body.meta.nextCursor).toBeNull()
  }, 60_000)

  test('moving: only the owner, ADMIN in the org it goes to (and in the org it leaves); unknown fields refused', async () => {
    const kit = await readyKit(owner)
    expect(kit.orgId).toBeNull()
    // MEMBER in `org`: 403.
    expect((await api('PATCH', `/api/datakits/${kit.id}`, owner, { orgId: org })).status).toBe(403)
    // Someone else cannot see it at all.
    expect((await api('PATCH', `/api/datakits/${kit.id}`, admin, { orgId: org })).status).toBe(404)
    // An org the owner is not in: 404.
    const foreign = await makeOrg([[outsider, 'OWNER']])
    expect((await api('PATCH', `/api/datakits/${kit.id}`, owner, { orgId: foreign })).status).toBe(404)
    // Mass assignment is impossible.
    expect((await api('PATCH', `/api/datakits/${kit.id}`, owner, { ownerId: admin.id })).status).toBe(400)

    // ADMIN in `other`: moved, and its members see it.
    const moved = await api('PATCH', `/api/datakits/${kit.id}`, owner, { orgId: other, name: 'moved kit' })
    expect(moved.status).toBe(200)
    expect(moved.body.data).toMatchObject({ orgId: other, name: 'moved kit', ownerId: owner.id })
    expect((await api('GET', `/api/datakits/${kit.id}`, outsider)).status).toBe(200)

    // From `other` to `org`: ADMIN in `other` but only MEMBER in `org`.
    expect((await api('PATCH', `/api/datakits/${kit.id}`, owner, { orgId: org })).status).toBe(403)
    // The org's OWNER (not the datakit's owner) may not move it.
    expect((await api('PATCH', `/api/datakits/${kit.id}`, outsider, { orgId: null })).status).toBe(403)

    // Back to personal by its owner: outsiders lose it.
    const back = await api('PATCH', `/api/datakits/${kit.id}`, owner, { orgId: null })
    expect(back.status).toBe(200)
    expect(back.body.data.orgId).toBeNull()
    expect((await api('GET', `/api/datakits/${kit.id}`, outsider)).status).toBe(404)

    // Made ADMIN of `org`, the owner moves it there.
    await setRole(org, owner, 'ADMIN')
    try {
      expect((await api('PATCH', `/api/datakits/${kit.id}`, owner, { orgId: org })).body.data.orgId).toBe(org)
      expect((await api('GET', `/api/datakits/${kit.id}`, member)).status).toBe(200)
    } finally {
      await setRole(org, owner, 'MEMBER')
    }
  }, 60_000)

  test("the org's storage quota applies to its datakits, not the uploader's", async () => {
    const quotaOrg = await makeOrg([
      [owner, 'MEMBER'],
      [viewer, 'VIEWER'],
    ])
    const before = (await api('GET', '/api/datakits/storage', owner)).body.data.usedBytes
    const kit = await readyKit(owner, quotaOrg)
    // Counted against the org, not the uploader.
    expect((await api('GET', '/api/datakits/storage', owner)).body.data.usedBytes).toBe(before)
    const usage = await api('GET', `/api/datakits/storage?orgId=${quotaOrg}`, viewer)
    expect(usage.status).toBe(200)
    expect(usage.body.data).toMatchObject({ orgId: quotaOrg, quotaBytes: t.config.datakits.orgStorageQuotaBytes, overridden: false })
    expect(usage.body.data.usedBytes).toBeGreaterThan(kit.latestVersion.sizeBytes - 1)
    expect((await api('GET', `/api/datakits/storage?orgId=${quotaOrg}`, outsider)).status).toBe(404)

    // The org's admins chose less than what it holds: the next upload is refused, as a form
    // field (checked in the actor's turn) and with ?orgId= (checked while it streams).
    await t.db.sql`insert into org_quotas (org_id, storage_bytes) values (${quotaOrg}, ${usage.body.data.usedBytes + 10})`
    const refused = await upload(owner, { name: 'too much', orgId: quotaOrg })
    expect(refused.status).toBe(413)
    expect(refused.body.error).toContain('organisation')
    expect((await upload(owner, { name: 'too much' }, `?orgId=${quotaOrg}`)).status).toBe(413)
    // Personal uploads are not held back by the org's quota…
    const personal = await upload(owner, { name: 'personal' })
    expect(personal.status).toBe(201)
    // …but moving one into the org needs room there (the owner made ADMIN to move it).
    await setRole(quotaOrg, owner, 'ADMIN')
    const move = await api('PATCH', `/api/datakits/${personal.body.data.id}`, owner, { orgId: quotaOrg })
    expect(move.status).toBe(413)
    expect((await api('GET', `/api/datakits/${personal.body.data.id}`, owner)).body.data.orgId).toBeNull()

    // A ceiling set by a platform admin caps what the org's admins chose.
    await t.db.sql`update org_quotas set storage_bytes = ${1e12}, limit_storage_bytes = ${usage.body.data.usedBytes} where org_id = ${quotaOrg}`
    expect((await api('GET', `/api/datakits/storage?orgId=${quotaOrg}`, owner)).body.data.quotaBytes).toBe(usage.body.data.usedBytes)
    expect((await upload(owner, { name: 'too much' }, `?orgId=${quotaOrg}`)).status).toBe(413)

    // Raised: it fits again.
    await t.db.sql`update org_quotas set storage_bytes = null, limit_storage_bytes = null where org_id = ${quotaOrg}`
    expect((await upload(owner, { name: 'fits', orgId: quotaOrg })).status).toBe(201)
  }, 60_000)

  test("a datakit's topic: org VIEWERs may watch it, outsiders may not", async () => {
    const kit = await readyKit(owner, org)
    const ok = await wsClient(t.url, viewer.token)
    const no = await wsClient(t.url, outsider.token)
    try {
      ok.send({ op: 'subscribe', topic: `datakit:${kit.id}`, id: 's' })
      expect(await ok.next((m) => m.id === 's')).toMatchObject({ op: 'ack', for: 'subscribe' })
      no.send({ op: 'subscribe', topic: `datakit:${kit.id}`, id: 's' })
      expect(await no.next((m) => m.id === 's')).toMatchObject({ op: 'error', code: 'forbidden' })
      // The viewer hears a member's change.
      expect((await api('PATCH', `/api/datakits/${kit.id}`, member, { name: 'watched' })).status).toBe(200)
      expect(await ok.next((m) => m.op === 'event' && m.type === 'updated')).toMatchObject({ data: { id: kit.id, name: 'watched' } })
    } finally {
      ok.close()
      no.close()
    }
  }, 60_000)
})
