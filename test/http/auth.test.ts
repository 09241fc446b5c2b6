import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { Jwt } from '../../src/core/jwt.ts'
import { PASSWORD, testServer, type TestServer } from '../support/app.ts'

let t: TestServer
beforeAll(async () => {
  t = await testServer({ LOGIN_LOCKOUT_THRESHOLD: '3' }, { refreshReuseGraceMs: 0 })
})
afterAll(() => t.stop())

const registration = (email: string) => ({ email, password: PASSWORD, firstName: 'John', lastName: 'Doe', organization: 'Company Inc' })

describe('register and login', () => {
  test('register with the guide body answers 201 with the user and tokens', async () => {
    const r = await t.json('POST', '/api/auth/register', { body: registration('john@example.com') })
    expect(r.status).toBe(201)
    expect(r.body.success).toBe(true)
    expect(r.body.data.user).toEqual({ id: expect.any(String), email: 'john@example.com', firstName: 'John', lastName: 'Doe', role: 'USER' })
    expect(r.body.data.token).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/)
    expect(JSON.stringify(r.body)).not.toContain('passwordHash')
  })

  test('a taken email is a 409 (case-insensitive)', async () => {
    const r = await t.json('POST', '/api/auth/register', { body: registration('JOHN@example.com') })
    expect(r.status).toBe(409)
    expect(r.body).toEqual({ success: false, error: 'An account with this email already exists', details: [{ field: 'email', message: 'Email is already registered' }] })
  })

  test('invalid email is reported as in the guide', async () => {
    const r = await t.json('POST', '/api/auth/register', { body: { ...registration('x'), email: 'not-an-email' } })
    expect(r.status).toBe(400)
    expect(r.body).toEqual({ success: false, error: 'Validation failed', details: [{ field: 'email', message: 'Invalid email format' }] })
  })

  test('weak passwords are refused with the rules they break', async () => {
    const r = await t.json('POST', '/api/auth/register', { body: { ...registration('weak@example.com'), password: 'password' } })
    expect(r.status).toBe(400)
    expect(r.body.details).toEqual([{ field: 'password', message: 'Password must contain an uppercase letter, a digit, a symbol' }])
    const again = await t.json('POST', '/api/auth/login', { body: { email: 'weak@example.com', password: 'password' } })
    expect(again.status).toBe(401) // nothing was written
  })

  test('unknown fields (mass assignment of role) are refused', async () => {
    const r = await t.json('POST', '/api/auth/register', { body: { ...registration('sneaky@example.com'), role: 'ADMIN' } })
    expect(r.status).toBe(400)
    const [row] = await t.db.sql`select count(*)::int as n from users where email = 'sneaky@example.com'`
    expect(row!.n).toBe(0)
  })

  test('login answers exactly the guide shape plus refresh token and expiry', async () => {
    const r = await t.json('POST', '/api/auth/login', { body: { email: 'john@example.com', password: PASSWORD } })
    expect(r.status).toBe(200)
    expect(r.body).toEqual({
      success: true,
      data: {
        user: { id: expect.any(String), email: 'john@example.com', firstName: 'John', lastName: 'Doe', role: 'USER' },
        token: expect.any(String),
        refreshToken: expect.any(String),
        expiresIn: 900,
        refreshExpiresIn: 2592000,
        tokenType: 'Bearer',
      },
    })
  })

  test('wrong password and unknown email give the same 401', async () => {
    const a = await t.json('POST', '/api/auth/login', { body: { email: 'john@example.com', password: 'Wrong123!x' } })
    const b = await t.json('POST', '/api/auth/login', { body: { email: 'nobody@example.com', password: 'Wrong123!x' } })
    expect(a.status).toBe(401)
    expect(b.status).toBe(401)
    expect(a.body).toEqual(b.body)
  })

  test('GET /api/auth/me returns the caller', async () => {
    const u = await t.user()
    const r = await t.json('GET', '/api/auth/me', { token: u.token })
    expect(r.status).toBe(200)
    expect(r.body.data).toMatchObject({ id: u.id, email: u.email, role: 'USER', isActive: true })
    expect(Object.keys(r.body.data).sort()).toEqual(['createdAt', 'email', 'firstName', 'id', 'isActive', 'lastLoginAt', 'lastName', 'organization', 'role', 'updatedAt'])
  })
})

describe('failed-login throttling (more in login-throttle.test.ts)', () => {
  test('after LOGIN_LOCKOUT_THRESHOLD failures from one source, that source must wait, even with the right password', async () => {
    const u = await t.user()
    for (let i = 0; i < 3; i++) expect((await t.json('POST', '/api/auth/login', { body: { email: u.email, password: 'Wrong123!x' } })).status).toBe(401)
    const fourth = await t.json('POST', '/api/auth/login', { body: { email: u.email, password: 'Wrong123!x' } })
    expect(fourth.status).toBe(429)
    expect(Number(fourth.headers.get('retry-after'))).toBeGreaterThan(0)
    const right = await t.json('POST', '/api/auth/login', { body: { email: u.email, password: u.password } })
    expect(right.status).toBe(429)
    expect(right.body).toEqual({
      success: false,
      error: 'Too many failed logins, please try again later',
      details: [{ field: 'email', message: expect.stringMatching(/^Too many failed logins for this account from this address; try again in \d+ s$/) }],
    })
  })
})

