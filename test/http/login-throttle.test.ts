/**
 * Failed-login throttling (src/auth/login-throttle.ts): per account and source with backoff,
 * per source across accounts, per account across sources (slows, never locks); the same
 * answers for known and unknown emails. Run against both rate-limit stores, and across two
 * nodes sharing Redis. Sources are told apart by X-Forwarded-For (TRUST_PROXY=true).
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { ConfigError, loadConfig } from '../../src/config.ts'
import { createLogger } from '../../src/core/logger.ts'
import { startServer, type RunningServer } from '../../src/server.ts'
import { PASSWORD, tempDataDir, testServer, type TestServer } from '../support/app.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { service } from '../support/services.ts'
import { until } from '../support/until.ts'

const redisUrl = service('redis', 'test/http/login-throttle.test.ts')
const WRONG = 'Wrong123!x'

let ipCounter = 0
/** A fresh client address for each use: tests never share a source by accident. */
function newSource(): string {
  const n = ++ipCounter
  return `10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`
}

type Answer = { status: number; body: any; headers: Record<string, string> }

async function login(s: TestServer, email: string, password: string, source: string): Promise<Answer> {
  const res = await s.call('POST', '/api/auth/login', { body: { email, password }, headers: { 'x-forwarded-for': source } })
  const headers = Object.fromEntries([...res.headers].filter(([k]) => k !== 'x-request-id' && k !== 'date'))
  return { status: res.status, body: await res.json(), headers }
}

const stores: [string, Record<string, string>][] = [['memory', {}]]
if (redisUrl) stores.push(['redis', { REDIS_URL: redisUrl }])

