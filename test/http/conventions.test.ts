import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { Elysia } from 'elysia'
import { testServer, type TestServer } from '../support/app.ts'

const WORDS = ['alpha', 'beta', 'gamma', 'delta', 'epsilon', 'zeta', 'eta', 'theta']
let hugeAsked = Promise.withResolvers<void>()
const HUGE_ROWS = Array.from({ length: 60_000 }, (_, i) => ({ id: i, name: `${WORDS[i % 8]}${(i * 7919) % 10007}`, value: Math.sin(i) * 1000, note: Bun.hash(String(i)).toString(36) }))

let t: TestServer
let limited: TestServer
beforeAll(async () => {
  const boom = () =>
    new Elysia()
      .get('/api/test/boom', () => {
        throw new Error('secret internal detail')
      })
      .get('/api/test/big', () => ({ success: true, data: 'x'.repeat(5000) }))
      // About 4 MB of JSON that compresses as real rows do (not one repeated character).
      .get('/api/test/huge', () => {
        hugeAsked.resolve()
        return { success: true, data: HUGE_ROWS }
      })
  t = await testServer({ CORS_ORIGIN: 'https://app.example.com,http://localhost:5173' }, { modules: [boom()] })
  limited = await testServer({ RATE_LIMIT_MAX_REQUESTS: '3', AUTH_RATE_LIMIT_MAX_REQUESTS: '2', TRUST_PROXY: 'true' })
})
afterAll(async () => {
  await t.stop()
  await limited.stop()
})

describe('envelope and errors', () => {
  test('unknown routes are a 404 in the envelope', async () => {
    const r = await t.json('GET', '/api/nope')
    expect(r.status).toBe(404)
    expect(r.body).toEqual({ success: false, error: 'Route not found', details: [] })
  })

  test('an unexpected error is a 500 with the request id and no internals', async () => {
    const res = await t.call('GET', '/api/test/boom', { headers: { 'x-request-id': 'req-123' } })
    expect(res.status).toBe(500)
    expect(res.headers.get('x-request-id')).toBe('req-123')
    const body = await res.json()
    expect(body).toEqual({ success: false, error: 'Internal server error', details: [], requestId: 'req-123' })
  })

  test('a request id is generated when none (or a bad one) is given', async () => {
    const a = await t.call('GET', '/health')
    expect(a.headers.get('x-request-id')).toMatch(/^[\w-]{8}-[0-9a-z]+$/)
    const b = await t.call('GET', '/health', { headers: { 'x-request-id': 'bad id with spaces\n' } })
    expect(b.headers.get('x-request-id')).toMatch(/^[\w-]{8}-[0-9a-z]+$/)
    expect(b.headers.get('x-request-id')).not.toBe(a.headers.get('x-request-id'))
  })

  test('malformed JSON is a 400, a non-JSON body a 415, an oversized body a 413', async () => {
    const bad = await t.json('POST', '/api/auth/login', { body: '{"email":', headers: { 'content-type': 'application/json' } })
    expect(bad.status).toBe(400)
    expect(bad.body.success).toBe(false)
    const text = await t.json('POST', '/api/auth/login', { body: 'email=a', headers: { 'content-type': 'text/plain' } })
    expect(text.status).toBe(415)
    expect(text.body).toEqual({ success: false, error: 'Content-Type must be application/json', details: [] })
    const big = await t.json('POST', '/api/auth/login', { body: JSON.stringify({ email: 'a@b.co', password: 'x'.repeat(2 * 1024 * 1024) }) })
    expect(big.status).toBe(413)
    expect(big.body).toEqual({ success: false, error: 'The request body is larger than the JSON body limit of 1 MB (1048576 bytes)', details: [{ field: 'body', message: 'Must be at most 1048576 bytes' }] })
    expect(big.headers.get('connection')).toBe('close')
  })

  test('validation failures list every bad field', async () => {
    const r = await t.json('POST', '/api/auth/register', { body: { email: 'nope', password: 'SecurePass123!' } })
    expect(r.status).toBe(400)
    expect(r.body.error).toBe('Validation failed')
    const fields = r.body.details.map((d: any) => d.field)
    expect(fields).toContain('email')
    expect(fields).toContain('firstName')
  })
})

