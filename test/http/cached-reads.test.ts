/**
 * Cached reads served from Bun's router (src/http/native.ts): over real HTTP, a hit of the
 * response cache is answered without entering Elysia's pipeline, with the same bytes, frame,
 * rate limit, metrics and access rules as the pipeline gives it.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { Elysia } from 'elysia'
import { testServer, type TestServer } from '../support/app.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'

let t: TestServer
let admin: Awaited<ReturnType<TestServer['admin']>>
// Every request that enters Elysia's pipeline, by path: the served route never adds to it.
const entered: string[] = []
const probe = new Elysia({ name: 'pipeline-probe' }).onRequest(({ request }) => {
  entered.push(new URL(request.url).pathname)
})

beforeAll(async () => {
  t = await testServer({}, { modules: [probe] })
  admin = await t.admin()
})
afterAll(() => t.stop())

const get = (path: string, token: string | undefined, headers: Record<string, string> = {}) =>
  fetch(`${t.url}${path}`, { headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers } })

/** How many times `path` entered the pipeline while `fn` ran. */
async function pipelineEntries<T>(path: string, fn: () => Promise<T>): Promise<{ result: T; entries: number }> {
  const before = entered.filter((p) => p === path).length
  const result = await fn()
  return { result, entries: entered.filter((p) => p === path).length - before }
}

async function metric(line: string): Promise<number> {
  const text = await (await t.call('GET', '/metrics')).text()
  const found = text.split('\n').find((l) => l.startsWith(line))
  return found ? Number(found.split(' ').pop()) : 0
}

// Every header but the request's own id, its place in the rate limit, and the transport's.
const own = new Set(['x-request-id', 'ratelimit-remaining', 'ratelimit-reset', 'date', 'content-length'])
const frame = (r: Response) => [...r.headers].filter(([k]) => !own.has(k)).sort()

