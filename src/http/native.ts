/**
 * Routes Bun's router serves ahead of Elysia, for the hottest usual cases; everything else
 * goes to the Elysia app unchanged (`fallback`), where the rules are written once.
 *
 * A handler here does what the pipeline does for its route, with the pipeline's own
 * functions: request id and CORS (`Frame.open`), the caller (`callerOf`), the API rate
 * limit (`apiLimit`), the security headers (`respond`), the error envelope
 * (`errorResponse`), the duration metric and log line (`Frame.close`). Elysia's hooks cost
 * a small authenticated read more than its own work (bench/http.ts).
 */
import type { Server } from 'bun'
import { MemoryRateLimitStore } from '../store/rate-limit.ts'
import type { Principal } from '../auth/principal.ts'
import { callerOf, type HttpDeps } from './context.ts'
import { errorResponse } from './plugins/errors.ts'
import { apiLimit } from './plugins/rate-limit.ts'

export type BunRouteHandler = (request: Request & { params: Record<string, string> }, server: Server<unknown>) => Response | Promise<Response>
/** Path pattern → method → handler, as Bun.serve's `routes` takes them. */
export type NativeRoutes = Record<string, Record<string, BunRouteHandler>>
export type Fallback = (request: Request) => Response | Promise<Response>

/** Several route tables as one (methods of the same path are kept side by side). */
export function mergeRoutes(...tables: NativeRoutes[]): NativeRoutes {
  const out: NativeRoutes = {}
  for (const table of tables) for (const path in table) out[path] = { ...out[path], ...table[path] }
  return out
}

/**
 * A GET answered through the response cache (`cache.serve`), declared once for both of its
 * routes: the Elysia route computes and stores the entry; on Bun's router a request whose
 * entry the in-process store holds is answered straight from it.
 */
export interface CachedRead {
  /** The route's path pattern, e.g. `/api/auth/me`; also its label in metrics. */
  path: string
  /**
   * The cache scope of the caller's entry, or null when the caller may not read it as such
   * (the Elysia route then answers: 403, 404…). The Elysia route calls this too.
   */
  scope(p: Principal, params: Record<string, string>): string | null
}

/**
 * The Bun route for a cached read. Served here only when everything is at hand without I/O:
 * the caller (verified-token cache), the in-process rate limit store, and the entry itself.
 * A miss, an unknown or missing token, or a shared (Redis) store falls back to Elysia.
 */
function cachedReadRoute(deps: HttpDeps, read: CachedRead, fallback: Fallback): BunRouteHandler {
  const frame = deps.frame
  const localLimits = deps.rateLimits instanceof MemoryRateLimitStore
  return (request, server) => {
    if (!localLimits) return fallback(request)
    const me = callerOf(deps, request)
    if (me === null || me instanceof Promise) return fallback(request)
    const scope = read.scope(me, request.params)
    const entry = scope === null ? undefined : deps.cache.peek(request, scope, me.userId)
    if (entry === undefined) return fallback(request)

    const { meta, headers } = frame.open(request, server)
    let res: Response
    try {
      // Synchronous with the in-process store: throws the 429 past the limit.
      apiLimit(deps, request, { headers }, me)
      res = deps.cache.respondHit(request, headers, entry, read.path)
    } catch (err) {
      res = errorResponse(deps, request, err, headers)
    }
    frame.close(request, meta, read.path, res.status)
    return res
  }
}

/** The Bun routes (GET) for `reads`. */
export function cachedReadRoutes(deps: HttpDeps, reads: readonly CachedRead[], fallback: Fallback): NativeRoutes {
  return mergeRoutes(
    ...reads.map((r) => {
      const handler = cachedReadRoute(deps, r, fallback)
      // With the trailing slash too: Elysia lists a prefix's root route as `/prefix/` and,
      // after merging, moves it over `/prefix` (the two are the same route to it).
      return { [r.path]: { GET: handler }, [`${r.path}/`]: { GET: handler } }
    }),
  )
}
