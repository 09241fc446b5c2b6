/**
 * Password reset by e-mail, and the security notices, on a real server (PostgreSQL) with a real
 * SMTP server (Debian's aiosmtpd, test/support/smtp.ts):
 *
 * - forgot-password answers the same (status, body, headers) for a known and an unknown e-mail;
 *   only the known one gets a mail, whose link starts at FRONTEND_URL; only the token's SHA-256
 *   is stored, and the outbox row never holds the token in clear;
 * - the token works once: the password is set, every session and refresh token of the user is
 *   revoked, "password changed" is e-mailed and notified in-app; a second use is a 400;
 * - a token expires; a weak new password is refused without spending it;
 * - a password change spends open links and sends "password changed"; a lockout sends "sign-ins
 *   paused" once; an unknown e-mail's lockout sends nothing;
 * - forgot- and reset-password share a per-source budget (429); with SMTP_HOST unset,
 *   forgot-password is a 503 for every e-mail.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { notificationsFeature } from '../../src/features/notifications.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { linkIn, startSmtpServer, type SmtpServer } from '../support/smtp.ts'
import { until } from '../support/until.ts'

const FRONTEND = 'https://app.example.com/quadrax/'
const NEW_PASSWORD = 'Sturdier-Pass456'
const sha256 = (s: string) => new Bun.CryptoHasher('sha256').update(s).digest('hex')

let smtp: SmtpServer
let t: TestServer

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
      LOGIN_LOCKOUT_THRESHOLD: '3',
    },
    { features: [notificationsFeature] },
  )
})

afterAll(async () => {
  await t?.stop()
  await smtp?.stop()
})

const forgot = (email: string) => t.call('POST', '/api/auth/forgot-password', { body: { email } })

/** The reset link e-mailed to `email` (the n-th, from 1), and its token. */
async function resetMail(email: string, n = 1) {
  const mail = await until(() => smtp.received((m) => m.to.includes(email) && m.subject === 'Reset your password')[n - 1], `reset mail ${n} to ${email}`)
  const link = linkIn(mail, `${FRONTEND}reset-password`)
  return { mail, link, token: link.searchParams.get('token')! }
}

/** Headers that differ between any two responses (the request's id, the clock, the draining budget). */
const VOLATILE = new Set(['x-request-id', 'date', 'ratelimit-remaining', 'ratelimit-reset', 'content-length'])
const stable = (h: Headers) => Object.fromEntries([...h.entries()].filter(([k]) => !VOLATILE.has(k)))

describe('forgot-password', () => {
  test('answers alike for a known and an unknown e-mail; only the known one gets a mail, with a link at FRONTEND_URL', async () => {
    const u = await t.user()
    const unknown = `nobody-${crypto.randomUUID().slice(0, 8)}@example.com`
    const [a, b] = [await forgot(u.email), await forgot(unknown)]
    expect(a.status).toBe(202)
    expect([b.status, await b.text()]).toEqual([a.status, await a.text()])
    expect(stable(b.headers)).toEqual(stable(a.headers))

    const { mail, link, token } = await resetMail(u.email)
    expect(mail.to).toEqual([u.email])
    expect(mail.headerFrom).toBe('QUADRAX test <quadrax@test.local>')
    expect(link.origin + link.pathname).toBe(`${FRONTEND}reset-password`)
    expect(token).toMatch(/^[A-Za-z0-9_-]{43}$/)
    expect(mail.html).toContain(`href="${link.toString().replaceAll('&', '&amp;')}"`)

    // Both requests were worked through: the unknown address got no mail, and never will (no row).
    await t.server.http.auth.resets.idle()
    expect(smtp.received((m) => m.to.includes(unknown))).toEqual([])
    expect(await t.db.sql`select 1 from notification_mails where to_address = ${unknown}`).toHaveLength(0)
    // Only the token's hash is stored; the outbox row, sent, keeps no copy of it.
    const [reset] = await t.db.sql<{ tokenHash: string }[]>`select token_hash as "tokenHash" from password_resets where user_id = ${u.id}`
    expect(reset!.tokenHash).toBe(sha256(token))
    const rows = await t.db.sql<{ data: string; status: string }[]>`select data::text as data, status from notification_mails where user_id = ${u.id} and kind = 'security.password-reset'`
    expect(rows.map((r) => r.status)).toEqual(['sent'])
    expect(rows[0]!.data).not.toContain(token)
    expect(rows[0]!.data).not.toContain('sealed')
  })

  test('the token works once: the password is set, every session revoked, "password changed" e-mailed and notified', async () => {
    const u = await t.user()
    const second = (await t.json('POST', '/api/auth/login', { body: { email: u.email, password: u.password } })).body.data
    expect((await forgot(u.email)).status).toBe(202)
    const { token } = await resetMail(u.email)

    const r = await t.json('POST', '/api/auth/reset-password', { body: { token, newPassword: NEW_PASSWORD } })
    expect(r).toMatchObject({ status: 200, body: { success: true, data: { passwordReset: true } } })
    // Every session: both access tokens and the refresh tokens stop working.
    for (const token of [u.token, second.token]) expect((await t.call('GET', '/api/auth/me', { token })).status).toBe(401)
    for (const refreshToken of [u.refreshToken, second.refreshToken]) expect((await t.call('POST', '/api/auth/refresh', { body: { refreshToken } })).status).toBe(401)
    expect((await t.call('POST', '/api/auth/login', { body: { email: u.email, password: u.password } })).status).toBe(401)
    const login = await t.json('POST', '/api/auth/login', { body: { email: u.email, password: NEW_PASSWORD } })
    expect(login.status).toBe(200)

    // Once only.
    const again = await t.json('POST', '/api/auth/reset-password', { body: { token, newPassword: 'Another-Pass789' } })
    expect(again.status).toBe(400)
    expect(again.body).toEqual({ success: false, error: 'Validation failed', details: [{ field: 'token', message: 'This reset link is invalid, expired or already used; ask for a new one' }] })

    const changed = await smtp.next((m) => m.to.includes(u.email) && m.subject === 'Your password was changed', '"password changed" mail')
    expect(changed.text).toContain('reset with an e-mailed link')
    expect(changed.text).toContain(`${FRONTEND}forgot-password`)
    const list = await t.json('GET', '/api/notifications', { token: login.body.data.token })
    expect(list.body.data.map((n: any) => [n.kind, n.data.via])).toEqual([['security.password-changed', 'reset']])
  })

  test('a token expires; a weak new password is refused without spending the token', async () => {
    const u = await t.user()
    await forgot(u.email)
    const { token } = await resetMail(u.email)
    const weak = await t.json('POST', '/api/auth/reset-password', { body: { token, newPassword: 'weakweak' } })
    expect(weak.status).toBe(400)
    expect(weak.body.details).toEqual([{ field: 'newPassword', message: 'Password must contain an uppercase letter, a digit, a symbol' }])
    const [row] = await t.db.sql<{ minutes: number }[]>`
      select round(extract(epoch from expires_at - created_at) / 60)::int as minutes from password_resets where token_hash = ${sha256(token)} and used_at is null`
    expect(row!.minutes).toBe(30)
    await t.db.sql`update password_resets set expires_at = now() - interval '1 second' where token_hash = ${sha256(token)}`
    const expired = await t.json('POST', '/api/auth/reset-password', { body: { token, newPassword: NEW_PASSWORD } })
    expect(expired.status).toBe(400)
    expect(expired.body.details[0].field).toBe('token')
    expect((await t.call('POST', '/api/auth/login', { body: { email: u.email, password: u.password } })).status).toBe(200)
  })
})

