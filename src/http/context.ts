/**
 * What the HTTP edge is given, and the small helpers every route module shares.
 */
import { t, type TSchema } from 'elysia'
import type { Config } from '../config.ts'
import { ForbiddenError, UnauthorizedError } from '../core/errors.ts'
import type { Logger } from '../core/logger.ts'
import type { Metrics } from '../core/metrics.ts'
import type { Sql } from '../store/db.ts'
import type { RateLimitStore } from '../store/rate-limit.ts'
import type { Redis } from '../store/redis.ts'
import type { Role } from '../store/users.ts'
import type { ActorSystem } from '../actors/runtime/index.ts'
import type { Hub } from '../ws/hub.ts'
import type { TicketStore } from '../auth/tickets.ts'
import type { AuthService } from '../auth/service.ts'
import type { Principal } from '../auth/sessions.ts'
import type { ResponseCache } from './plugins/cache.ts'

export type ResolvedConfig = Readonly<Config> & { jwt: Config['jwt'] & { secret: string } }

export interface HealthProbe {
  name: string
  /** undefined: not configured ("disabled"). */
  check: (() => Promise<void>) | undefined
}

export interface AppDeps {
  config: ResolvedConfig
  sql: Sql
  redis?: Redis
  logger: Logger
  metrics: Metrics
  auth: AuthService
  rateLimits: RateLimitStore
  cache: ResponseCache
  probes: HealthProbe[]
  /** Writes: every workstation, VM, run, chat session… is an actor (see docs/actors.md). */
  actors: ActorSystem
  /** Live events to WebSocket clients. */
  hub: Hub
  /** Single-use WebSocket upgrade tickets (POST /api/ws/ticket), for upgrades outside /ws (terminals). */
  tickets?: TicketStore
}

/** `{ success: true, data }` (and `meta` for lists). */
export function ok<T>(data: T): { success: true; data: T }
export function ok<T, M>(data: T, meta: M): { success: true; data: T; meta: M }
export function ok(data: unknown, meta?: unknown) {
  return meta === undefined ? { success: true, data } : { success: true, data, meta }
}

export namespace Envelope {
  export const error = t.Object(
    {
      success: t.Literal(false),
      error: t.String(),
      details: t.Array(t.Object({ field: t.String(), message: t.String() })),
      requestId: t.Optional(t.String()),
    },
    { title: 'Error' },
  )
  export const data = <S extends TSchema>(schema: S) => t.Object({ success: t.Literal(true), data: schema })
  export const list = <S extends TSchema>(schema: S) =>
    t.Object({ success: t.Literal(true), data: t.Array(schema), meta: t.Object({ nextCursor: t.Union([t.String(), t.Null()]), limit: t.Integer() }) })
  export const pageQuery = {
    limit: t.Optional(t.Integer({ minimum: 1, maximum: 100, default: 20, description: 'Page size (1–100)' })),
    cursor: t.Optional(t.String({ maxLength: 512, description: 'The `meta.nextCursor` of the previous page' })),
  }
}

/** The documented error responses, for the OpenAPI document. */
export const errors = (...statuses: number[]) => Object.fromEntries(statuses.map((s) => [s, Envelope.error]))

/**
 * OpenAPI responses for routes that answer pre-encoded bodies (the response cache): the same
 * schemas, documented through `detail.responses` instead of a runtime response validator.
 */
export function documented(responses: Record<number, TSchema>) {
  return Object.fromEntries(
    Object.entries(responses).map(([status, schema]) => [status, { description: Number(status) < 400 ? 'OK' : 'Error', content: { 'application/json': { schema } } }]),
  )
}

export const bearer = [{ bearerAuth: [] as string[] }]

// The authenticated caller of a request, resolved once and remembered for its lifetime.
// A value (not a promise) once known, so hot paths can read it without awaiting.
const principals = new WeakMap<Request, Principal | null | Promise<Principal | null>>()

export function bearerToken(request: Request): string | undefined {
  const h = request.headers.get('authorization')
  if (!h || h.length < 8 || h.slice(0, 7).toLowerCase() !== 'bearer ') return undefined
  return h.slice(7).trim()
}

/** The caller: a value when it is known without I/O (the usual case), else a promise. */
export function principalOf(deps: Pick<AppDeps, 'auth'>, request: Request): Principal | null | Promise<Principal | null> {
  if (principals.has(request)) return principals.get(request)!
  const p = callerOf(deps, request)
  if (p instanceof Promise) {
    principals.set(request, p)
    p.then((v) => principals.set(request, v), () => {})
  } else principals.set(request, p)
  return p
}

/**
 * The caller as `principalOf` finds it, without remembering it on the request: for a route
 * served ahead of the pipeline, which needs it once (a WeakMap entry per request costs a
 * hot route measurably under load). A promise means it is not known without I/O.
 */
export function callerOf(deps: Pick<AppDeps, 'auth'>, request: Request): Principal | null | Promise<Principal | null> {
  const token = bearerToken(request)
  return token ? deps.auth.authenticate(token) : null
}

/** The caller, or a 401. */
export async function requireUser(deps: Pick<AppDeps, 'auth'>, request: Request): Promise<Principal> {
  const p = await principalOf(deps, request)
  if (!p) throw new UnauthorizedError(bearerToken(request) ? 'Invalid or expired token' : 'Authentication required')
  return p
}

/** The caller if their role is one of `roles`, else 401/403. */
export async function requireRole(deps: Pick<AppDeps, 'auth'>, request: Request, ...roles: Role[]): Promise<Principal> {
  const p = await requireUser(deps, request)
  if (!roles.includes(p.role)) throw new ForbiddenError(`This action requires the ${roles.join(' or ')} role`)
  return p
}
