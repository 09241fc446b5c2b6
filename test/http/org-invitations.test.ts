/**
 * Invitations into an organisation on a real server, PostgreSQL and a real SMTP server
 * (test/support/smtp.ts): invite → the e-mail arrives with its link → the matching user accepts
 * → a member; another user's account is refused; the token works once; revoked and expired
 * invitations fail; a new invitation replaces a pending one. With e-mail off the inviter gets the
 * token in the answer instead. The organisation's audit log shows who joined, from where, to its
 * OWNERs and ADMINs only.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { notificationsFeature } from '../../src/features/notifications.ts'
import { orgsFeature } from '../../src/features/orgs.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { multipartBytes } from '../support/datakit-upload.ts'
import { sampleRows, tempDir, toDelimited } from '../support/datasets.ts'
import { linkIn, startSmtpServer, type SmtpServer } from '../support/smtp.ts'
import { until } from '../support/until.ts'

type U = Awaited<ReturnType<TestServer['user']>>

const FRONTEND = 'https://app.example.com/quadrax/'
let smtp: SmtpServer
let t: TestServer
const dir = tempDir('quadrax-org-invitations-test-')

beforeAll(async () => {
  smtp = await startSmtpServer()
  t = await testServer(
    {
      SMTP_HOST: '127.0.0.1',
      SMTP_PORT: String(smtp.port),
      SMTP_FROM: 'QUADRAX test <quadrax@test.local>',
      FRONTEND_URL: FRONTEND,
      MAIL_RETRY_BASE_MS: '100',
      MAIL_SWEEP_INTERVAL_MS: '200',
      TRUST_PROXY: 'true',
      UPLOAD_DIR: join(dir.path, 'uploads'),
    },
    { features: [notificationsFeature, orgsFeature, datakitsFeature] },
  )
})
afterAll(async () => {
  await t?.stop()
  await smtp?.stop()
  dir[Symbol.dispose]()
})

async function newOrg(owner: U, name = 'Research') {
  const r = await t.json('POST', '/api/orgs', { token: owner.token, body: { name, slug: `org-${crypto.randomUUID().slice(0, 8)}` } })
  expect(r.status).toBe(201)
  return r.body.data as { id: string; name: string }
}

const invite = (by: U, orgId: string, email: string, role = 'MEMBER') => t.json('POST', `/api/orgs/${orgId}/invitations`, { token: by.token, body: { email, role } })
const accept = (u: U, token: string, ip = '192.0.2.1') =>
  t.json('POST', `/api/invitations/${encodeURIComponent(token)}/accept`, { token: u.token, headers: { 'x-forwarded-for': ip, 'user-agent': 'invite-test/1.0' } })

/** The n-th invitation mail to `email` (from 1), and the token of its link. */
async function invitationMail(email: string, n = 1) {
  const mail = await until(() => smtp.received((m) => m.to.includes(email) && m.subject.includes('invited you to'))[n - 1], `invitation mail ${n} to ${email}`)
  const link = linkIn(mail, `${FRONTEND}invitations/accept`)
  return { mail, token: link.searchParams.get('token')! }
}