describe("cached reads on Bun's router", () => {
  test('GET /api/auth/me: a hit is served ahead of the pipeline with the same bytes, frame, limit and metrics', async () => {
    const u = await t.user()
    const counted = 'http_request_duration_seconds_count{method="GET",route="/api/auth/me",status="200"}'
    const hits = 'http_cache_requests_total{route="/api/auth/me",result="hit"}'
    const [requestsBefore, hitsBefore] = [await metric(counted), await metric(hits)]

    const miss = await pipelineEntries('/api/auth/me', () => get('/api/auth/me', u.token))
    expect(miss.entries).toBe(1)
    expect(miss.result.headers.get('x-cache')).toBe('MISS')
    const missBody = await miss.result.text()

    const hit = await pipelineEntries('/api/auth/me', () => get('/api/auth/me', u.token, { 'x-request-id': 'served-1' }))
    expect(hit.entries).toBe(0)
    const served = hit.result
    expect(served.status).toBe(200)
    expect(served.headers.get('x-cache')).toBe('HIT')
    expect(served.headers.get('x-request-id')).toBe('served-1')
    expect(served.headers.get('x-content-type-options')).toBe('nosniff')
    expect(served.headers.get('content-type')).toBe('application/json')

    // The pipeline's own answer to the same hit (app.handle never reaches Bun's router).
    const pipeline = await t.call('GET', '/api/auth/me', { token: u.token })
    expect(pipeline.headers.get('x-cache')).toBe('HIT')
    const text = await served.text()
    expect(text).toBe(missBody)
    expect(text).toBe(await pipeline.text())
    expect(JSON.parse(text).data).toMatchObject({ id: u.id, email: u.email })
    expect(frame(served)).toEqual(frame(pipeline))

    // One limit: each request took one hit of it, whichever way it was served.
    const again = await get('/api/auth/me', u.token)
    const remaining = [miss.result, served, pipeline, again].map((r) => Number(r.headers.get('ratelimit-remaining')))
    expect(remaining).toEqual([remaining[0]!, remaining[0]! - 1, remaining[0]! - 2, remaining[0]! - 3])
    expect(again.headers.get('x-request-id')).toMatch(/^[A-Za-z0-9_-]+-[0-9a-z]+$/)
    expect(await metric(counted)).toBe(requestsBefore + 4)
    expect(await metric(hits)).toBe(hitsBefore + 3)
  })

  test('ETag → 304, CORS and gzip are answered the same way when served', async () => {
    const u = await t.user()
    const first = await get('/api/auth/me', u.token)
    const etag = first.headers.get('etag')!
    const notModified = await pipelineEntries('/api/auth/me', () => get('/api/auth/me', u.token, { 'if-none-match': etag }))
    expect(notModified.entries).toBe(0)
    expect(notModified.result.status).toBe(304)
    expect(await notModified.result.text()).toBe('')
    expect(notModified.result.headers.get('etag')).toBe(etag)
    expect(notModified.result.headers.get('x-content-type-options')).toBe('nosniff')
    const pipeline304 = await t.call('GET', '/api/auth/me', { token: u.token, headers: { 'if-none-match': etag } })
    expect(frame(notModified.result)).toEqual(frame(pipeline304))

    const origin = t.config.corsOrigins[0]!
    const cors = await get('/api/auth/me', u.token, { origin })
    expect(cors.headers.get('access-control-allow-origin')).toBe(origin)
    expect(cors.headers.get('vary')).toBe('Origin')
    expect(frame(cors)).toEqual(frame(await t.call('GET', '/api/auth/me', { token: u.token, headers: { origin } })))

    // A list large enough to gzip, for a client that accepts it.
    for (let i = 0; i < 8; i++) await t.user()
    const path = '/api/users?limit=100'
    const listed200 = 'http_request_duration_seconds_count{method="GET",route="/api/users",status="200"}'
    const listedBefore = await metric(listed200)
    await get(path, admin.token)
    const gz = await pipelineEntries('/api/users', () => get(path, admin.token, { 'accept-encoding': 'gzip', origin }))
    expect(gz.entries).toBe(0)
    expect(gz.result.headers.get('x-cache')).toBe('HIT')
    expect(gz.result.headers.get('content-encoding')).toBe('gzip')
    expect(gz.result.headers.get('vary')).toBe('Origin, Accept-Encoding')
    const listed = (await gz.result.json()) as any // fetch decodes it
    expect(listed.data.map((x: any) => x.id)).toContain(admin.id)
    // One series for the route, whichever way it was served (Elysia spells it `/api/users/`).
    expect(await metric(listed200)).toBe(listedBefore + 2)
    expect(await (await t.call('GET', '/metrics')).text()).not.toContain('route="/api/users/"')
  })

  test('a write drops the entry: the next read is computed by the pipeline and shows it', async () => {
    const u = await t.user()
    await get('/api/auth/me', u.token)
    expect((await get('/api/auth/me', u.token)).headers.get('x-cache')).toBe('HIT')
    expect((await t.json('PATCH', `/api/users/${u.id}`, { token: u.token, body: { lastName: 'Changed' } })).status).toBe(200)
    const after = await pipelineEntries('/api/auth/me', () => get('/api/auth/me', u.token))
    expect(after.entries).toBe(1)
    expect(after.result.headers.get('x-cache')).toBe('MISS')
    expect(((await after.result.json()) as any).data.lastName).toBe('Changed')
  })

  test('a cached entry does not outlive the right to read it: revoked session, lost role, no token', async () => {
    // Logged out: the entry is still cached, the token is refused.
    const u = await t.user()
    await get('/api/auth/me', u.token)
    expect((await get('/api/auth/me', u.token)).headers.get('x-cache')).toBe('HIT')
    expect((await t.json('POST', '/api/auth/logout', { token: u.token })).status).toBe(200)
    const revoked = await get('/api/auth/me', u.token)
    expect(revoked.status).toBe(401)
    expect(await revoked.json()).toMatchObject({ success: false, error: 'Invalid or expired token' })
    const anonymous = await get('/api/auth/me', undefined)
    expect(anonymous.status).toBe(401)
    expect(anonymous.headers.get('x-content-type-options')).toBe('nosniff')

    // An admin demoted behind the cache's back (no invalidation of the list): their entry
    // of the list is still there, but the role is checked before it is used.
    const a2 = await t.user({ role: 'ADMIN' })
    await get('/api/users?limit=5', a2.token)
    expect((await get('/api/users?limit=5', a2.token)).headers.get('x-cache')).toBe('HIT')
    await t.db.sql`update users set role = 'USER' where id = ${a2.id}`
    await t.server.http.auth.registry.invalidateUser(a2.id)
    const demoted = await get('/api/users?limit=5', a2.token)
    expect(demoted.status).toBe(403)
    expect(((await demoted.json()) as any).success).toBe(false)
  })

  test("entries are per viewer: another user's read never gets the first one's list", async () => {
    const a = await t.user()
    const b = await t.user()
    const up = await postUpload(t.url, a.token, await multipartBytes([
      { name: 'dataset', filename: 'a.csv', contentType: 'text/csv', data: 'x,y\n1,2\n' },
      { name: 'name', value: 'mine' },
    ]))
    expect(up.status).toBe(201)
    await get('/api/datakits', a.token)
    const servedA = await pipelineEntries('/api/datakits', () => get('/api/datakits', a.token))
    expect(servedA.entries).toBe(0)
    expect(servedA.result.headers.get('x-cache')).toBe('HIT')
    expect(((await servedA.result.json()) as any).data.map((d: any) => d.id)).toEqual([up.body.data.id])
    const forB = await pipelineEntries('/api/datakits', () => get('/api/datakits', b.token))
    expect(forB.entries).toBe(1)
    expect(forB.result.headers.get('x-cache')).toBe('MISS')
    expect(((await forB.result.json()) as any).data).toEqual([])
  })

  test('past the limit the served route answers 429 with Retry-After, in the envelope', async () => {
    const u = await t.user()
    await get('/api/auth/me', u.token)
    const last = await get('/api/auth/me', u.token)
    expect(last.headers.get('x-cache')).toBe('HIT')
    const { windowMs, max } = t.config.rateLimit
    const key = `api:u:${u.id}`
    try {
      for (let used = max - Number(last.headers.get('ratelimit-remaining')); used < max; used++) await t.server.http.rateLimits.hit(key, windowMs, max)
      const limited = await pipelineEntries('/api/auth/me', () => get('/api/auth/me', u.token))
      expect(limited.entries).toBe(0)
      expect(limited.result.status).toBe(429)
      expect(Number(limited.result.headers.get('retry-after'))).toBeGreaterThan(0)
      expect(limited.result.headers.get('ratelimit-remaining')).toBe('0')
      expect(await limited.result.json()).toMatchObject({ success: false, error: 'Too many requests, please try again later' })
    } finally {
      await t.server.http.rateLimits.reset(key)
    }
  })
})
