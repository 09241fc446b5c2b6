/**
 * Rate limits, answered with 429, Retry-After and the RateLimit-* headers
 * (draft-ietf-httpapi-ratelimit-headers). The API limit counts per user, or per client IP
 * for anonymous calls; each credential endpoint (register, login, refresh) has a budget of
 * its own per client source — one budget for all three let a tab that refreshes its token
 * lock its user out of logging in. Failed logins are throttled apart from these request
 * budgets (src/auth/login-throttle.ts).
 */
import type { Elysia } from 'elysia'
import { RateLimitedError } from '../../core/errors.ts'
import { MemoryRateLimitStore, type RateLimitResult } from '../../store/rate-limit.ts'
import { principalOf, type HttpDeps } from '../context.ts'
import type { Principal } from '../../auth/principal.ts'
import { sourceOf } from '../../auth/login-throttle.ts'

// Header values are small numbers that repeat: the limit on every request, the seconds to
// the reset within a window; remember their text rather than make it per request.
const texts: string[] = []
const text = (n: number): string => (n < 4096 ? (texts[n] ??= String(n)) : String(n))

function apply(deps: HttpDeps, name: string, r: RateLimitResult, windowMs: number, set: { headers: unknown }) {
  const h = set.headers as Record<string, string>
  h['ratelimit-limit'] = text(r.limit)
  h['ratelimit-remaining'] = text(r.remaining)
  h['ratelimit-reset'] = text(Math.ceil(r.resetMs / 1000))
  if (!r.allowed) {
    deps.metrics.rateLimited.inc({ limit: name })
    const retry = Math.max(1, Math.ceil(r.resetMs / 1000))
    throw new RateLimitedError('Too many requests, please try again later', retry, [{ field: 'rate', message: `Limit of ${r.limit} requests per ${Math.ceil(windowMs / 1000)} s reached` }])
  }
}

/** Count one hit; synchronous with the in-process store (no promise on the hot path). */
function take(deps: HttpDeps, name: string, key: string, windowMs: number, max: number, set: { headers: unknown }): void | Promise<void> {
  const store = deps.rateLimits
  if (store instanceof MemoryRateLimitStore) return apply(deps, name, store.hitSync(key, windowMs, max), windowMs, set)
  return store.hit(key, windowMs, max).then((r) => apply(deps, name, r, windowMs, set))
}

/**
 * Count one hit of the API-wide limit for `p` (or the client's IP when anonymous), with its
 * RateLimit-* headers written into `set.headers`; throws the 429 past the limit.
 */
export function apiLimit(deps: HttpDeps, request: Request, set: { headers: unknown }, p: Principal | null): void | Promise<void> {
  const { windowMs, max } = deps.config.rateLimit
  return take(deps, 'api', p ? userKey(p.userId) : `api:ip:${deps.frame.clientIp(request)}`, windowMs, max, set)
}

// The same key string for a user's every request: a store's map then finds it by a hash the
// string already carries, instead of hashing a new one (bounded: dropped when it grows large).
const userKeys = new Map<string, string>()
function userKey(userId: string): string {
  let key = userKeys.get(userId)
  if (key === undefined) {
    if (userKeys.size >= 100_000) userKeys.clear()
    userKeys.set(userId, (key = `api:u:${userId}`))
  }
  return key
}

/** The API-wide limit, on every /api route. */
export function apiRateLimit(deps: HttpDeps) {
  return (app: Elysia) =>
    app.onBeforeHandle({ as: 'global' }, ({ request, set, path }) => {
      if (!path.startsWith('/api/')) return
      const p = principalOf(deps, request)
      return p instanceof Promise ? p.then((v) => apiLimit(deps, request, set, v)) : apiLimit(deps, request, set, p)
    })
}

/**
 * The stricter limit of a credential endpoint, per client source (an IP; an IPv6 /64), with a
 * budget and key of each endpoint's own (AUTH_LOGIN_/AUTH_REGISTER_/AUTH_REFRESH_/AUTH_PASSWORD_RESET_RATE_LIMIT_*;
 * forgot-password and reset-password share the last).
 */
export function authRateLimit(deps: HttpDeps, endpoint: 'login' | 'register' | 'refresh' | 'password_reset', request: Request, set: { headers: unknown }) {
  const { windowMs, max } = endpoint === 'password_reset' ? deps.config.passwordReset.rateLimit : deps.config.authRateLimit[endpoint]
  return take(deps, `auth_${endpoint}`, `auth:${endpoint}:${sourceOf(deps.frame.clientIp(request))}`, windowMs, max, set)
}
