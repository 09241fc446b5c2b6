/**
 * The guide's `cacheMiddleware({ ttl })`: list and detail routes opt in by answering through
 * `cache.serve(...)`. Entries are per viewer and grouped in scopes that writers invalidate
 * (`user:<id>`, `users`, …) before they answer, so a user never reads stale data right
 * after their own write. Every cached answer carries an ETag; If-None-Match → 304.
 */
import type { Metrics } from '../../core/metrics.ts'
import { MemoryCacheStore, type CacheStore } from '../../store/response-cache.ts'
import { encodeBody } from './request.ts'

export interface ServeOptions {
  /** The scope writers invalidate, e.g. `user:<id>`. */
  scope: string
  /** Who is looking: entries are never shared between viewers. */
  viewer: string
  /** Route label for metrics, e.g. `/api/auth/me`. */
  route: string
  ttlSeconds?: number
}

function etagOf(body: string): string {
  return `W/"${Bun.hash(body).toString(36)}-${body.length.toString(36)}"`
}

function matches(ifNoneMatch: string | null, etag: string): boolean {
  if (!ifNoneMatch) return false
  if (ifNoneMatch.trim() === '*') return true
  return ifNoneMatch.split(',').some((t) => t.trim() === etag || t.trim() === etag.slice(2))
}

export class ResponseCache {
  constructor(
    private readonly store: CacheStore,
    private readonly metrics: Metrics,
    private readonly defaultTtlSeconds: number,
  ) {}

  async serve(request: Request, headers: Record<string, string>, opts: ServeOptions, compute: () => Promise<unknown>): Promise<Response> {
    const url = request.url
    const key = `${opts.viewer}|${url.slice(url.indexOf('/', 8))}`
    const store = this.store
    const { entry, generation } = store instanceof MemoryCacheStore ? store.getSync(opts.scope, key) : await store.get(opts.scope, key)
    let body: string
    let etag: string
    if (entry) {
      body = entry.body
      etag = entry.etag
      headers['x-cache'] = 'HIT'
    } else {
      body = JSON.stringify(await compute())
      etag = etagOf(body)
      const ttl = (opts.ttlSeconds ?? this.defaultTtlSeconds) * 1000
      await this.store.set(opts.scope, key, { body, etag, contentType: 'application/json', expiresAt: Date.now() + ttl }, generation)
      headers['x-cache'] = 'MISS'
    }
    headers.etag = etag
    headers['cache-control'] = 'private, no-cache'
    headers['content-type'] = 'application/json'
    if (matches(request.headers.get('if-none-match'), etag)) {
      this.count(opts.route, 'not_modified')
      return new Response(null, { status: 304, headers })
    }
    this.count(opts.route, entry ? 'hit' : 'miss')
    // Elysia turns a string or bytes into the Response itself, with the headers set above;
    // typed as Response because that is what the client receives and it keeps route types honest.
    return encodeBody(request, body, headers) as unknown as Response
  }

  // Counted locally and added to prom-client when scraped: a labelled inc() hashes its
  // label object on every call, which showed up in the request profile.
  private readonly counts = new Map<string, { route: string; result: string; n: number }>()
  private count(route: string, result: string) {
    const key = `${route} ${result}`
    const c = this.counts.get(key)
    if (c) c.n++
    else this.counts.set(key, { route, result, n: 1 })
  }

  /** Move the local counts into the Prometheus counter (called before each scrape). */
  flushMetrics() {
    for (const c of this.counts.values()) {
      if (c.n) this.metrics.cacheRequests.inc({ route: c.route, result: c.result }, c.n)
      c.n = 0
    }
  }

  invalidate(...scopes: string[]): Promise<void> {
    return this.store.invalidate(...scopes)
  }
}
