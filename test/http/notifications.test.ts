/**
 * Notifications on one node (mail jobs in-process), with real PostgreSQL, a real SMTP server
 * (Debian's aiosmtpd: test/support/smtp.ts) and, for the idle stop, the Docker Engine:
 *
 * - settings: e-mail on, every kind listed; a security kind cannot be turned off (422, nothing
 *   changed); an unknown kind is a 400;
 * - a pipeline run that succeeds: a notification in the list and live on `user:<id>`, an
 *   e-mail with the run's link under FRONTEND_URL; the same kind turned off: in-app only;
 * - the list: unread first and newest first, a page at a time; read, read all; someone else's
 *   notification is a 404 like a missing one; a notification recorded outside an actor is
 *   announced live too;
 * - an SMTP outage delays the mail and loses none: it arrives once when the server is back;
 *   a recipient refused for good is `failed` after one attempt;
 * - an organisation's invitation mail carries its link; the row keeps no token;
 * - DataKit storage past 90 % of the quota: one warning;
 * - a workstation stopped for idleness (Docker);
 * - SMTP_HOST unset: the API says e-mail is off; notifications are in-app only.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { notificationsFeature } from '../../src/features/notifications.ts'
import { pipelinesFeature } from '../../src/features/pipelines.ts'
import { workstationsFeature } from '../../src/features/workstations.ts'
import { record } from '../../src/store/notifications.ts'
import { queueInvitationMail, sealKey } from '../../src/store/notifications-mail.ts'
import { absentDockerSocket, testServer, type TestServer } from '../support/app.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'
import { dockerTestEnv, removeContainersOf } from '../support/docker.ts'
import { linkIn, startSmtpServer, type SmtpServer } from '../support/smtp.ts'
import { until } from '../support/until.ts'
import { wsClient } from '../support/ws.ts'

const docker = dockerTestEnv(import.meta.file)
const FRONTEND = 'https://app.example.com/quadrax/'
const CSV = 'id,name,score\n' + Array.from({ length: 40 }, (_, i) => `${i},name-${i},${(i * 7) % 13}`).join('\n') + '\n'

let smtp: SmtpServer
let t: TestServer
let uploadDir: string

beforeAll(async () => {
  smtp = await startSmtpServer()
  uploadDir = await mkdtemp(join(tmpdir(), 'quadrax-notifications-'))
  t = await testServer(
    {
      SMTP_HOST: '127.0.0.1',
      SMTP_PORT: String(smtp.port),
      FRONTEND_URL: FRONTEND,
      MAIL_RETRY_BASE_MS: '100',
      MAIL_RETRY_MAX_MS: '400',
      MAIL_SWEEP_INTERVAL_MS: '200',
      UPLOAD_DIR: uploadDir,
      // The CSV alone fits; with its Parquet copy it passes 90 % (the warning's test).
      USER_STORAGE_QUOTA_BYTES: String(CSV.length),
      WORKSTATION_IDLE_TIMEOUT: '2',
      ...(docker ? { DOCKER_HOST: docker.host, WORKSTATION_IMAGES: docker.image } : {}),
    },
    {
      features: [pipelinesFeature, datakitsFeature, workstationsFeature, notificationsFeature],
      actorConfig: { reminderPollMs: 100 },
      ...(docker ? {} : { localDockerSocket: absentDockerSocket() }),
    },
  )
})

afterAll(async () => {
  if (docker && t) await removeContainersOf(docker.raw, t.db.sql)
  await t?.stop()
  await smtp?.stop()
  await rm(uploadDir, { recursive: true, force: true })
})

type User = Awaited<ReturnType<TestServer['user']>>

async function ok<T = any>(s: TestServer, method: string, path: string, token: string, body?: unknown, status = 200): Promise<T> {
  const r = await s.json(method, path, { token, body })
  if (r.status !== status) throw new Error(`${method} ${path}: ${r.status} ${JSON.stringify(r.body)}`)
  return r.body.data as T
}

/** A pipeline of one `empty` step, run once to SUCCEEDED; its id and the run's. */
async function pipelineRun(s: TestServer, u: User, name: string): Promise<{ pipelineId: string; runId: string }> {
  const p = await ok(s, 'POST', '/api/pipelines', u.token, { name, definition: { steps: [{ id: 'a', kind: 'empty' }] } }, 201)
  const run = await ok(s, 'POST', `/api/pipelines/${p.id}/runs`, u.token, {}, 202)
  return { pipelineId: p.id, runId: run.id }
}

