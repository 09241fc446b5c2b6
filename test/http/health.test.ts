import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { absentDockerSocket, testServer, type TestServer } from '../support/app.ts'
import { service } from '../support/services.ts'

const redisUrl = service('redis', 'test/http/health.test.ts')

let t: TestServer
beforeAll(async () => {
  // No Redis and an engine socket that does not exist: disabled and unhealthy respectively.
  t = await testServer({ DOCKER_HOST: 'unix:///nonexistent/docker.sock' })
})
afterAll(() => t.stop())

describe('health', () => {
  test('database healthy, redis disabled, docker unhealthy → 503 in the guide shape', async () => {
    const r = await t.json('GET', '/health')
    expect(r.status).toBe(503)
    expect(r.body).toEqual({
      status: 'unhealthy',
      timestamp: expect.any(String),
      uptimeSeconds: expect.any(Number),
      services: expect.any(Object),
    })
    // Features add their own probes (ai, …); these three are the platform's.
    expect(r.body.services).toMatchObject({
      database: { status: 'healthy', latencyMs: expect.any(Number) },
      redis: { status: 'disabled' },
      docker: { status: 'unhealthy', error: expect.any(String) },
    })
  })

  test.if(Boolean(redisUrl))('with Redis configured and no engine configured: 200, redis healthy', async () => {
    // No DOCKER_HOST, and a local socket path that does not exist (whatever this host has).
    const t2 = await testServer({ REDIS_URL: redisUrl!, DOCKER_HOST: '' }, { localDockerSocket: '/nonexistent/quadrax-test/docker.sock' })
    try {
      const r = await t2.json('GET', '/health')
      expect(r.body.services.redis.status).toBe('healthy')
      expect(r.body.services.database.status).toBe('healthy')
      expect(r.body.services.docker).toEqual({ status: 'disabled' })
      expect(r.status).toBe(200)
    } finally {
      await t2.stop()
    }
  })
})

describe('metrics and docs', () => {
  test('/metrics exposes request durations by route and status, DB timings and process metrics', async () => {
    const count = async (series: string) => {
      const line = (await (await t.call('GET', '/metrics')).text()).split('\n').find((l) => l.startsWith(`http_request_duration_seconds_count{${series}}`))
      return line ? Number(line.split(' ').pop()) : 0
    }
    const login = 'method="POST",route="/api/auth/login",status="401"'
    const unmatched = 'method="GET",route="unmatched",status="404"'
    const before = [await count(login), await count(unmatched)]
    // Each request is recorded once, as its response is made (successes and errors alike).
    await t.call('GET', '/api/nope')
    await t.json('POST', '/api/auth/login', { body: { email: 'nobody@example.com', password: 'Whatever1!' } })
    await t.json('POST', '/api/auth/login', { body: { email: 'nobody@example.com', password: 'Whatever1!' } })
    expect([await count(login), await count(unmatched)]).toEqual([before[0]! + 2, before[1]! + 1])
    const text = await (await t.call('GET', '/metrics')).text()
    expect(text).toContain('http_request_duration_seconds_bucket{')
    expect(text).toMatch(/http_request_duration_seconds_count\{method="GET",route="\/metrics",status="200"\} \d+/)
    expect(text).toContain('process_cpu_seconds_total')
    expect(text).toContain('http_cache_requests_total')
  })

  test('/metrics times the queries of the table modules by repository and function', async () => {
    const count = async (query: string) => {
      const line = (await (await t.call('GET', '/metrics')).text()).split('\n').find((l) => l.startsWith(`db_query_duration_seconds_count{query="${query}"}`))
      return line ? Number(line.split(' ').pop()) : 0
    }
    const before = await count('users.insert')
    await t.user() // registers: one users.insert
    expect(await count('users.insert')).toBe(before + 1)
    expect(await count('users.findSecretByEmail')).toBeGreaterThan(0) // its login
  })

  test('with METRICS_TOKEN set, /metrics answers only that Bearer token; other routes are unaffected', async () => {
    const token = 'scrape-me-'.padEnd(40, 'k')
    // No engine whatever this host has, so /health below is 200.
    const t2 = await testServer({ METRICS_TOKEN: token, DOCKER_HOST: '' }, { localDockerSocket: absentDockerSocket() })
    try {
      for (const headers of [{} as Record<string, string>, { authorization: `Bearer ${token}x` }, { authorization: `Bearer ${token.slice(0, -1)}` }, { authorization: `Basic ${token}` }, { authorization: token }]) {
        const r = await t2.call('GET', '/metrics', { headers })
        expect(r.status).toBe(401)
        const body = (await r.json()) as any
        expect(r.headers.get('www-authenticate')).toBe('Bearer realm="metrics"')
        expect(body).toMatchObject({ success: false, error: expect.stringContaining('METRICS_TOKEN') })
        expect(JSON.stringify(body)).not.toContain('http_request_duration_seconds')
      }
      const ok = await t2.call('GET', '/metrics', { headers: { authorization: `Bearer ${token}` } })
      expect(ok.status).toBe(200)
      expect(await ok.text()).toContain('http_request_duration_seconds_count{method="GET",route="/metrics",status="401"} 5')
      expect((await t2.call('GET', '/health')).status).toBe(200)
      // Not even an admin's token opens it: only the metrics token does.
      const admin = await t2.user({ role: 'ADMIN' })
      expect((await t2.call('GET', '/metrics', { token: admin.token })).status).toBe(401)
    } finally {
      await t2.stop()
    }
  })

  test('/swagger/json documents every route with bearer auth', async () => {
    const doc = await t.json('GET', '/swagger/json')
    expect(doc.status).toBe(200)
    expect(doc.body.openapi).toMatch(/^3\./)
    const paths = Object.keys(doc.body.paths)
    for (const p of ['/api/auth/register', '/api/auth/login', '/api/auth/refresh', '/api/auth/logout', '/api/auth/me', '/api/auth/change-password', '/api/users', '/api/users/{id}', '/health']) {
      expect(paths).toContain(p)
    }
    expect(doc.body.components.securitySchemes.bearerAuth).toMatchObject({ type: 'http', scheme: 'bearer', bearerFormat: 'JWT' })
    expect(doc.body.paths['/api/auth/login'].post.requestBody).toBeDefined()
    expect(doc.body.paths['/api/auth/me'].get.responses['200']).toBeDefined()
    const ui = await t.call('GET', '/swagger')
    expect(ui.status).toBe(200)
    // Every script and stylesheet of the page comes from this server (swagger-ui-dist).
    const html = await ui.text()
    const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!)
    expect(assets.length).toBeGreaterThanOrEqual(3)
    for (const a of assets) {
      expect(a).toStartWith('/swagger/assets/')
      const res = await t.call('GET', a)
      expect([a, res.status]).toEqual([a, 200])
    }
    expect((await t.call('GET', '/swagger/assets/package.json')).status).toBe(404)
  })
})