describe('invitations', () => {
  test('invite → e-mail over SMTP with the link → the invited user accepts → a member with the role; the token works once', async () => {
    const owner = await t.user()
    const invitee = await t.user()
    const org = await newOrg(owner, 'Vision Lab')
    const r = await invite(owner, org.id, invitee.email.toUpperCase(), 'ADMIN')
    expect(r.status).toBe(201)
    expect(r.body.data).toMatchObject({ orgId: org.id, email: invitee.email, role: 'ADMIN', state: 'pending', invitedBy: owner.id, emailSent: true })
    expect(r.body.data.token).toBeUndefined()
    expect(r.body.data.acceptUrl).toBeUndefined()

    const { mail, token } = await invitationMail(invitee.email)
    expect(mail.subject).toMatch(/^Test User\d+ invited you to Vision Lab$/)
    expect(mail.text).toContain('as ADMIN')
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/)
    // Only the token's SHA-256 is stored.
    const [row] = await t.db.sql`select token_hash from org_invitations where id = ${r.body.data.id}`
    expect(Buffer.from(row!.token_hash).equals(new Bun.CryptoHasher('sha256').update(token).digest() as Buffer)).toBe(true)

    expect((await t.json('GET', `/api/orgs/${org.id}`, { token: invitee.token })).status).toBe(404)
    const ok = await accept(invitee, token)
    expect(ok.status).toBe(200)
    expect(ok.body.data).toMatchObject({ orgId: org.id, invitationId: r.body.data.id, role: 'ADMIN', previousRole: null, org: { id: org.id, name: 'Vision Lab', role: 'ADMIN' } })
    expect((await t.json('GET', `/api/orgs/${org.id}`, { token: invitee.token })).body.data.role).toBe('ADMIN')

    const again = await accept(invitee, token)
    expect(again.status).toBe(409)
    const listed = await t.json('GET', `/api/orgs/${org.id}/invitations`, { token: owner.token })
    expect(listed.body.data.map((i: any) => [i.id, i.state, i.acceptedBy])).toEqual([[r.body.data.id, 'accepted', invitee.id]])
    expect(JSON.stringify(listed.body)).not.toContain(token)
  })

  test("another user's account cannot accept (403, the invitation stays pending); an unknown token is a 404", async () => {
    const owner = await t.user()
    const invitee = await t.user()
    const intruder = await t.user()
    const org = await newOrg(owner)
    const r = await invite(owner, org.id, invitee.email)
    const { token } = await invitationMail(invitee.email)
    const wrong = await accept(intruder, token)
    expect(wrong.status).toBe(403)
    expect(wrong.body.error).not.toContain(invitee.email)
    expect((await t.json('GET', `/api/orgs/${org.id}`, { token: intruder.token })).status).toBe(404)
    expect((await accept(intruder, 'x'.repeat(43))).status).toBe(404)
    expect((await t.json('POST', `/api/invitations/${token}/accept`)).status).toBe(401)
    expect((await accept(invitee, token)).status).toBe(200)
    expect((await t.json('GET', `/api/orgs/${org.id}/invitations?state=accepted`, { token: owner.token })).body.data.map((i: any) => i.id)).toEqual([r.body.data.id])
  })

  test('revoked and expired invitations cannot be accepted; a new invitation replaces a pending one', async () => {
    const owner = await t.user()
    const invitee = await t.user()
    const org = await newOrg(owner)
    const first = await invite(owner, org.id, invitee.email, 'VIEWER')
    const { token: firstToken } = await invitationMail(invitee.email, 1)
    const second = await invite(owner, org.id, invitee.email, 'MEMBER')
    expect(second.status).toBe(201)
    const { token: secondToken } = await invitationMail(invitee.email, 2)
    const states = await t.json('GET', `/api/orgs/${org.id}/invitations`, { token: owner.token })
    expect(states.body.data.map((i: any) => [i.id, i.state])).toEqual([
      [first.body.data.id, 'revoked'],
      [second.body.data.id, 'pending'],
    ])
    expect((await accept(invitee, firstToken)).status).toBe(409)

    const revoked = await t.json('DELETE', `/api/orgs/${org.id}/invitations/${second.body.data.id}`, { token: owner.token })
    expect(revoked.status).toBe(200)
    expect(revoked.body.data.state).toBe('revoked')
    expect((await t.json('DELETE', `/api/orgs/${org.id}/invitations/${second.body.data.id}`, { token: owner.token })).status).toBe(409)
    expect((await t.json('DELETE', `/api/orgs/${org.id}/invitations/${crypto.randomUUID()}`, { token: owner.token })).status).toBe(404)
    const refused = await accept(invitee, secondToken)
    expect(refused.status).toBe(409)
    expect(refused.body.error).toContain('revoked')

    const third = await invite(owner, org.id, invitee.email)
    const { token: thirdToken } = await invitationMail(invitee.email, 3)
    await t.db.sql`update org_invitations set expires_at = now() - interval '1 second' where id = ${third.body.data.id}`
    expect((await t.json('GET', `/api/orgs/${org.id}/invitations?state=expired`, { token: owner.token })).body.data.map((i: any) => i.id)).toEqual([third.body.data.id])
    const expired = await accept(invitee, thirdToken)
    expect(expired.status).toBe(409)
    expect(expired.body.error).toContain('expired')
    expect((await t.json('GET', `/api/orgs/${org.id}`, { token: invitee.token })).status).toBe(404)
  })

  test('who may invite: ADMINs and OWNERs, not above their own role; not a member already; outsiders get 404', async () => {
    const [owner, admin, member, outsider] = [await t.user(), await t.user(), await t.user(), await t.user()]
    const org = await newOrg(owner)
    await t.db.sql`insert into org_members (org_id, user_id, role) values (${org.id}, ${admin.id}, 'ADMIN'), (${org.id}, ${member.id}, 'MEMBER')`
    expect((await invite(member, org.id, 'someone@example.com')).status).toBe(403)
    expect((await invite(admin, org.id, 'someone@example.com', 'OWNER')).status).toBe(403)
    expect((await invite(admin, org.id, 'someone@example.com', 'ADMIN')).status).toBe(201)
    expect((await invite(owner, org.id, member.email)).status).toBe(409)
    expect((await invite(outsider, org.id, 'someone@example.com')).status).toBe(404)
    expect((await t.json('GET', `/api/orgs/${org.id}/invitations`, { token: member.token })).status).toBe(403)
    expect((await t.json('GET', `/api/orgs/${org.id}/invitations`, { token: outsider.token })).status).toBe(404)
    expect((await t.json('POST', `/api/orgs/${org.id}/invitations`, { token: owner.token, body: { email: 'not-an-email' } })).status).toBe(400)
    expect((await t.json('POST', `/api/orgs/${org.id}/invitations`, { token: owner.token, body: { email: 'a@example.com', role: 'MEMBER', orgId: org.id } })).status).toBe(400)
  })

  test('a member accepting keeps the higher role: accepting never demotes', async () => {
    const owner = await t.user()
    const u = await t.user()
    const org = await newOrg(owner)
    const r = await invite(owner, org.id, u.email, 'VIEWER')
    const { token } = await invitationMail(u.email)
    await t.db.sql`insert into org_members (org_id, user_id, role) values (${org.id}, ${u.id}, 'ADMIN')`
    const ok = await accept(u, token)
    expect(ok.status).toBe(200)
    expect(ok.body.data).toMatchObject({ invitationId: r.body.data.id, role: 'ADMIN', previousRole: 'ADMIN' })
  })
})