const notificationsOf = async (s: TestServer, u: User) => (await ok<any[]>(s, 'GET', '/api/notifications?limit=100', u.token))

async function sweeps(s: TestServer): Promise<number> {
  const text = await (await s.call('GET', '/metrics')).text()
  return Number(/^notification_sweeps_total (\d+)/m.exec(text)?.[1] ?? 0)
}

describe('settings', () => {
  test('e-mail is on and every kind is listed; a security kind cannot be turned off; an unknown kind is a 400', async () => {
    const u = await t.user()
    const before = await ok(t, 'GET', '/api/users/me/notifications', u.token)
    expect(before.email).toEqual({ available: true, reason: null, from: 'QUADRAX ML <no-reply@quadrax.local>' })
    expect(before.kinds.map((k: any) => k.kind)).toEqual([
      'training-run.finished',
      'training-run.failed',
      'container-job.finished',
      'container-job.failed',
      'pipeline-run.finished',
      'pipeline-run.failed',
      'workstation.idle-stopped',
      'quota.warning',
      'security.password-changed',
      'security.account-locked',
      'security.password-reset',
    ])
    expect(before.kinds.every((k: any) => k.email)).toBe(true)
    expect(before.kinds.filter((k: any) => !k.canTurnOff).map((k: any) => k.kind)).toEqual(['security.password-changed', 'security.account-locked', 'security.password-reset'])

    const refused = await t.json('PATCH', '/api/users/me/notifications', { token: u.token, body: { email: { 'pipeline-run.failed': false, 'security.password-changed': false } } })
    expect(refused.status).toBe(422)
    expect(refused.body).toEqual({
      success: false,
      error: 'Security notifications cannot be turned off',
      details: [{ field: 'email.security.password-changed', message: 'A security notification is always e-mailed' }],
    })
    // Nothing of the refused request was applied.
    expect(await ok(t, 'GET', '/api/users/me/notifications', u.token)).toEqual(before)
    expect((await t.json('PATCH', '/api/users/me/notifications', { token: u.token, body: { email: { 'no.such-kind': false } } })).status).toBe(400)
    expect((await t.json('PATCH', '/api/users/me/notifications', { token: u.token, body: { email: { 'quota.warning': 'no' } } })).status).toBe(400)

    const changed = await ok(t, 'PATCH', '/api/users/me/notifications', u.token, { email: { 'pipeline-run.failed': false, 'security.account-locked': true } })
    expect(changed.kinds.filter((k: any) => !k.email).map((k: any) => k.kind)).toEqual(['pipeline-run.failed'])
    expect(await ok(t, 'GET', '/api/users/me/notifications', u.token)).toEqual(changed)
  })
})