for (const [storeName, storeEnv] of stores) {
  describe(`login throttling (${storeName} store)`, () => {
    let t: TestServer
    let wide: TestServer
    beforeAll(async () => {
      const base = { ...storeEnv, TRUST_PROXY: 'true', LOGIN_LOCKOUT_THRESHOLD: '3', LOGIN_SOURCE_MAX_FAILURES: '8' }
      t = await testServer(base, { features: [] })
      // An account under a wide attack after 4 failures; new sources then share one attempt per 10 min.
      wide = await testServer({ ...base, LOGIN_ACCOUNT_MAX_FAILURES: '4', LOGIN_ACCOUNT_SLOW_INTERVAL_MS: '600000' }, { features: [] })
    })
    afterAll(async () => {
      await t.stop()
      await wide.stop()
    })

    test('an unknown and a known email get identical answers through and past the threshold', async () => {
      const u = await t.user()
      const unknown = `nobody-${crypto.randomUUID().slice(0, 8)}@example.com`
      const [a, b] = [newSource(), newSource()]
      const known: Answer[] = []
      const absent: Answer[] = []
      // Interleaved, so a Retry-After counted down in seconds reads the same for both.
      for (let i = 0; i < 6; i++) {
        known.push(await login(t, u.email, WRONG, a))
        absent.push(await login(t, unknown, WRONG, b))
      }
      expect(known.map((r) => r.status)).toEqual([401, 401, 401, 429, 429, 429])
      expect(absent).toEqual(known)
      expect(known[3]!.body).toEqual({
        success: false,
        error: 'Too many failed logins, please try again later',
        details: [{ field: 'email', message: 'Too many failed logins for this account from this address; try again in 60 s' }],
      })
      expect(known[3]!.headers['retry-after']).toBe('60')
    })

    test('an attacker’s source is throttled while the owner signs in from another source', async () => {
      const u = await t.user()
      const attacker = newSource()
      for (let i = 0; i < 3; i++) expect((await login(t, u.email, WRONG, attacker)).status).toBe(401)
      expect((await login(t, u.email, WRONG, attacker)).status).toBe(429)
      // The right password from the attacker's source: still refused (the throttle stays).
      expect((await login(t, u.email, u.password, attacker)).status).toBe(429)
      // The owner, elsewhere.
      const owner = await login(t, u.email, u.password, newSource())
      expect(owner.status).toBe(200)
      expect(owner.body.data.user.email).toBe(u.email)
      expect((await login(t, u.email, WRONG, attacker)).status).toBe(429)
      // Refusals are counted by rule.
      expect(await (await t.call('GET', '/metrics')).text()).toMatch(/^http_rate_limited_total\{limit="login_pair"\} [1-9]/m)
    })

    test('nobody can lock the administrator out', async () => {
      const attacker = newSource()
      for (let i = 0; i < 6; i++) await login(t, t.config.admin.email, WRONG, attacker)
      expect((await login(t, t.config.admin.email, WRONG, attacker)).status).toBe(429)
      expect((await login(t, t.config.admin.email, t.config.admin.password!, newSource())).status).toBe(200)
    })

    test('a successful login clears that source’s failures on the account', async () => {
      const u = await t.user()
      const home = newSource()
      for (let i = 0; i < 2; i++) expect((await login(t, u.email, WRONG, home)).status).toBe(401)
      expect((await login(t, u.email, u.password, home)).status).toBe(200)
      const after: number[] = []
      for (let i = 0; i < 3; i++) after.push((await login(t, u.email, WRONG, home)).status)
      expect(after).toEqual([401, 401, 401])
    })

    test('concurrent guesses from one source: no more than the threshold are evaluated', async () => {
      const u = await t.user()
      const source = newSource()
      const answers = await Promise.all(Array.from({ length: 12 }, () => login(t, u.email, WRONG, source)))
      expect(answers.filter((r) => r.status === 401).length).toBe(3)
      expect(answers.filter((r) => r.status === 429).length).toBe(9)
    })

    test('a source failing across many accounts is refused everything, a right password too', async () => {
      const u = await t.user()
      const stuffer = newSource()
      for (let i = 0; i < 8; i++) expect((await login(t, `victim${i}-${crypto.randomUUID().slice(0, 6)}@example.com`, WRONG, stuffer)).status).toBe(401)
      const refused = await login(t, u.email, u.password, stuffer)
      expect(refused.status).toBe(429)
      expect(refused.body.details).toEqual([{ field: 'login', message: expect.stringMatching(/^8 failed logins from this address within 900 s; try again in \d+ s$/) }])
      expect((await login(t, u.email, u.password, newSource())).status).toBe(200)
    })

    test('an account under a wide attack slows new sources; the owner’s known source is unaffected; unknown emails alike', async () => {
      const u = await wide.user() // signs in once from 127.0.0.1 (no X-Forwarded-For): that source is trusted for it
      const home = newSource()
      expect((await login(wide, u.email, u.password, home)).status).toBe(200)
      const unknown = `ghost-${crypto.randomUUID().slice(0, 8)}@example.com`
      const known: Answer[] = []
      const absent: Answer[] = []
      // Four sources fail once each (the account's budget), a fifth takes the one slot, a sixth waits.
      for (let i = 0; i < 6; i++) {
        known.push(await login(wide, u.email, WRONG, newSource()))
        absent.push(await login(wide, unknown, WRONG, newSource()))
      }
      expect(known.map((r) => r.status)).toEqual([401, 401, 401, 401, 401, 429])
      expect(absent).toEqual(known)
      expect(known[5]!.body.details).toEqual([{ field: 'email', message: 'Many failed logins for this account: one attempt per 600 s from a new address; try again in 600 s' }])
      // The owner from a new address is slowed (told when to come back), not locked.
      const fresh = await login(wide, u.email, u.password, newSource())
      expect(fresh.status).toBe(429)
      expect(Number(fresh.headers['retry-after'])).toBeLessThanOrEqual(600)
      // From where they signed in before: as usual.
      expect((await login(wide, u.email, u.password, home)).status).toBe(200)
    })
  })
}

