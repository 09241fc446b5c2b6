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
  })
}

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