describe('a pipeline run that succeeds', () => {
  test('in the list and live on user:<id>, and e-mailed with its link; with the kind turned off, in-app only', async () => {
    const [a, b] = [await t.user(), await t.user()]
    await ok(t, 'PATCH', '/api/users/me/notifications', b.token, { email: { 'pipeline-run.finished': false } })
    const ws = await wsClient(t.url, a.token)
    ws.send({ op: 'subscribe', topic: `user:${a.id}`, id: 's' })
    await ws.next((m) => m.op === 'ack')

    const ra = await pipelineRun(t, a, 'nightly-a')
    const rb = await pipelineRun(t, b, 'nightly-b')
    const live = await ws.next((m) => m.op === 'event' && m.type === 'notification', 30_000)
    const link = `${FRONTEND}pipelines/${ra.pipelineId}/runs/${ra.runId}`
    expect(live.data).toMatchObject({ kind: 'pipeline-run.finished', title: 'Pipeline run succeeded: nightly-a', link, data: { runId: ra.runId, pipelineId: ra.pipelineId, pipelineName: 'nightly-a', status: 'SUCCEEDED' } })
    ws.close()

    const mail = await smtp.next((m) => m.to.includes(a.email) && m.subject === 'Pipeline run succeeded: nightly-a', "A's mail")
    expect(linkIn(mail, FRONTEND).toString()).toBe(link)
    expect(mail.text).toContain(`${FRONTEND}settings/notifications`)
    expect(mail.messageId).toMatch(/^<[0-9a-f-]{36}@quadrax>$/)
    const listed = await until(async () => (await notificationsOf(t, a)).find((n) => n.id === live.data.id && n.email.status === 'sent'), "A's notification, e-mail sent")
    expect(listed).toMatchObject({ kind: 'pipeline-run.finished', read: false, title: live.data.title, body: live.data.body, link })

    // B turned the kind off: the notification is there, its e-mail opted out and never queued.
    const nb = await until(async () => (await notificationsOf(t, b)).find((n) => n.data.runId === rb.runId), "B's notification")
    expect(nb).toMatchObject({ kind: 'pipeline-run.finished', email: { status: 'opted_out', sentAt: null } })
    expect(await t.db.sql`select 1 from notification_mails where user_id = ${b.id}`).toHaveLength(0)
    expect(smtp.received((m) => m.to.includes(b.email))).toEqual([])
  })
})

describe('the list', () => {
  test('unread first, newest first, a page at a time; read and read all; another user’s is a 404; recorded outside an actor, announced live', async () => {
    const [u, other] = [await t.user(), await t.user()]
    const ws = await wsClient(t.url, u.token)
    ws.send({ op: 'subscribe', topic: `user:${u.id}`, id: 's' })
    await ws.next((m) => m.op === 'ack')
    const ids: string[] = []
    for (let i = 0; i < 5; i++) {
      const n = await t.db.sql.begin((tx) => record(tx, { userId: u.id, kind: 'quota.warning', data: { usedBytes: 900 + i, quotaBytes: 1000, percent: 90 } }, { mailAvailable: false }))
      ids.push(n!.id)
    }
    // Each is announced on user:<id> by the notifier, in order.
    await until(() => ws.messages.filter((m) => m.type === 'notification').length === 5 || undefined, 'five notification events')
    expect(ws.messages.filter((m) => m.type === 'notification').map((m) => m.data.id)).toEqual(ids)
    ws.close()

    const [read] = await ok<any[]>(t, 'POST', '/api/notifications/read', u.token, { ids: [ids[3]] })
    expect(read).toMatchObject({ id: ids[3], read: true, email: { status: 'unavailable', sentAt: null } })
    expect(await ok(t, 'POST', '/api/notifications/read', u.token, { ids: [ids[3]] })).toEqual([read])

    const page1 = await t.json('GET', '/api/notifications?limit=2', { token: u.token })
    const page2 = await t.json('GET', `/api/notifications?limit=2&cursor=${page1.body.meta.nextCursor}`, { token: u.token })
    const page3 = await t.json('GET', `/api/notifications?limit=2&cursor=${page2.body.meta.nextCursor}`, { token: u.token })
    const order = [...page1.body.data, ...page2.body.data, ...page3.body.data].map((n: any) => n.id)
    expect(order).toEqual([ids[4], ids[2], ids[1], ids[0], ids[3]])
    expect(page3.body.meta).toEqual({ nextCursor: null, limit: 2 })
    expect((await ok<any[]>(t, 'GET', '/api/notifications?unread=true', u.token)).map((n) => n.id)).toEqual([ids[4], ids[2], ids[1], ids[0]])
    expect((await t.json('GET', '/api/notifications?cursor=nonsense', { token: u.token })).status).toBe(400)

    // Someone else's notification is, to them, one that does not exist; all or none, nothing is marked.
    const stranger = crypto.randomUUID()
    const theirs = await t.json('POST', '/api/notifications/read', { token: other.token, body: { ids: [ids[0]] } })
    const missing = await t.json('POST', '/api/notifications/read', { token: other.token, body: { ids: [stranger] } })
    expect(theirs.status).toBe(404)
    expect(theirs.body).toEqual({ ...missing.body, details: [{ field: 'ids', message: `${ids[0]}: no such notification of yours` }] })
    const mixed = await t.json('POST', '/api/notifications/read', { token: u.token, body: { ids: [ids[0], stranger] } })
    expect(mixed.body).toEqual({ success: false, error: 'Notification not found', details: [{ field: 'ids', message: `${stranger}: no such notification of yours` }] })
    expect((await ok<any[]>(t, 'GET', '/api/notifications?unread=true', u.token)).map((n) => n.id)).toContain(ids[0])
    expect((await t.json('POST', '/api/notifications/read', { token: u.token, body: { ids: [] } })).status).toBe(400)
    expect(await ok(t, 'POST', '/api/notifications/read-all', other.token)).toEqual({ marked: 0 })
    expect(await ok(t, 'POST', '/api/notifications/read-all', u.token)).toEqual({ marked: 4 })
    expect((await notificationsOf(t, u)).every((n) => n.read)).toBe(true)
    expect((await t.json('GET', '/api/notifications', {})).status).toBe(401)
  })
})