describe('an account under a wide attack slows, it does not lock', () => {
  let t: TestServer
  beforeAll(async () => {
    t = await testServer({ TRUST_PROXY: 'true', LOGIN_ACCOUNT_MAX_FAILURES: '2', LOGIN_ACCOUNT_SLOW_INTERVAL_MS: '1000' }, { features: [] })
  })
  afterAll(() => t.stop())

  test('the owner from a new address is told to wait, then gets in once the interval has passed', async () => {
    const u = await t.user()
    for (let i = 0; i < 2; i++) expect((await login(t, u.email, WRONG, newSource())).status).toBe(401)
    expect((await login(t, u.email, WRONG, newSource())).status).toBe(401) // takes this second's one slot
    const owner = newSource()
    const slowed = await login(t, u.email, u.password, owner)
    expect(slowed.status).toBe(429)
    expect(Number(slowed.headers['retry-after'])).toBe(1)
    const r = await until(async () => {
      const a = await login(t, u.email, u.password, owner)
      return a.status === 200 ? a : undefined
    }, 'a slot for a new address', 10_000, 100)
    expect(r.body.data.user.email).toBe(u.email)
  })
})

describe('request budgets of the credential endpoints', () => {
  let t: TestServer
  beforeAll(async () => {
    t = await testServer({ TRUST_PROXY: 'true', AUTH_RATE_LIMIT_MAX_REQUESTS: '3', AUTH_REFRESH_RATE_LIMIT_MAX_REQUESTS: '20' }, { features: [] })
  })
  afterAll(() => t.stop())
  const from = (source: string) => ({ 'x-forwarded-for': source })

  test('refreshing many times does not block login (nor register)', async () => {
    const tab = newSource()
    const email = `tab-${crypto.randomUUID().slice(0, 8)}@example.com`
    const first = await t.json('POST', '/api/auth/register', { body: { email, password: PASSWORD, firstName: 'T', lastName: 'B' }, headers: from(tab) })
    expect(first.status).toBe(201)
    let refreshToken = first.body.data.refreshToken as string
    for (let i = 0; i < 10; i++) {
      const r = await t.json('POST', '/api/auth/refresh', { body: { refreshToken }, headers: from(tab) })
      expect(r.status).toBe(200)
      expect(r.headers.get('ratelimit-limit')).toBe('20')
      refreshToken = r.body.data.refreshToken
    }
    const l = await t.json('POST', '/api/auth/login', { body: { email, password: PASSWORD }, headers: from(tab) })
    expect(l.status).toBe(200)
    expect([l.headers.get('ratelimit-limit'), l.headers.get('ratelimit-remaining')]).toEqual(['3', '2'])
    const second = await t.json('POST', '/api/auth/register', { body: { email: `tab2-${crypto.randomUUID().slice(0, 8)}@example.com`, password: PASSWORD, firstName: 'T', lastName: 'B' }, headers: from(tab) })
    expect(second.status).toBe(201)
    expect(second.headers.get('ratelimit-remaining')).toBe('1')
  })

  test('a spent login budget answers 429 naming its limit, and leaves refresh and register alone', async () => {
    const source = newSource()
    const body = { email: 'nobody@example.com', password: WRONG }
    const codes: number[] = []
    let last: Awaited<ReturnType<TestServer['json']>> | undefined
    for (let i = 0; i < 4; i++) codes.push((last = await t.json('POST', '/api/auth/login', { body, headers: from(source) })).status)
    expect(codes).toEqual([401, 401, 401, 429])
    expect(last!.body).toEqual({ success: false, error: 'Too many requests, please try again later', details: [{ field: 'rate', message: 'Limit of 3 requests per 900 s reached' }] })
    expect((await t.json('POST', '/api/auth/refresh', { body: { refreshToken: 'not-a-token' }, headers: from(source) })).status).toBe(401)
    const reg = await t.json('POST', '/api/auth/register', { body: { email: `late-${crypto.randomUUID().slice(0, 8)}@example.com`, password: PASSWORD, firstName: 'L', lastName: 'T' }, headers: from(source) })
    expect(reg.status).toBe(201)
  })
})