describe('headers', () => {
  test('security headers are on every response', async () => {
    const res = await t.call('GET', '/api/nope')
    expect(res.headers.get('x-content-type-options')).toBe('nosniff')
    expect(res.headers.get('x-frame-options')).toBe('SAMEORIGIN')
    expect(res.headers.get('strict-transport-security')).toContain('max-age=')
    expect(res.headers.get('content-security-policy')).toContain("default-src 'none'")
    expect(res.headers.get('referrer-policy')).toBe('no-referrer')
    const created = await t.call('POST', '/api/auth/register', { body: { email: 'hdr@example.com', password: 'SecurePass123!', firstName: 'H', lastName: 'D' } })
    expect(created.status).toBe(201)
    expect(created.headers.get('x-frame-options')).toBe('SAMEORIGIN')
    const metrics = await t.call('GET', '/metrics')
    expect(metrics.headers.get('x-content-type-options')).toBe('nosniff')
    // The Swagger UI page has a CSP of its own, served from this server alone (src/http/docs.ts).
    const ui = await t.call('GET', '/swagger')
    expect(ui.headers.get('content-security-policy')).toContain("script-src 'self';")
    expect(ui.headers.get('content-security-policy')).not.toMatch(/https?:/)
    expect(ui.headers.get('x-frame-options')).toBe('SAMEORIGIN')
  })

  test('CORS: allowed origins get their headers and preflights; others do not', async () => {
    const ok = await t.call('GET', '/health', { headers: { origin: 'https://app.example.com' } })
    expect(ok.headers.get('access-control-allow-origin')).toBe('https://app.example.com')
    const pre = await t.call('OPTIONS', '/api/auth/login', { headers: { origin: 'http://localhost:5173', 'access-control-request-method': 'POST' } })
    expect(pre.status).toBe(204)
    expect(pre.headers.get('access-control-allow-methods')).toContain('POST')
    const evil = await t.call('GET', '/health', { headers: { origin: 'https://evil.example.com' } })
    expect(evil.headers.get('access-control-allow-origin')).toBeNull()
    const evilPre = await t.call('OPTIONS', '/api/auth/login', { headers: { origin: 'https://evil.example.com', 'access-control-request-method': 'POST' } })
    expect(evilPre.status).toBe(403)
  })

  test('a large body is gzipped off the event loop: a request sent while it compresses is answered first; the bytes are the same', async () => {
    const order: string[] = []
    hugeAsked = Promise.withResolvers<void>()
    const huge = fetch(`${t.url}/api/test/huge`, { headers: { 'accept-encoding': 'gzip' }, decompress: false } as RequestInit).then(async (r) => {
      order.push('huge')
      return { encoding: r.headers.get('content-encoding'), bytes: new Uint8Array(await r.arrayBuffer()) }
    })
    // Asked once its handler has run: compressing ~8 MB of rows takes the server over 100 ms,
    // answering this about one, so this answer's headers come first. Gzipped on the event
    // loop, the big response was compressed and on its way before this request was even read.
    await hugeAsked.promise
    const health = await t.call('GET', '/health')
    order.push('health')
    expect(health.status).toBe(200)
    const big = await huge
    expect(order).toEqual(['health', 'huge'])
    expect(big.encoding).toBe('gzip')
    expect(JSON.parse(new TextDecoder().decode(Bun.gunzipSync(big.bytes)))).toEqual({ success: true, data: HUGE_ROWS })
  })

  test('responses of 1 KB or more are gzipped when the client accepts it', async () => {
    const raw = await t.call('GET', '/api/test/big')
    expect(raw.headers.get('content-encoding')).toBeNull()
    const res = await fetch(`${t.url}/api/test/big`, { headers: { 'accept-encoding': 'gzip' }, decompress: false } as RequestInit)
    expect(res.headers.get('content-encoding')).toBe('gzip')
    const bytes = new Uint8Array(await res.arrayBuffer())
    expect(bytes.length).toBeLessThan(1000)
    expect(JSON.parse(new TextDecoder().decode(Bun.gunzipSync(bytes)))).toEqual({ success: true, data: 'x'.repeat(5000) })
    const small = await fetch(`${t.url}/health`, { headers: { 'accept-encoding': 'gzip' }, decompress: false } as RequestInit)
    expect(small.headers.get('content-encoding')).toBeNull()
  })
})