describe('delivery', () => {
  test('an SMTP outage delays the mail and loses none: it arrives once when the server is back', async () => {
    const u = await t.user()
    await smtp.stop()
    try {
      expect((await t.json('POST', '/api/auth/change-password', { token: u.token, body: { currentPassword: u.password, newPassword: 'Sturdier-Pass456' } })).status).toBe(200)
      // Tried and failed, more than once; still pending.
      await until(async () => {
        const [row] = await t.db.sql<{ status: string; attempts: number }[]>`select status, attempts from notification_mails where user_id = ${u.id}`
        return row && row.status === 'pending' && row.attempts >= 2
      }, 'failed attempts while the SMTP server is down')
      const [down] = await t.db.sql<{ lastError: string }[]>`select last_error as "lastError" from notification_mails where user_id = ${u.id}`
      expect(down!.lastError).toMatch(/ECONNREFUSED|connect/i)
    } finally {
      await smtp.start()
    }
    await smtp.next((m) => m.to.includes(u.email) && m.subject === 'Your password was changed', 'the mail after the outage')
    await until(async () => (await t.db.sql`select 1 from notification_mails where user_id = ${u.id} and status = 'sent'`).length === 1, 'the row marked sent')
    // Two more sweeps over the outbox (which would add a job for anything not sent): still one.
    const n = await sweeps(t)
    await until(async () => (await sweeps(t)) >= n + 2, 'two more sweeps')
    expect(smtp.received((m) => m.to.includes(u.email))).toHaveLength(1)
  }, 60_000)

  test('a recipient the server refuses for good: failed after one attempt, and the notification says so', async () => {
    const u = await t.user({ email: `reject-${crypto.randomUUID().slice(0, 8)}@example.com` })
    expect((await t.json('POST', '/api/auth/change-password', { token: u.token, body: { currentPassword: u.password, newPassword: 'Sturdier-Pass456' } })).status).toBe(200)
    const login = (await t.json('POST', '/api/auth/login', { body: { email: u.email, password: 'Sturdier-Pass456' } })).body.data
    const n = await until(async () => (await notificationsOf(t, { ...u, token: login.token })).find((x) => x.email.status === 'failed'), 'the notification with its failed e-mail')
    expect(n.kind).toBe('security.password-changed')
    const [row] = await t.db.sql<{ attempts: number; lastError: string }[]>`select attempts, last_error as "lastError" from notification_mails where user_id = ${u.id}`
    expect(row!.attempts).toBe(1)
    expect(row!.lastError).toContain('550')
  })

  test("an organisation's invitation: the mail carries the accept link; the row keeps no token", async () => {
    const to = `invitee-${crypto.randomUUID().slice(0, 8)}@example.com`
    const token = Buffer.from(crypto.getRandomValues(new Uint8Array(32))).toString('base64url')
    const expiresAt = new Date(Date.now() + 7 * 86_400_000)
    const id = await t.db.sql.begin((tx) => queueInvitationMail(tx, sealKey(t.config.jwt.secret!), { to, orgName: 'Acme <Analytics>', invitedBy: 'Ada Lovelace', role: 'MEMBER', token, expiresAt }))
    const mail = await smtp.next((m) => m.to.includes(to), 'the invitation')
    expect(mail.subject).toBe('Ada Lovelace invited you to Acme <Analytics>')
    expect(mail.html).toContain('Acme &lt;Analytics&gt;')
    const link = linkIn(mail, `${FRONTEND}invitations/accept`)
    expect(link.searchParams.get('token')).toBe(token)
    await until(async () => (await t.db.sql`select 1 from notification_mails where id = ${id} and status = 'sent'`).length === 1, 'the row marked sent')
    const [row] = await t.db.sql<{ data: string }[]>`select data::text as data from notification_mails where id = ${id}`
    expect(row!.data).not.toContain(token)
    expect(row!.data).not.toContain('sealed')
  })
})