describe('security notices', () => {
  test('a password change spends open reset links and e-mails "password changed"', async () => {
    const u = await t.user()
    await forgot(u.email)
    const { token } = await resetMail(u.email)
    const changed = await t.json('POST', '/api/auth/change-password', { token: u.token, body: { currentPassword: u.password, newPassword: NEW_PASSWORD } })
    expect(changed.status).toBe(200)
    const mail = await smtp.next((m) => m.to.includes(u.email) && m.subject === 'Your password was changed', '"password changed" mail')
    expect(mail.text).toContain('was changed on')
    expect((await t.json('POST', '/api/auth/reset-password', { body: { token, newPassword: 'Another-Pass789' } })).status).toBe(400)
  })

  test('a lockout e-mails "sign-ins paused" once; an unknown e-mail’s lockout sends nothing', async () => {
    const u = await t.user()
    const unknown = `nobody-${crypto.randomUUID().slice(0, 8)}@example.com`
    const fail = (email: string) => t.call('POST', '/api/auth/login', { body: { email, password: 'Wrong-Pass999' } })
    const statuses: number[] = []
    for (let i = 0; i < 5; i++) statuses.push((await fail(u.email)).status, (await fail(unknown)).status)
    // LOGIN_LOCKOUT_THRESHOLD=3: three evaluated failures each, then the waits (429).
    expect(statuses).toEqual([401, 401, 401, 401, 401, 401, 429, 429, 429, 429])
    const mail = await smtp.next((m) => m.to.includes(u.email) && m.subject === 'Sign-ins to your account were paused', '"sign-ins paused" mail')
    expect(mail.text).toContain(`Reset your password: ${FRONTEND}forgot-password`)
    await t.server.http.auth.resets.idle()
    expect(await t.db.sql`select 1 from notifications where user_id = ${u.id} and kind = 'security.account-locked'`).toHaveLength(1)
    expect(await t.db.sql`select 1 from notification_mails where to_address = ${unknown}`).toHaveLength(0)
  })
})

describe('limits and e-mail off', () => {
  test('forgot- and reset-password share a per-source budget; without SMTP_HOST forgot-password is a 503 for every e-mail', async () => {
    const off = await testServer({ AUTH_PASSWORD_RESET_RATE_LIMIT_MAX_REQUESTS: '3' }, { features: [notificationsFeature] })
    try {
      const u = await off.user()
      const a = await off.json('POST', '/api/auth/forgot-password', { body: { email: u.email } })
      const b = await off.json('POST', '/api/auth/forgot-password', { body: { email: 'nobody@example.com' } })
      expect(a.status).toBe(503)
      expect(a.body).toEqual({
        success: false,
        error: 'E-mail is off on this server (SMTP_HOST is not set), so a password cannot be reset by e-mail; ask an administrator to reset it',
        details: [],
      })
      expect(b).toMatchObject({ status: a.status, body: a.body })
      expect((await off.call('POST', '/api/auth/reset-password', { body: { token: 'x'.repeat(43), newPassword: NEW_PASSWORD } })).status).toBe(400)
      const limited = await off.call('POST', '/api/auth/reset-password', { body: { token: 'x'.repeat(43), newPassword: NEW_PASSWORD } })
      expect(limited.status).toBe(429)
      expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0)
      expect(limited.headers.get('ratelimit-limit')).toBe('3')
    } finally {
      await off.stop()
    }
  }, 60_000)
})
