/**
 * What the HTTP edge is given, and the small helpers every route module shares.
 */
import { t, type TSchema } from 'elysia'
import type { ResolvedConfig } from '../config.ts'
import { ForbiddenError, NotFoundError, UnauthorizedError } from '../core/errors.ts'
import type { Logger } from '../core/logger.ts'
import type { Metrics } from '../core/metrics.ts'
import type { AuditLog } from '../store/audit.ts'
import type { Sql } from '../store/db.ts'
import type { RateLimitStore } from '../store/rate-limit.ts'
import type { ActorSystem } from '../actors/runtime/index.ts'
import { decide, orgRoleAtLeast, roleMay, withOrgRole, type Action, type OrgRole, type Ownership, type Resource } from '../auth/policy.ts'
import * as orgs from '../store/orgs.ts'
import { bearerToken, type Principal } from '../auth/principal.ts'
import type { AuthService } from '../auth/service.ts'
import type { ResponseCache } from './plugins/cache.ts'
import type { Frame } from './plugins/request.ts'

/**
 * What every route module of one app may use. Built once by the composition root
 * (src/server.ts); a module needing more (an engine, the serving cache, tickets) takes it as
 * an argument of its own.
 */
export interface HttpDeps {
  config: ResolvedConfig
  sql: Sql
  logger: Logger
  metrics: Metrics
  auth: AuthService
  rateLimits: RateLimitStore
  cache: ResponseCache
  /** Writes: every workstation, VM, run, chat session… is an actor (see docs/actors.md). */
  actors: ActorSystem
  /** This app's request frame: ids, the client IP under its own TRUST_PROXY, logs, metrics. */
  frame: Frame
  /** The audit log, for changes recorded in their own transaction (org memberships). */
  audit: AuditLog
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
  // The envelope's example wraps the payload's (the OpenAPI document shows it per response).
  const example = (schema: TSchema, wrap: (e: unknown) => unknown) => (Array.isArray(schema.examples) && schema.examples.length > 0 ? { examples: [wrap(schema.examples[0])] } : {})
  export const data = <S extends TSchema>(schema: S) => t.Object({ success: t.Literal(true), data: schema }, example(schema, (e) => ({ success: true, data: e })))
  export const list = <S extends TSchema>(schema: S) =>
    t.Object(
      { success: t.Literal(true), data: t.Array(schema), meta: t.Object({ nextCursor: t.Union([t.String(), t.Null()]), limit: t.Integer() }) },
      example(schema, (e) => ({ success: true, data: [e], meta: { nextCursor: null, limit: 20 } })),
    )
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

// The authenticated caller of a request, resolved once and remembered for its lifetime.
// A value (not a promise) once known, so hot paths can read it without awaiting.
const principals = new WeakMap<Request, Principal | null | Promise<Principal | null>>()

/** The caller: a value when it is known without I/O (the usual case), else a promise. */
export function principalOf(deps: Pick<HttpDeps, 'auth'>, request: Request): Principal | null | Promise<Principal | null> {
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
export function callerOf(deps: Pick<HttpDeps, 'auth'>, request: Request): Principal | null | Promise<Principal | null> {
  const token = bearerToken(request)
  return token ? deps.auth.authenticate(token) : null
}

/** The caller, or a 401. */
export async function requireUser(deps: Pick<HttpDeps, 'auth'>, request: Request): Promise<Principal> {
  const p = await principalOf(deps, request)
  if (!p) throw new UnauthorizedError(bearerToken(request) ? 'Invalid or expired token' : 'Authentication required')
  return p
}

const READ_ONLY = 'A VIEWER is read-only: this needs the USER or ADMIN role'

/**
 * The caller, if the access policy (src/auth/policy.ts) lets their role do `action` to a
 * `resource` at all: 401 without a caller, 403 for a VIEWER's change — before any object is
 * looked up. For collection routes (create, list) and as the first step of `authorize`.
 */
export async function requireAction(deps: Pick<HttpDeps, 'auth'>, request: Request, resource: Resource, action: Action): Promise<Principal> {
  const me = await requireUser(deps, request)
  if (!roleMay(me.role, resource, action)) throw new ForbiddenError(resource === 'platform' ? 'This action requires the ADMIN role' : READ_ONLY)
  return me
}

/**
 * The caller and the object, if the access policy lets the caller do `action` to it: 401
 * without a caller, 403 for a role that may never do it (before the object is looked up),
 * and 404 `<label> not found` when it does not exist or is not the caller's to see.
 */
export async function authorize<T>(
  deps: Pick<HttpDeps, 'auth' | 'sql'>,
  request: Request,
  target: {
    resource: Resource
    action: Action
    label: string
    load: () => Promise<T | undefined>
    /**
     * Whose it is (default: its `ownerId`, else its `userId`, and its `orgId` when it has one).
     * A string is a personal object's owner.
     */
    owner?: (obj: T) => string | Ownership
  },
): Promise<{ me: Principal; obj: T }> {
  const me = await requireAction(deps, request, target.resource, target.action)
  const obj = await target.load()
  if (!obj) throw new NotFoundError(target.label)
  const owner = await ownershipFor(deps, me, target.resource, (target.owner ?? ownerOf)(obj))
  const decision = decide(me, target.action, target.resource, owner)
  if (decision === 'forbidden') throw new ForbiddenError(`Your role in this organisation does not allow this (${owner.orgRole ?? 'none'})`)
  if (decision !== 'allow') throw new NotFoundError(target.label)
  return { me, obj }
}

/**
 * An object's ownership with the caller's role in its org filled in, when it has an org and
 * the caller is not a platform admin (who needs no role). For routes and sockets that ask the
 * policy themselves (`decide`).
 */
export function ownershipFor(deps: Pick<HttpDeps, 'sql'>, me: Principal, resource: Resource, owner: string | Ownership): Promise<Ownership> {
  return withOrgRole(me, resource, owner, (orgId, userId) => orgs.roleOf(deps.sql, orgId, userId))
}

/**
 * The caller's role in org `orgId`, at least `min`: for creating an object in an org (MEMBER),
 * listing an org's objects (VIEWER), moving objects into it (ADMIN). 404 `Organisation not
 * found` to a non-member, 403 to a member below `min`. Platform admins count as OWNER.
 */
export async function requireOrgRole(deps: Pick<HttpDeps, 'sql'>, me: Principal, orgId: string, min: OrgRole): Promise<OrgRole> {
  const role = me.role !== 'ADMIN' ? await orgs.roleOf(deps.sql, orgId, me.userId) : (await orgs.exists(deps.sql, orgId)) ? 'OWNER' : null
  if (role === null) throw new NotFoundError('Organisation')
  if (!orgRoleAtLeast(role, min)) throw new ForbiddenError(`This needs the ${min} role or above in the organisation (yours: ${role})`)
  return role
}

function ownerOf(obj: unknown): Ownership {
  const o = obj as { ownerId?: string; userId?: string; orgId?: string | null }
  const owner = o.ownerId ?? o.userId
  if (owner === undefined) throw new Error('authorize: the object names no owner (give `owner`)')
  return { ownerId: owner, orgId: o.orgId ?? null }
}
