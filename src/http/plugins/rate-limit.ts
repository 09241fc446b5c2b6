/**
 * Rate limits, answered with 429, Retry-After and the RateLimit-* headers
 * (draft-ietf-httpapi-ratelimit-headers). The API limit counts per user, or per client IP
 * for anonymous calls; the auth limit (register, login, refresh) counts per IP.
 */
import type { Elysia } from 'elysia'
import { RateLimitedError } from '../../core/errors.ts'
import { MemoryRateLimitStore, type RateLimitResult } from '../../store/rate-limit.ts'
import { principalOf, type AppDeps } from '../context.ts'
import { clientIp } from './request.ts'

function headers(set: { headers: unknown }, r: RateLimitResult, windowMs: number) {
  const h = set.headers as Record<string, string>
  h['ratelimit-limit'] = String(r.limit)
  h['ratelimit-remaining'] = String(r.remaining)
  h['ratelimit-reset'] = String(Math.ceil(r.resetMs / 1000))
  h['ratelimit-policy'] = `${r.limit};w=${Math.ceil(windowMs / 1000)}`
}

async function take(deps: AppDeps, name: string, key: string, windowMs: number, max: number, set: { headers: unknown }) {
  const store = deps.rateLimits
  // The in-process store answers synchronously: no promise on the hot path.
  const r = store instanceof MemoryRateLimitStore ? store.hitSync(key, windowMs, max) : await store.hit(key, windowMs, max)
  headers(set, r, windowMs)
  if (!r.allowed) {
    deps.metrics.rateLimited.inc({ limit: name })
    const retry = Math.max(1, Math.ceil(r.resetMs / 1000))
    throw new RateLimitedError('Too many requests, please try again later', retry, [{ field: 'rate', message: `Limit of ${r.limit} requests per ${Math.ceil(windowMs / 1000)} s reached` }])
  }
}

/** The API-wide limit, on every /api route. */
export function apiRateLimit(deps: AppDeps) {
  const { windowMs, max } = deps.config.rateLimit
  return (app: Elysia) =>
    app.onBeforeHandle({ as: 'global' }, async ({ request, set, path }) => {
      if (!path.startsWith('/api/')) return
      const p = await principalOf(deps, request)
      await take(deps, 'api', p ? `api:u:${p.userId}` : `api:ip:${clientIp(request)}`, windowMs, max, set)
    })
}

/** The stricter limit for credential endpoints, per client IP. */
export function authRateLimit(deps: AppDeps, request: Request, set: { headers: unknown }) {
  const { windowMs, max } = deps.config.authRateLimit
  return take(deps, 'auth', `auth:ip:${clientIp(request)}`, windowMs, max, set)
}