describe('configuration', () => {
  test('AUTH_RATE_LIMIT_* is the default of the login and register budgets; refresh has its own', () => {
    const c = loadConfig({ AUTH_RATE_LIMIT_MAX_REQUESTS: '7', AUTH_RATE_LIMIT_WINDOW_MS: '60000' })
    expect(c.authRateLimit).toEqual({ login: { windowMs: 60_000, max: 7 }, register: { windowMs: 60_000, max: 7 }, refresh: { windowMs: 900_000, max: 100 } })
    const d = loadConfig({ AUTH_RATE_LIMIT_MAX_REQUESTS: '7', AUTH_LOGIN_RATE_LIMIT_MAX_REQUESTS: '9', AUTH_REGISTER_RATE_LIMIT_WINDOW_MS: '1000', AUTH_REFRESH_RATE_LIMIT_MAX_REQUESTS: '50' })
    expect(d.authRateLimit).toEqual({ login: { windowMs: 900_000, max: 9 }, register: { windowMs: 1000, max: 7 }, refresh: { windowMs: 900_000, max: 50 } })
  })

  test('login throttling defaults, and a failure window shorter than the longest wait is refused', () => {
    expect(loadConfig({}).login).toEqual({
      pair: { free: 5, baseMs: 60_000, maxMs: 900_000, windowMs: 86_400_000 },
      source: { maxFailures: 30, windowMs: 900_000 },
      account: { maxFailures: 50, windowMs: 3_600_000, slowIntervalMs: 30_000, trustedSourceTtlMs: 2_592_000_000 },
    })
    expect(() => loadConfig({ LOGIN_FAILURE_WINDOW_MS: '1000', LOGIN_LOCKOUT_MS: '2000' })).toThrow(ConfigError)
    expect(() => loadConfig({ LOGIN_FAILURE_WINDOW_MS: '1000', LOGIN_LOCKOUT_MS: '2000' })).toThrow('LOGIN_FAILURE_WINDOW_MS=1000 is invalid: expected at least LOGIN_LOCKOUT_MS (2000)')
  })
})

describe.if(Boolean(redisUrl))('login throttling across nodes', () => {
  let db: TestDatabase
  const servers: RunningServer[] = []
  let dataDir: Awaited<ReturnType<typeof tempDataDir>> | undefined
  afterAll(async () => {
    for (const s of servers) await s.stop()
    await db?.drop()
    await dataDir?.[Symbol.asyncDispose]()
  })

  test('a source throttled on one node is throttled on the other; the owner signs in on either', async () => {
    db = await testDatabase()
    dataDir = await tempDataDir()
    const prefix = `test-${crypto.randomUUID()}`
    const env = {
      NODE_ENV: 'test', PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', BCRYPT_ROUNDS: '4', JWT_SECRET: 'thr-test-'.padEnd(48, 'x'), DATABASE_URL: db.url, REDIS_URL: redisUrl!, REDIS_PREFIX: `${prefix}:`,
      ADMIN_PASSWORD: 'AdminPass123!', RATE_LIMIT_MAX_REQUESTS: '100000', AUTH_RATE_LIMIT_MAX_REQUESTS: '100000', DATA_DIR: dataDir.path, TRUST_PROXY: 'true', LOGIN_LOCKOUT_THRESHOLD: '2',
    }
    for (const nodeId of ['thr-a', 'thr-b']) servers.push(await startServer(loadConfig({ ...env, NODE_ID: nodeId }), { logger: createLogger('silent'), features: [], queuePrefix: prefix }))
    const [a, b] = servers as [RunningServer, RunningServer]
    const post = (s: RunningServer, path: string, body: unknown, source: string) =>
      s.app.handle(new Request(`http://localhost${path}`, { method: 'POST', headers: { 'content-type': 'application/json', 'x-forwarded-for': source }, body: JSON.stringify(body) }))
    const email = 'node-owner@example.com'
    expect((await post(a, '/api/auth/register', { email, password: PASSWORD, firstName: 'N', lastName: 'O' }, newSource())).status).toBe(201)
    const attacker = newSource()
    expect((await post(a, '/api/auth/login', { email, password: WRONG }, attacker)).status).toBe(401)
    expect((await post(b, '/api/auth/login', { email, password: WRONG }, attacker)).status).toBe(401)
    expect((await post(a, '/api/auth/login', { email, password: WRONG }, attacker)).status).toBe(429)
    expect((await post(b, '/api/auth/login', { email, password: WRONG }, attacker)).status).toBe(429)
    expect((await post(b, '/api/auth/login', { email, password: PASSWORD }, newSource())).status).toBe(200)
    expect((await post(a, '/api/auth/login', { email, password: PASSWORD }, newSource())).status).toBe(200)
  })
})
