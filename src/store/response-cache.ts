/**
 * Response cache entries, grouped by scope (e.g. `user:<id>` or `users`). Writers
 * invalidate scopes; each scope carries a generation so an entry computed from data read
 * before an invalidation is never stored after it (the classic stale-set race).
 * Two stores with one contract: in-process, and Redis for a cluster.
 */
import type { Redis } from './redis.ts'

export interface CacheEntry {
  body: string
  etag: string
  contentType: string
  expiresAt: number
  /** The in-process store's entries keep their response headers here, built on first use (src/http/plugins/cache.ts). */
  template?: Headers
}

export interface CacheStore {
  /** The entry and the scope's current generation (pass it back to `set`). */
  get(scope: string, key: string): Promise<{ entry: CacheEntry | undefined; generation: number }>
  /** Store unless the scope was invalidated since `generation` was read. */
  set(scope: string, key: string, entry: CacheEntry, generation: number): Promise<boolean>
  invalidate(...scopes: string[]): Promise<void>
}

export class MemoryCacheStore implements CacheStore {
  private readonly scopes = new Map<string, { generation: number; entries: Map<string, CacheEntry> }>()
  private size = 0

  constructor(private readonly maxEntries = 10_000) {}

  private scope(name: string) {
    let s = this.scopes.get(name)
    if (!s) {
      s = { generation: 0, entries: new Map() }
      this.scopes.set(name, s)
    }
    return s
  }

  async get(scope: string, key: string) {
    return this.getSync(scope, key)
  }

  /** Synchronous form, for the hot path. */
  getSync(scope: string, key: string): { entry: CacheEntry | undefined; generation: number } {
    const s = this.scopes.get(scope)
    if (!s) return { entry: undefined, generation: 0 }
    const entry = s.entries.get(key)
    if (entry && entry.expiresAt <= Date.now()) {
      s.entries.delete(key)
      this.size--
      return { entry: undefined, generation: s.generation }
    }
    return { entry, generation: s.generation }
  }

  async set(scope: string, key: string, entry: CacheEntry, generation: number) {
    const s = this.scope(scope)
    if (s.generation !== generation) return false
    if (this.size >= this.maxEntries) this.evict()
    if (!s.entries.has(key)) this.size++
    s.entries.set(key, entry)
    return true
  }

  async invalidate(...scopes: string[]) {
    for (const name of scopes) {
      const s = this.scope(name)
      s.generation++
      this.size -= s.entries.size
      s.entries.clear()
    }
  }

  /** Drop the oldest scopes' entries until there is room (insertion order ≈ age). */
  private evict() {
    for (const s of this.scopes.values()) {
      this.size -= s.entries.size
      s.entries.clear()
      if (this.size < this.maxEntries * 0.9) return
    }
  }
}

// KEYS: generation key, entries hash. ARGV: field, value, expected generation, ttl ms.
const SET = `
local g = redis.call('GET', KEYS[1]) or '0'
if g ~= ARGV[3] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
local t = redis.call('PTTL', KEYS[2])
if t < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[2], ARGV[4]) end
return 1`

export class RedisCacheStore implements CacheStore {
  constructor(
    private readonly redis: Redis,
    private readonly prefix = 'quadrax:cache:',
  ) {}

  async get(scope: string, key: string) {
    const [[, gen], [, raw]] = (await this.redis
      .multi()
      .get(`${this.prefix}gen:${scope}`)
      .hget(`${this.prefix}s:${scope}`, key)
      .exec()) as [[unknown, string | null], [unknown, string | null]]
    const generation = Number(gen ?? 0)
    if (!raw) return { entry: undefined, generation }
    const entry = JSON.parse(raw) as CacheEntry
    if (entry.expiresAt <= Date.now()) return { entry: undefined, generation }
    return { entry, generation }
  }

  async set(scope: string, key: string, entry: CacheEntry, generation: number) {
    const ttl = Math.max(1, entry.expiresAt - Date.now())
    const r = await this.redis.eval(SET, 2, `${this.prefix}gen:${scope}`, `${this.prefix}s:${scope}`, key, JSON.stringify(entry), String(generation), ttl)
    return r === 1
  }

  async invalidate(...scopes: string[]) {
    if (scopes.length === 0) return
    const m = this.redis.multi()
    for (const s of scopes) m.incr(`${this.prefix}gen:${s}`).del(`${this.prefix}s:${s}`)
    await m.exec()
  }
}