describe('rate limits', () => {
  test('the API limit counts per user and answers 429 with Retry-After and RateLimit headers', async () => {
    const u = await limited.user()
    const codes: number[] = []
    let last: Response | undefined
    for (let i = 0; i < 4; i++) {
      last = await limited.call('GET', '/api/auth/me', { token: u.token })
      codes.push(last.status)
    }
    expect(codes).toEqual([200, 200, 200, 429])
    expect(Number(last!.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(last!.headers.get('ratelimit-limit')).toBe('3')
    expect(last!.headers.get('ratelimit-remaining')).toBe('0')
    expect(((await last!.json()) as { error: string }).error).toBe('Too many requests, please try again later')
  })

  test('the auth limit counts per client IP; X-Forwarded-For is trusted only with TRUST_PROXY', async () => {
    const ip = (n: number) => ({ 'x-forwarded-for': `203.0.113.${n}` })
    const body = { email: 'nobody@example.com', password: 'Whatever1!' }
    const a1 = await limited.call('POST', '/api/auth/login', { body, headers: ip(1) })
    const a2 = await limited.call('POST', '/api/auth/login', { body, headers: ip(1) })
    const a3 = await limited.call('POST', '/api/auth/login', { body, headers: ip(1) })
    expect([a1.status, a2.status, a3.status]).toEqual([401, 401, 429])
    expect((await limited.call('POST', '/api/auth/login', { body, headers: ip(2) })).status).toBe(401)
  })

  test('the auth limits count an IPv6 client by its /64 (one subscriber’s block), and IPv4-mapped IPv6 as IPv4', async () => {
    const body = { email: 'nobody@example.com', password: 'Whatever1!' }
    const from = (ip: string) => limited.call('POST', '/api/auth/login', { body, headers: { 'x-forwarded-for': ip } })
    expect([(await from('2001:db8:aa:1::1')).status, (await from('2001:db8:aa:1:ffff::2')).status, (await from('2001:db8:aa:1::3')).status]).toEqual([401, 401, 429])
    expect((await from('2001:db8:aa:2::1')).status).toBe(401)
    expect([(await from('203.0.113.77')).status, (await from('::ffff:203.0.113.77')).status, (await from('203.0.113.77')).status]).toEqual([401, 401, 429])
  })

  test('TRUST_PROXY is each server\'s own: a trusting server beside a strict one in the same process changes neither', async () => {
    // The strict one first: a setting shared by the process would be the trusting one's after.
    const strict = await testServer({ AUTH_RATE_LIMIT_MAX_REQUESTS: '2' })
    const trusting = await testServer({ AUTH_RATE_LIMIT_MAX_REQUESTS: '2', TRUST_PROXY: 'true' })
    try {
      const body = { email: 'nobody@example.com', password: 'Whatever1!' }
      const attempts = async (s: TestServer) => {
        const codes: number[] = []
        for (let i = 0; i < 3; i++) codes.push((await s.call('POST', '/api/auth/login', { body, headers: { 'x-forwarded-for': `192.0.2.${i}` } })).status)
        return codes
      }
      expect(await attempts(strict)).toEqual([401, 401, 429])
      expect(await attempts(trusting)).toEqual([401, 401, 401])
      expect(await attempts(strict)).toEqual([429, 429, 429])
    } finally {
      await strict.stop()
      await trusting.stop()
    }
  })

  test('without TRUST_PROXY a forged X-Forwarded-For does not buy new attempts', async () => {
    const strict = await testServer({ AUTH_RATE_LIMIT_MAX_REQUESTS: '2' })
    try {
      const body = { email: 'nobody@example.com', password: 'Whatever1!' }
      const codes: number[] = []
      for (let i = 0; i < 3; i++) codes.push((await strict.call('POST', '/api/auth/login', { body, headers: { 'x-forwarded-for': `198.51.100.${i}` } })).status)
      expect(codes).toEqual([401, 401, 429])
    } finally {
      await strict.stop()
    }
  })
})
