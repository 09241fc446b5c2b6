/**
 * Rate-limit counters: fixed windows, holds (a key that lasts exactly so long) and
 * exponential backoff. Two stores pass the same contract tests (test/store/contracts.test.ts):
 * in-process for a single node, Redis for a cluster (where every node sees the same counts).
 */
import type { Redis } from './redis.ts'

export interface RateLimitResult {
  allowed: boolean
  limit: number
  remaining: number
  /** Milliseconds until the window resets. */
  resetMs: number
}

/** When a key's next attempt is allowed: `free` attempts at once, then waits doubling from `baseMs` up to `maxMs`. */
export interface BackoffPolicy {
  free: number
  baseMs: number
  maxMs: number
  /** The key is forgotten this long after its last counted attempt. */
  windowMs: number
}

export interface BackoffResult {
  allowed: boolean
  /** Attempts counted so far (including this one when allowed). */
  count: number
  /** Milliseconds until the next attempt is allowed (0 when allowed now). */
  retryMs: number
}

export interface RateLimitStore {
  /** Count one hit for `key` in a window of `windowMs`; allowed while the count is ≤ `max`. */
  hit(key: string, windowMs: number, max: number): Promise<RateLimitResult>
  /** The count of a `hit` or `hold` key and the milliseconds to its reset, without counting (0 and 0 when absent). */
  peek(key: string): Promise<{ count: number; resetMs: number }>
  /** Set `key` to a count of 1 for exactly `ms` from now, whatever it held (a mark that lasts so long). */
  hold(key: string, ms: number): Promise<void>
  /**
   * Count one attempt of `key` if the policy allows it now, atomically: the first `free`
   * attempts are allowed at once; after `n ≥ free` attempts the next one must wait
   * `min(baseMs · 2^(n − free), maxMs)` after the last. A refused attempt is not counted.
   */
  backoff(key: string, policy: BackoffPolicy): Promise<BackoffResult>
  /**
   * Give back one attempt `backoff` counted that was never evaluated (the work it admitted
   * could not be done, e.g. the database was down): the count drops by one, never below 0.
   */
  unbackoff(key: string): Promise<void>
  /** Forget a key (e.g. after a successful login). */
  reset(key: string): Promise<void>
}

/** The wait before attempt `count + 1`, per the policy (the exponent is capped: 2^52 ms is forever anyway). */
function backoffWait(count: number, p: BackoffPolicy): number {
  return count < p.free ? 0 : Math.min(p.baseMs * 2 ** Math.min(count - p.free, 52), p.maxMs)
}

function result(count: number, max: number, resetMs: number): RateLimitResult {
  return { allowed: count <= max, limit: max, remaining: Math.max(0, max - count), resetMs: Math.max(0, resetMs) }
}

type Window = { count: number; resetAt: number; last?: number }

export class MemoryRateLimitStore implements RateLimitStore {
  /** `last`: the time of the last counted attempt of a backoff key. */
  private readonly windows = new Map<string, Window>()
  private lastSweep = Date.now()

  /**
   * `maxKeys` bounds the memory an attacker can make the store hold (failed-login keys live up
   * to a day, one per email and address tried): past it, expired keys go, then the oldest.
   * A key costs about 200 bytes (1,000,000 backoff keys measured 197 MB of heap), so the
   * default holds about 50 MB.
   */
  constructor(private readonly maxKeys = 250_000) {
    if (maxKeys < 1) throw new Error('maxKeys must be >= 1')
  }

  /** Keys held (expired ones included until a sweep). */
  get size(): number {
    return this.windows.size
  }