describe('what the actors tell', () => {
  test('DataKit storage past 90 % of the quota: one warning', async () => {
    const u = await t.user()
    const form = await multipartBytes([
      { name: 'dataset', filename: 'scores.csv', contentType: 'text/csv', data: CSV },
      { name: 'name', value: 'scores' },
    ])
    const up = await postUpload(t.url, u.token, form)
    expect(up.status).toBe(201)
    const n = await until(async () => (await notificationsOf(t, u)).find((x) => x.kind === 'quota.warning'), 'the storage warning')
    expect(n.data.quotaBytes).toBe(CSV.length)
    expect(n.data.percent).toBeGreaterThanOrEqual(90)
    const mail = await smtp.next((m) => m.to.includes(u.email) && m.subject.startsWith('Your DataKit storage is'), 'the warning mail')
    expect(linkIn(mail, FRONTEND).toString()).toBe(`${FRONTEND}datakits`)
    // A second READY version would not warn again while it stays above 90 % (the notifier's flag).
    const [cursor] = await t.db.sql<{ storageWarned: boolean }[]>`select storage_warned as "storageWarned" from notification_cursors where user_id = ${u.id}`
    expect(cursor!.storageWarned).toBe(true)
    expect((await notificationsOf(t, u)).filter((x) => x.kind === 'quota.warning')).toHaveLength(1)
  }, 60_000)

  test.skipIf(!docker)('a workstation stopped for idleness', async () => {
    const u = await t.user()
    const w = await ok(t, 'POST', '/api/workstations', u.token, { name: 'idle-box', description: 'A workstation left idle', function: 'DEVELOPMENT', resources: { cpu: 0.5, memory: 64 } }, 201)
    await until(async () => (await ok(t, 'GET', `/api/workstations/${w.id}`, u.token)).status === 'STOPPED', 'the workstation created', 30_000)
    await ok(t, 'POST', `/api/workstations/${w.id}/start`, u.token, undefined, 202)
    const n = await until(async () => (await notificationsOf(t, u)).find((x) => x.kind === 'workstation.idle-stopped'), 'the idle-stop notification', 60_000)
    expect(n).toMatchObject({ title: 'Workstation stopped because it was idle: idle-box', link: `${FRONTEND}workstations/${w.id}`, data: { computeKind: 'workstation', id: w.id, name: 'idle-box' } })
    expect(n.data.reason).toMatch(/\(idle timeout\)$/)
    await smtp.next((m) => m.to.includes(u.email) && m.subject === 'Workstation stopped because it was idle: idle-box', 'the idle-stop mail')
  }, 90_000)
})

describe('without SMTP_HOST', () => {
  test('the API says e-mail is off; notifications are in-app only', async () => {
    const off = await testServer({}, { features: [pipelinesFeature, notificationsFeature], actorConfig: { reminderPollMs: 100 }, localDockerSocket: absentDockerSocket() })
    try {
      const u = await off.user()
      const settings = await ok(off, 'GET', '/api/users/me/notifications', u.token)
      expect(settings.email).toEqual({ available: false, reason: 'SMTP_HOST is not set: this server sends no e-mail; notifications are in-app only', from: null })
      const { runId } = await pipelineRun(off, u, 'offline')
      const n = await until(async () => (await notificationsOf(off, u)).find((x) => x.data.runId === runId), 'the notification')
      expect(n.email).toEqual({ status: 'unavailable', sentAt: null })
      expect(await off.db.sql`select 1 from notification_mails`).toHaveLength(0)
    } finally {
      await off.stop()
    }
  }, 60_000)
})