describe("an organisation's audit log", () => {
  test('shows org.member_added with the actor and IP, and the member changes, to OWNERs and ADMINs; MEMBERs 403; other orgs 404', async () => {
    const owner = await t.user()
    const invitee = await t.user()
    const stranger = await t.user()
    const org = await newOrg(owner)
    await newOrg(stranger)
    const inv = await invite(owner, org.id, invitee.email, 'MEMBER')
    const { token } = await invitationMail(invitee.email)
    expect((await accept(invitee, token, '203.0.113.77')).status).toBe(200)
    expect((await t.json('PATCH', `/api/orgs/${org.id}/members/${invitee.id}`, { token: owner.token, body: { role: 'VIEWER' } })).status).toBe(200)

    const events = await until(async () => {
      const r = await t.json('GET', `/api/orgs/${org.id}/audit`, { token: owner.token })
      expect(r.status).toBe(200)
      const actions = r.body.data.map((e: any) => e.action)
      // The member changes are written with them; the create and the invitation after the fact.
      return ['org.member_added', 'org.member_role_changed', 'org.invitation_created', 'org.create'].every((a) => actions.includes(a)) ? r.body.data : undefined
    }, 'the org audit events')
    const added = events.find((e: any) => e.action === 'org.member_added')
    expect(added).toMatchObject({ orgId: org.id, actorId: invitee.id, actorEmail: invitee.email, targetType: 'user', targetId: invitee.id, outcome: 'success', status: 200, ip: '203.0.113.77', userAgent: 'invite-test/1.0' })
    expect(JSON.stringify(events)).not.toContain(token)
    // Written in the change's own transaction, once (the request's after-the-fact event is not added), with what changed.
    const changed = events.filter((e: any) => e.action === 'org.member_role_changed')
    expect(changed).toHaveLength(1)
    expect(changed[0]).toMatchObject({ orgId: org.id, actorId: owner.id, targetType: 'user', targetId: invitee.id, outcome: 'success', detail: { from: 'MEMBER', to: 'VIEWER' } })
    expect(events.filter((e: any) => e.action === 'org.member_added')).toHaveLength(1)
    expect(added.detail).toMatchObject({ role: 'MEMBER', previousRole: null })
    expect(events.find((e: any) => e.action === 'org.invitation_created')).toMatchObject({ orgId: org.id, actorId: owner.id, targetType: 'invitation', targetId: inv.body.data.id })
    expect(events.find((e: any) => e.action === 'org.create')).toMatchObject({ orgId: org.id, targetType: 'org', targetId: org.id })
    expect(events.every((e: any) => e.orgId === org.id)).toBe(true)

    // Filters and the export are the admin route's.
    const filtered = await t.json('GET', `/api/orgs/${org.id}/audit?action=org.member_&actorId=${invitee.id}`, { token: owner.token })
    expect(filtered.body.data.map((e: any) => e.action)).toEqual(['org.member_added'])
    const res = await t.call('GET', `/api/orgs/${org.id}/audit?format=ndjson`, { token: owner.token })
    expect(res.headers.get('content-type')).toContain('application/x-ndjson')
    const lines = (await res.text()).trim().split('\n').map((l) => JSON.parse(l))
    expect(lines.map((e) => e.seq)).toEqual([...lines.map((e) => e.seq)].sort((a, b) => a - b))
    expect(lines.every((e) => e.orgId === org.id)).toBe(true)

    // The invitee is a VIEWER now: 403. A member of another org (and an outsider): 404.
    expect((await t.json('GET', `/api/orgs/${org.id}/audit`, { token: invitee.token })).status).toBe(403)
    expect((await t.json('GET', `/api/orgs/${org.id}/audit`, { token: stranger.token })).status).toBe(404)
    // The stranger's own org shows none of this.
    const mine = (await t.json('GET', '/api/orgs', { token: stranger.token })).body.data[0].id
    const theirs = await t.json('GET', `/api/orgs/${mine}/audit`, { token: stranger.token })
    expect(theirs.body.data.map((e: any) => e.action)).toEqual(['org.create'])
  })
})