  private put(key: string, w: Window, now: number) {
    if (this.windows.size >= this.maxKeys && !this.windows.has(key)) {
      this.sweep(now)
      // Still full: drop the oldest tenth (a Map iterates in insertion order).
      const keep = Math.floor(this.maxKeys * 0.9)
      for (const k of this.windows.keys()) {
        if (this.windows.size <= keep) break
        this.windows.delete(k)
      }
    }
    this.windows.set(key, w)
  }

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
      this.put(key, w, now)
    }
    w.count++
    return result(w.count, max, w.resetAt - now)
  }

  async peek(key: string): Promise<{ count: number; resetMs: number }> {
    const now = Date.now()
    const w = this.windows.get(key)
    return w && w.resetAt > now ? { count: w.count, resetMs: w.resetAt - now } : { count: 0, resetMs: 0 }
  }

  async hold(key: string, ms: number): Promise<void> {
    const now = Date.now()
    this.put(key, { count: 1, resetAt: now + ms }, now)
  }

  async backoff(key: string, policy: BackoffPolicy): Promise<BackoffResult> {
    const now = Date.now()
    if (now - this.lastSweep > 60_000) this.sweep(now)
    let w = this.windows.get(key)
    if (w && w.resetAt <= now) w = undefined
    const count = w?.count ?? 0
    const retryMs = (w?.last ?? 0) + backoffWait(count, policy) - now
    if (w && retryMs > 0) return { allowed: false, count, retryMs }
    this.put(key, { count: count + 1, last: now, resetAt: now + policy.windowMs }, now)
    return { allowed: true, count: count + 1, retryMs: 0 }
  }

  async unbackoff(key: string): Promise<void> {
    const w = this.windows.get(key)
    if (w && w.count > 0) w.count -= 1
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

// The count and time to live of a counter, without counting; [0, 0] when absent.
const PEEK = `
local c = redis.call('GET', KEYS[1])
if not c then return {0, 0} end
local t = redis.call('PTTL', KEYS[1])
if t < 0 then t = 0 end
return {tonumber(c), t}`

// A hash {c: attempts, l: last attempt (ms)}. Time comes from the Redis server, so every node
// of a cluster measures the waits on one clock. Returns [allowed (0/1), count, retry ms].
const BACKOFF = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local c = tonumber(redis.call('HGET', KEYS[1], 'c') or '0')
local last = tonumber(redis.call('HGET', KEYS[1], 'l') or '0')
local free, base, max, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
if c >= free then
  local wait = math.min(base * 2 ^ math.min(c - free, 52), max)
  local left = last + wait - now
  if left > 0 then return {0, c, math.ceil(left)} end
end
redis.call('HSET', KEYS[1], 'c', c + 1, 'l', now)
redis.call('PEXPIRE', KEYS[1], window)
return {1, c + 1, 0}`

// One attempt back, never below 0; the window and the last attempt's time stay.
const UNBACKOFF = `
local c = tonumber(redis.call('HGET', KEYS[1], 'c') or '0')
if c > 0 then redis.call('HSET', KEYS[1], 'c', c - 1) end
return c`

export class RedisRateLimitStore implements RateLimitStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'quadrax:rl:',
  ) {}

  async hit(key: string, windowMs: number, max: number): Promise<RateLimitResult> {
    const [count, ttl] = (await this.redis.eval(HIT, 1, this.prefix + key, windowMs)) as [number, number]
    return result(count, max, ttl)
  }

  async peek(key: string): Promise<{ count: number; resetMs: number }> {
    const [count, resetMs] = (await this.redis.eval(PEEK, 1, this.prefix + key)) as [number, number]
    return { count, resetMs }
  }

  async hold(key: string, ms: number): Promise<void> {
    await this.redis.set(this.prefix + key, 1, 'PX', ms)
  }

  async backoff(key: string, policy: BackoffPolicy): Promise<BackoffResult> {
    const [allowed, count, retryMs] = (await this.redis.eval(BACKOFF, 1, this.prefix + key, policy.free, policy.baseMs, policy.maxMs, policy.windowMs)) as [number, number, number]
    return { allowed: allowed === 1, count, retryMs }
  }
  async unbackoff(key: string): Promise<void> {
    await this.redis.eval(UNBACKOFF, 1, this.prefix + key)
  }


  async reset(key: string): Promise<void> {
    await this.redis.del(this.prefix + key)
  }
}
