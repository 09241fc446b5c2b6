/**
 * Fixed-window rate-limit counters. Two stores pass the same contract tests
 * (test/store/rate-limit.test.ts): in-process for a single node, Redis for a cluster.
 */
import type { Redis } from './redis.ts'

export interface RateLimitResult {
  allowed: boolean
  limit: number
  remaining: number
  /** Milliseconds until the window resets. */
  resetMs: number
}

export interface RateLimitStore {
  /** Count one hit for `key` in a window of `windowMs`; allowed while the count is ≤ `max`. */
  hit(key: string, windowMs: number, max: number): Promise<RateLimitResult>
  /** Forget a key (e.g. after a successful login). */
  reset(key: string): Promise<void>
}

function result(count: number, max: number, resetMs: number): RateLimitResult {
  return { allowed: count <= max, limit: max, remaining: Math.max(0, max - count), resetMs: Math.max(0, resetMs) }
}

export class MemoryRateLimitStore implements RateLimitStore {
  private readonly windows = new Map<string, { count: number; resetAt: number }>()
  private lastSweep = Date.now()

  async hit(key: string, windowMs: number, max: number): Promise<RateLimitResult> {
    return this.hitSync(key, windowMs, max)
  }

  /** Synchronous form, for hot paths that must not yield. */
  hitSync(key: string, windowMs: number, max: number): RateLimitResult {
    const now = Date.now()
    if (now - this.lastSweep > 60_000) this.sweep(now)
    let w = this.windows.get(key)
    if (!w || w.resetAt <= now) {
      w = { count: 0, resetAt: now + windowMs }
      this.windows.set(key, w)
    }
    w.count++
    return result(w.count, max, w.resetAt - now)
  }

  async reset(key: string): Promise<void> {
    this.windows.delete(key)
  }

  private sweep(now: number) {
    this.lastSweep = now
    for (const [k, w] of this.windows) if (w.resetAt <= now) this.windows.delete(k)
  }
}

// INCR and set the expiry on the first hit, atomically; returns [count, pttl].
const HIT = `
local c = redis.call('INCR', KEYS[1])
if c == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local t = redis.call('PTTL', KEYS[1])
if t < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); t = tonumber(ARGV[1]) end
return {c, t}`

export class RedisRateLimitStore implements RateLimitStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'quadrax:rl:',
  ) {}

  async hit(key: string, windowMs: number, max: number): Promise<RateLimitResult> {
    const [count, ttl] = (await this.redis.eval(HIT, 1, this.prefix + key, windowMs)) as [number, number]
    return result(count, max, ttl)
  }

  async reset(key: string): Promise<void> {
    await this.redis.del(this.prefix + key)
  }
}