describe('with e-mail off', () => {
  test('an invitation is still made; its answer (only) carries the token and the accept link', async () => {
    const off = await testServer({ FRONTEND_URL: FRONTEND }, { features: [orgsFeature] })
    try {
      const owner = await off.user()
      const invitee = await off.user()
      const org = (await off.json('POST', '/api/orgs', { token: owner.token, body: { name: 'No mail', slug: 'no-mail' } })).body.data
      const r = await off.json('POST', `/api/orgs/${org.id}/invitations`, { token: owner.token, body: { email: invitee.email } })
      expect(r.status).toBe(201)
      expect(r.body.data).toMatchObject({ emailSent: false, role: 'MEMBER', state: 'pending' })
      expect(r.body.data.acceptUrl).toBe(`${FRONTEND}invitations/accept?token=${r.body.data.token}`)
      const [queued] = await off.db.sql`select count(*)::int as n from notification_mails`
      expect(queued!.n).toBe(0)
      const listed = await off.json('GET', `/api/orgs/${org.id}/invitations`, { token: owner.token })
      expect(listed.body.data[0].token).toBeUndefined()
      const ok = await off.json('POST', `/api/invitations/${r.body.data.token}/accept`, { token: invitee.token })
      expect(ok.status).toBe(200)
      expect(ok.body.data.role).toBe('MEMBER')
    } finally {
      await off.stop()
    }
  })
})

describe('the whole way in', () => {
  test('invitation → e-mail received → accept → the new MEMBER sees the org\'s DataKit, queries it, and cannot delete it', async () => {
    const owner = await t.user()
    const invitee = await t.user()
    const org = await newOrg(owner, 'Churn Team')
    // The owner's DataKit, made in the org.
    const form = await multipartBytes([
      { name: 'dataset', filename: 'churn.csv', contentType: 'text/csv', data: toDelimited(sampleRows(20)) },
      { name: 'name', value: 'churn' },
      { name: 'orgId', value: org.id },
    ])
    const up = await fetch(`${t.url}/api/datakits/upload`, { method: 'POST', headers: { 'content-type': form.contentType, authorization: `Bearer ${owner.token}` }, body: form.body })
    expect(up.status).toBe(201)
    const kitId = ((await up.json()) as { data: { id: string } }).data.id
    await until(async () => (await t.json('GET', `/api/datakits/${kitId}`, { token: owner.token })).body.data.status === 'READY', 'the DataKit to be READY')

    // Before joining, the DataKit does not exist for the invitee.
    expect((await t.json('GET', `/api/datakits/${kitId}`, { token: invitee.token })).status).toBe(404)
    expect((await invite(owner, org.id, invitee.email)).status).toBe(201)
    const { token } = await invitationMail(invitee.email)
    expect((await accept(invitee, token)).status).toBe(200)

    const list = await t.json('GET', `/api/datakits?orgId=${org.id}`, { token: invitee.token })
    expect(list.status).toBe(200)
    expect(list.body.data.map((d: { id: string }) => d.id)).toEqual([kitId])
    const q = await t.json('POST', `/api/datakits/${kitId}/query`, { token: invitee.token, body: { sql: 'select count(*) as n from data' } })
    expect(q.status).toBe(200)
    expect(q.body.data.rows).toEqual([{ n: 20 }])
    const del = await t.json('DELETE', `/api/datakits/${kitId}`, { token: invitee.token })
    expect(del.status).toBe(403)
    expect(del.body.success).toBe(false)
    expect((await t.json('GET', `/api/datakits/${kitId}`, { token: owner.token })).body.data.status).toBe('READY')
  })
})
