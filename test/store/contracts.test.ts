/**
 * One contract per mechanism, run against every implementation: the in-process stores and
 * the Redis stores must behave the same.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { MemoryRateLimitStore, RedisRateLimitStore, type RateLimitStore } from '../../src/store/rate-limit.ts'
import { createRedis, type Redis } from '../../src/store/redis.ts'
import { MemoryCacheStore, RedisCacheStore, type CacheStore } from '../../src/store/response-cache.ts'
import { service } from '../support/services.ts'
import { until } from '../support/until.ts'

const redisUrl = service('redis', 'test/store/contracts.test.ts')
const prefix = `test-${crypto.randomUUID()}:`
let redis: Redis | undefined
if (redisUrl) redis = createRedis(redisUrl)
afterAll(async () => {
  if (!redis) return
  const keys = await redis.keys(`${prefix}*`)
  if (keys.length) await redis.del(...keys)
  redis.disconnect()
})

const rateStores: [string, () => RateLimitStore][] = [['memory', () => new MemoryRateLimitStore()]]
const cacheStores: [string, () => CacheStore][] = [['memory', () => new MemoryCacheStore()]]
if (redisUrl) {
  rateStores.push(['redis', () => new RedisRateLimitStore(redis!, `${prefix}rl:${crypto.randomUUID()}:`)])
  cacheStores.push(['redis', () => new RedisCacheStore(redis!, `${prefix}c:${crypto.randomUUID()}:`)])
}


for (const [name, make] of rateStores) {
  describe(`rate limit store: ${name}`, () => {
    test('allows max hits per window, then refuses, reporting remaining and reset', async () => {
      const s = make()
      const results = []
      for (let i = 0; i < 4; i++) results.push(await s.hit('k', 60_000, 3))
      expect(results.map((r) => r.allowed)).toEqual([true, true, true, false])
      expect(results.map((r) => r.remaining)).toEqual([2, 1, 0, 0])
      expect(results[3]!.limit).toBe(3)
      expect(results[3]!.resetMs).toBeGreaterThan(50_000)
      expect(results[3]!.resetMs).toBeLessThanOrEqual(60_000)
    })

    test('keys are independent, and reset forgets a key', async () => {
      const s = make()
      await s.hit('a', 60_000, 1)
      expect((await s.hit('a', 60_000, 1)).allowed).toBe(false)
      expect((await s.hit('b', 60_000, 1)).allowed).toBe(true)
      await s.reset('a')
      expect((await s.hit('a', 60_000, 1)).allowed).toBe(true)
    })

    test('a new window starts when the old one expires', async () => {
      const s = make()
      await s.hit('w', 40, 1)
      expect((await s.hit('w', 40, 1)).allowed).toBe(false)
      await until(async () => (await s.hit('w', 40, 1)).allowed, 'a new window', 5_000)
    })

    test('concurrent hits are all counted', async () => {
      const s = make()
      const rs = await Promise.all(Array.from({ length: 50 }, () => s.hit('c', 60_000, 20)))
      expect(rs.filter((r) => r.allowed).length).toBe(20)
    })

    test('peek reads a count and its reset without counting; absent keys read 0', async () => {
      const s = make()
      expect(await s.peek('p')).toEqual({ count: 0, resetMs: 0 })
      await s.hit('p', 60_000, 5)
      await s.hit('p', 60_000, 5)
      const a = await s.peek('p')
      const b = await s.peek('p')
      expect([a.count, b.count]).toEqual([2, 2])
      expect(a.resetMs).toBeGreaterThan(50_000)
      expect(a.resetMs).toBeLessThanOrEqual(60_000)
      expect((await s.hit('p', 60_000, 5)).remaining).toBe(2)
    })

    test('hold sets a key for exactly so long, replacing what it held; it then expires', async () => {
      const s = make()
      for (let i = 0; i < 3; i++) await s.hit('h', 60_000, 5)
      await s.hold('h', 120_000)
      const held = await s.peek('h')
      expect(held.count).toBe(1)
      expect(held.resetMs).toBeGreaterThan(60_000)
      await s.hold('h', 40)
      expect((await s.peek('h')).resetMs).toBeLessThanOrEqual(40)
      await until(async () => (await s.peek('h')).count === 0, 'the hold to expire', 5_000)
    })

    test('backoff: free attempts at once, then refused until a doubling wait has passed', async () => {
      const s = make()
      const policy = { free: 2, baseMs: 60_000, maxMs: 100_000, windowMs: 3_600_000 }
      const a = [await s.backoff('b', policy), await s.backoff('b', policy)]
      expect(a.map((r) => [r.allowed, r.count, r.retryMs])).toEqual([
        [true, 1, 0],
        [true, 2, 0],
      ])
      const refused = await s.backoff('b', policy)
      expect(refused.allowed).toBe(false)
      expect(refused.count).toBe(2) // a refused attempt is not counted
      expect(refused.retryMs).toBeGreaterThan(50_000)
      expect(refused.retryMs).toBeLessThanOrEqual(60_000)
      await s.reset('b')
      expect((await s.backoff('b', policy)).allowed).toBe(true)
    })

    test('unbackoff: an attempt given back frees its place (never below 0)', async () => {
      const s = make()
      const policy = { free: 2, baseMs: 60_000, maxMs: 60_000, windowMs: 3_600_000 }
      await s.unbackoff('u') // nothing to give back
      expect((await s.backoff('u', policy)).count).toBe(1)
      expect((await s.backoff('u', policy)).count).toBe(2)
      expect((await s.backoff('u', policy)).allowed).toBe(false)
      await s.unbackoff('u')
      const again = await s.backoff('u', policy)
      expect([again.allowed, again.count]).toEqual([true, 2])
      for (let i = 0; i < 5; i++) await s.unbackoff('u')
      expect((await s.backoff('u', policy)).count).toBe(1)
    })

    test('backoff: the wait doubles per attempt past the free ones and stops at maxMs', async () => {
      const s = make()
      // 100 ms, then 200 ms, then capped at 300 ms (not 400): awaited as conditions, not slept.
      // Each wait is read right after the attempt it follows; the margins are 100 ms.
      const policy = { free: 1, baseMs: 100, maxMs: 300, windowMs: 60_000 }
      expect((await s.backoff('d', policy)).allowed).toBe(true)
      const waits: number[] = []
      for (let i = 0; i < 3; i++) {
        const r = await s.backoff('d', policy)
        expect(r.allowed).toBe(false)
        waits.push(r.retryMs)
        await until(async () => (await s.backoff('d', policy)).allowed, `attempt ${i + 2}`, 5_000, 5)
      }
      expect(waits[0]).toBeLessThanOrEqual(100)
      expect(waits[1]).toBeGreaterThan(100)
      expect(waits[1]).toBeLessThanOrEqual(200)
      expect(waits[2]).toBeGreaterThan(200)
      expect(waits[2]).toBeLessThanOrEqual(300)
    })

    test('backoff: concurrent attempts are counted one by one (no more than `free` get through at once)', async () => {
      const s = make()
      const rs = await Promise.all(Array.from({ length: 30 }, () => s.backoff('cc', { free: 5, baseMs: 60_000, maxMs: 60_000, windowMs: 60_000 })))
      expect(rs.filter((r) => r.allowed).length).toBe(5)
    })

    test('backoff: a key is forgotten windowMs after its last attempt', async () => {
      const s = make()
      const policy = { free: 1, baseMs: 60_000, maxMs: 60_000, windowMs: 40 }
      expect((await s.backoff('f', policy)).allowed).toBe(true)
      expect((await s.backoff('f', policy)).allowed).toBe(false)
      await until(async () => (await s.backoff('f', policy)).allowed, 'the key to be forgotten', 5_000)
    })
  })
}

describe('rate limit store: memory bound', () => {
  test('holds at most maxKeys keys: expired ones go first, then the oldest; the newest are kept', async () => {
    const s = new MemoryRateLimitStore(100)
    for (let i = 0; i < 50; i++) await s.hold(`gone${i}`, 1)
    await until(async () => (await s.peek('gone49')).count === 0, 'the holds to expire', 5_000)
    for (let i = 0; i < 1000; i++) await s.backoff(`k${i}`, { free: 1, baseMs: 60_000, maxMs: 60_000, windowMs: 60_000 })
    expect(s.size).toBeLessThanOrEqual(100)
    expect((await s.peek('gone0')).count).toBe(0)
    // The most recent keys still count.
    expect((await s.backoff('k999', { free: 1, baseMs: 60_000, maxMs: 60_000, windowMs: 60_000 })).allowed).toBe(false)
  })
})

const entry = (body: string, ttlMs = 60_000) => ({ body, etag: `W/"${body}"`, contentType: 'application/json', expiresAt: Date.now() + ttlMs })

for (const [name, make] of cacheStores) {
  describe(`response cache store: ${name}`, () => {
    test('stores and returns entries per scope and key', async () => {
      const s = make()
      const { entry: none, generation } = await s.get('user:1', '/me')
      expect(none).toBeUndefined()
      expect(await s.set('user:1', '/me', entry('a'), generation)).toBe(true)
      expect((await s.get('user:1', '/me')).entry?.body).toBe('a')
      expect((await s.get('user:2', '/me')).entry).toBeUndefined()
    })

    test('invalidate drops a scope; other scopes survive', async () => {
      const s = make()
      const g1 = (await s.get('x', 'k')).generation
      await s.set('x', 'k', entry('1'), g1)
      const g2 = (await s.get('y', 'k')).generation
      await s.set('y', 'k', entry('2'), g2)
      await s.invalidate('x')
      expect((await s.get('x', 'k')).entry).toBeUndefined()
      expect((await s.get('y', 'k')).entry?.body).toBe('2')
    })

    test('an entry computed before an invalidation is not stored after it', async () => {
      const s = make()
      const { generation } = await s.get('z', 'k')
      await s.invalidate('z') // a write lands while the reader computes
      expect(await s.set('z', 'k', entry('stale'), generation)).toBe(false)
      expect((await s.get('z', 'k')).entry).toBeUndefined()
    })

    test('expired entries are not returned', async () => {
      const s = make()
      const { generation } = await s.get('t', 'k')
      await s.set('t', 'k', entry('old', 30), generation)
      await until(async () => (await s.get('t', 'k')).entry === undefined, 'the entry to expire', 5_000)
    })
  })
}