describe('tokens', () => {
  test('missing, malformed, badly signed, alg none, expired and refresh-as-access tokens are 401', async () => {
    const u = await t.user()
    const [, payload] = u.token.split('.')
    const none = `${Buffer.from(JSON.stringify({ alg: 'none', typ: 'JWT' })).toString('base64url')}.${payload}.`
    const forged = new Jwt('another-secret'.padEnd(40, 'y')).sign({ sub: u.id, sid: 'x', typ: 'access' }, 60)
    const expired = new Jwt(t.config.jwt.secret!).sign({ sub: u.id, sid: 'x', typ: 'access', iat: 1, exp: 2 }, 0)
    for (const token of [undefined, 'garbage', none, forged, expired, u.refreshToken, u.token.slice(0, -2) + 'xx']) {
      const r = await t.json('GET', '/api/auth/me', { token })
      expect(r.status).toBe(401)
      expect(r.body.success).toBe(false)
    }
  })

  test('refresh rotates; the old refresh token is single-use and its reuse revokes the session', async () => {
    const u = await t.user()
    const r1 = await t.json('POST', '/api/auth/refresh', { body: { refreshToken: u.refreshToken } })
    expect(r1.status).toBe(200)
    expect(r1.body.data.refreshToken).not.toBe(u.refreshToken)
    // Reuse of the first token (grace 0 in this file): 401 and the whole chain is revoked.
    const reuse = await t.json('POST', '/api/auth/refresh', { body: { refreshToken: u.refreshToken } })
    expect(reuse.status).toBe(401)
    const next = await t.json('POST', '/api/auth/refresh', { body: { refreshToken: r1.body.data.refreshToken } })
    expect(next.status).toBe(401)
    expect((await t.json('GET', '/api/auth/me', { token: r1.body.data.token })).status).toBe(401)
    expect((await t.json('GET', '/api/auth/me', { token: u.token })).status).toBe(401)
  })

  test('two parallel refreshes of one token: exactly one succeeds', async () => {
    const u = await t.user()
    const rs = await Promise.all(Array.from({ length: 2 }, () => t.json('POST', '/api/auth/refresh', { body: { refreshToken: u.refreshToken } })))
    expect(rs.map((r) => r.status).sort()).toEqual([200, 401])
  })

  test('logout makes the access token stop working at once', async () => {
    const u = await t.user()
    expect((await t.json('GET', '/api/auth/me', { token: u.token })).status).toBe(200)
    expect((await t.json('POST', '/api/auth/logout', { token: u.token })).status).toBe(200)
    expect((await t.json('GET', '/api/auth/me', { token: u.token })).status).toBe(401)
    expect((await t.json('POST', '/api/auth/refresh', { body: { refreshToken: u.refreshToken } })).status).toBe(401)
  })

  test('change-password revokes every session and opens a new one', async () => {
    const u = await t.user()
    const second = await t.json('POST', '/api/auth/login', { body: { email: u.email, password: u.password } })
    const bad = await t.json('POST', '/api/auth/change-password', { token: u.token, body: { currentPassword: 'Nope123!x', newPassword: 'NewPass456!' } })
    expect(bad.status).toBe(400)
    expect(bad.body.details).toEqual([{ field: 'currentPassword', message: 'Current password is incorrect' }])
    const r = await t.json('POST', '/api/auth/change-password', { token: u.token, body: { currentPassword: u.password, newPassword: 'NewPass456!' } })
    expect(r.status).toBe(200)
    expect((await t.json('GET', '/api/auth/me', { token: u.token })).status).toBe(401)
    expect((await t.json('GET', '/api/auth/me', { token: second.body.data.token })).status).toBe(401)
    expect((await t.json('GET', '/api/auth/me', { token: r.body.data.token })).status).toBe(200)
    expect((await t.json('POST', '/api/auth/login', { body: { email: u.email, password: u.password } })).status).toBe(401)
    expect((await t.json('POST', '/api/auth/login', { body: { email: u.email, password: 'NewPass456!' } })).status).toBe(200)
  })

  test('no response ever contains a password hash or token hash', async () => {
    const u = await t.user()
    const a = await t.admin()
    const bodies = [
      await t.call('GET', '/api/auth/me', { token: u.token }),
      await t.call('GET', `/api/users/${u.id}`, { token: u.token }),
      await t.call('GET', '/api/users', { token: a.token }),
    ]
    for (const res of bodies) {
      const text = await res.text()
      expect(res.status).toBe(200)
      expect(text).not.toMatch(/passwordHash|password_hash|refresh_hash|refreshHash|\$2[aby]\$/)
    }
  })
})
