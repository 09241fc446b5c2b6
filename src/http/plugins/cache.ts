/**
 * The guide's `cacheMiddleware({ ttl })`: list and detail routes opt in by answering through
 * `cache.serve(...)`. Entries are per viewer and grouped in scopes that writers invalidate
 * (`user:<id>`, `users`, …) before they answer, so a user never reads stale data right
 * after their own write. Every cached answer carries an ETag; If-None-Match → 304.
 */
import type { Metrics } from '../../core/metrics.ts'
import { MemoryCacheStore, type CacheEntry, type CacheStore } from '../../store/response-cache.ts'
import { encodeBody, headerTemplate, respond, type EncodedBody } from './request.ts'

export interface ServeOptions {
  /** The scope writers invalidate, e.g. `user:<id>`. */
  scope: string
  /** Who is looking: entries are never shared between viewers. */
  viewer: string
  /** Route label for metrics, e.g. `/api/auth/me`. */
  route: string
  ttlSeconds?: number
}

/** Entries are per viewer and per path with query. */
function keyOf(viewer: string, request: Request): string {
  const url = request.url
  return `${viewer}|${url.slice(url.indexOf('/', 8))}`
}

/** The headers every answer from the cache carries. */
function cachingHeaders(entry: CacheEntry, hit: boolean): Record<string, string> {
  return { 'x-cache': hit ? 'HIT' : 'MISS', etag: entry.etag, 'cache-control': 'private, no-cache', 'content-type': entry.contentType }
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
    const key = keyOf(opts.viewer, request)
    const store = this.store
    const { entry, generation } = store instanceof MemoryCacheStore ? store.getSync(opts.scope, key) : await store.get(opts.scope, key)
    let body: EncodedBody | null
    if (entry) body = this.answer(request, headers, entry, opts.route, true)
    else {
      const text = JSON.stringify(await compute())
      const fresh = { body: text, etag: etagOf(text), contentType: 'application/json', expiresAt: Date.now() + (opts.ttlSeconds ?? this.defaultTtlSeconds) * 1000 }
      await store.set(opts.scope, key, fresh, generation)
      body = this.answer(request, headers, fresh, opts.route, false)
    }
    // Elysia turns a string, bytes or a stream (a large body gzipped off the event loop) into
    // the Response itself (the mapResponse hook, plugins/request.ts), with the headers set here;
    // typed as Response because that is what the client receives and it keeps route types honest.
    return body === null ? new Response(null, { status: 304, headers }) : (body as unknown as Response)
  }

  /**
   * The entry the in-process store holds for this request and viewer, found without I/O;
   * undefined on a miss, and always with a shared (Redis) store. For cached reads served
   * ahead of the pipeline (src/http/native.ts).
   */
  peek(request: Request, scope: string, viewer: string): CacheEntry | undefined {
    const store = this.store
    return store instanceof MemoryCacheStore ? store.getSync(scope, keyOf(viewer, request)).entry : undefined
  }

  /**
   * The Response for `entry`, found by `peek`, with the request's `own` headers: 304 when
   * the client's If-None-Match matches. The entry's fixed headers (ETag, type, caching) come
   * from a template built once per entry; the same headers as `serve` gives a hit.
   */
  respondHit(request: Request, own: Record<string, string>, entry: CacheEntry, route: string): Response {
    if (this.notModified(request, entry, route, true)) return respond(null, 304, Object.assign(own, cachingHeaders(entry, true)))
    return respond(encodeBody(request, entry.body, own), 200, own, (entry.template ??= headerTemplate(cachingHeaders(entry, true))))
  }

  /**
   * Answer with `entry`: its caching headers written into `headers`, and its body (gzipped
   * when the client accepts it), or null when the client's If-None-Match matches (a 304).
   */
  private answer(request: Request, headers: Record<string, string>, entry: CacheEntry, route: string, hit: boolean): EncodedBody | null {
    Object.assign(headers, cachingHeaders(entry, hit))
    return this.notModified(request, entry, route, hit) ? null : encodeBody(request, entry.body, headers)
  }

  /** Whether the client's If-None-Match matches `entry` (a 304); counts the answer either way. */
  private notModified(request: Request, entry: CacheEntry, route: string, hit: boolean): boolean {
    const matched = matches(request.headers.get('if-none-match'), entry.etag)
    this.count(route, matched ? 'not_modified' : hit ? 'hit' : 'miss')
    return matched
  }

  // Counted locally and added to prom-client when scraped: a labelled inc() hashes its
  // label object on every call, which showed up in the request profile. Found by route, then
  // result (both literals), so counting builds no key.
  private readonly counts = new Map<string, Map<string, { n: number }>>()
  private count(route: string, result: string) {
    let byResult = this.counts.get(route)
    if (!byResult) this.counts.set(route, (byResult = new Map()))
    const c = byResult.get(result)
    if (c) c.n++
    else byResult.set(result, { n: 1 })
  }

  /** Move the local counts into the Prometheus counter (called before each scrape). */
  flushMetrics() {
    for (const [route, byResult] of this.counts) {
      for (const [result, c] of byResult) {
        if (c.n) this.metrics.cacheRequests.inc({ route, result }, c.n)
        c.n = 0
      }
    }
  }

  invalidate(...scopes: string[]): Promise<void> {
    return this.store.invalidate(...scopes)
  }
}
