/**
 * The audit trail of the HTTP edge: every state-changing request (POST, PUT, PATCH, DELETE of
 * a route that changes something) leaves one audit event — its action, actor, target,
 * outcome and status, client IP, user agent and request id — and never its body.
 *
 * Which action a route is comes from one table, generated from the app's route table with
 * the rule below and a few overrides (`auditedRoutes`); test/http/audit-actions.test.ts holds
 * every state-changing route to having one. A route whose access declaration says it only
 * reads (`x-access` action `read`: predictions, queries, query exports) changes nothing and is
 * not recorded.
 *
 * The frame (./request.ts) tells this observer when such a request starts — it enters the
 * request's audit scope, so the auth layer's own events (a login, a role change) are filled
 * from it and mark it covered — and when it ends, with the status it was answered: unless an
 * event already stands for it, the request's outcome is recorded then, after the fact.
 *
 * A change an actor's turn commits for the request is recorded with it, in the turn's
 * transaction: the scope tells the audit log what the request is recorded as if it succeeds
 * (`expected`: its route's action, target and org, matched from the path while the handler
 * runs), the messages it sends carry that, and the turn writes it as a pending event; the
 * outcome recorded once it is answered joins the chain under the pending event's key, and the
 * audit log's sweep then drops it (src/store/audit.ts).
 */
import type { RouteAccess } from '../../auth/route-access.ts'
import { isUuid } from '../../core/ids.ts'
import type { AuditOutcome } from '../../store/audit-chain.ts'
import type { AuditLog, AuditScope } from '../../store/audit.ts'
import { principalOf, type HttpDeps } from '../context.ts'
import type { FrameObserver } from './request.ts'

/** What a state-changing route is recorded as. */
export interface AuditedRoute {
  action: string
  targetType: string | null
  /**
   * Where the target's id is: a path segment (its index after `/`: 2 in `/api/models/:id`), a
   * query parameter, the caller themselves, or the object the request created.
   */
  target: { segment: number } | { query: string } | 'self' | 'created'
  /**
   * Where the organisation it belongs to is (the event's `orgId`): a path segment, or a field of
   * the answer's `data` (an org just created, an invitation accepted). Absent: none.
   */
  org?: { segment: number } | { answer: string }
}

interface RouteLike {
  method: string
  path: string
  hooks?: { detail?: Record<string, unknown> }
}

const CHANGES = new Set(['POST', 'PUT', 'PATCH', 'DELETE'])
const VERB: Record<string, string> = { POST: 'create', PUT: 'set', PATCH: 'update', DELETE: 'delete' }
/** Collections under a longer prefix, and nouns that are not a plain plural. */
const PREFIXES: Record<string, string> = { 'ai/sessions': 'chat', 'admin/quotas': 'quota' }
const SINGULAR: Record<string, string> = { auth: 'auth', ws: 'ws', aliases: 'alias' }
/** Where the rule's name would mislead. */
const OVERRIDES: Record<string, Partial<AuditedRoute>> = {
  // Accounts are deactivated, never deleted.
  'DELETE /api/users/:id': { action: 'user.deactivate' },
  'PUT /api/admin/quotas/:userId': { action: 'quota.set', targetType: 'user' },
  'DELETE /api/admin/quotas/:userId': { action: 'quota.reset', targetType: 'user' },
  'PUT /api/datakits/storage': { action: 'datakit.storage_quota_set', targetType: 'user', target: { query: 'userId' } },
  'POST /api/ws/ticket': { action: 'auth.ws_ticket', targetType: 'user', target: 'self' },
  // Organisations: who joined, left, or holds which role; invitations (never their token).
  'PATCH /api/orgs/:id/members/:userId': { action: 'org.member_role_changed', targetType: 'user', target: { segment: 4 } },
  'DELETE /api/orgs/:id/members/:userId': { action: 'org.member_removed', targetType: 'user', target: { segment: 4 } },
  'POST /api/orgs/:id/invitations': { action: 'org.invitation_created', targetType: 'invitation', target: 'created' },
  'DELETE /api/orgs/:id/invitations/:invitationId': { action: 'org.invitation_revoked', targetType: 'invitation', target: { segment: 4 } },
  // The path holds the invitation's token: the target is the new member (the caller), the org the answer's.
  'POST /api/invitations/:token/accept': { action: 'org.member_added', targetType: 'user', target: 'self', org: { answer: 'orgId' } },
}

const singular = (noun: string) => SINGULAR[noun] ?? noun.replace(/(?<=s)es$|s$/, '').replaceAll('-', '_')

/** A route's path without the trailing slash Elysia keeps on a prefix's root route. */
const normal = (path: string) => (path.length > 1 && path.endsWith('/') ? path.slice(0, -1) : path)

/**
 * The rule: `/api/<collection>/:id/<more>` names the type (the collection, singular) and the
 * verb. A collection or an item: `create`, `set`, `update`, `delete` by method
 * (`workstation.create`, `model.update`); a word after it: that word for a POST
 * (`workstation.start`, `model.deploy`, `auth.login`) or a sub-collection's create when it is
 * plural (`pipeline.run_create`), else the word and the method's verb (`model.alias_set`,
 * `pipeline.schedule_update`). The target is the first path parameter's object; a create's is
 * the object it made (the answer's `data.id`); for `/api/auth/*` and `/api/users/me/*`, the
 * caller's own account.
 */
export function auditedRoute(method: string, path: string, declared: RouteAccess | undefined): AuditedRoute | undefined {
  if (!CHANGES.has(method)) return undefined
  if (typeof declared === 'object' && declared.action === 'read') return undefined
  const p = normal(path)
  const segs = p.replace(/^\/api\//, '').split('/')
  const prefix = Object.keys(PREFIXES).find((k) => p.startsWith(`/api/${k}`))
  const type = prefix ? PREFIXES[prefix]! : singular(segs[0]!)
  const rest = segs.slice(prefix ? prefix.split('/').length : 1)
  // `/api/users/me/…`: the caller's own.
  const self = type === 'auth' || rest[0] === 'me'
  const words: string[] = []
  let param: number | undefined
  rest.forEach((s, i) => {
    if (s.startsWith(':')) param ??= segs.length - rest.length + i + 1 // +1: the leading "api"
    else if (!(i === 0 && s === 'me')) words.push(s.replaceAll('-', '_'))
  })
  const last = rest[rest.length - 1]
  let verb: string
  if (words.length === 0 || last?.startsWith(':')) verb = [...words.map(singular), VERB[method]].join('_')
  else if (method === 'POST' && !(rest.length >= 2 && rest[rest.length - 2]!.startsWith(':') && /s$/.test(last!))) verb = [...words.slice(0, -1).map(singular), last!.replaceAll('-', '_')].join('_')
  else if (method === 'POST') verb = `${singular(words[words.length - 1]!)}_create`
  else verb = [...words, VERB[method]].join('_')
  const rule: AuditedRoute = {
    action: `${type}.${verb}`,
    targetType: self ? 'user' : param !== undefined && /:userId$/.test(segs[param - 1] ?? '') ? 'user' : type,
    target: self ? 'self' : param !== undefined ? { segment: param } : 'created',
  }
  // An organisation's own routes belong to it: `/api/orgs/:id/…`, or the org a create made.
  if (type === 'org') rule.org = param === 2 ? { segment: 2 } : { answer: 'id' }
  return { ...rule, ...OVERRIDES[`${method} ${p}`] }
}

/** The audited routes of an app's route table, by `METHOD path`. */
export function auditedRoutes(routes: readonly RouteLike[]): Map<string, AuditedRoute> {
  const table = new Map<string, AuditedRoute>()
  for (const r of routes) {
    const a = auditedRoute(r.method, r.path, r.hooks?.detail?.['x-access'] as RouteAccess | undefined)
    if (a) table.set(`${r.method} ${normal(r.path)}`, a)
  }
  return table
}

/** How a status reads in the audit log: refused (401, 403, 404: not yours or not there, 429) or failed. */
export function outcomeOf(status: number): AuditOutcome {
  if (status < 400) return 'success'
  return status === 401 || status === 403 || status === 404 || status === 429 ? 'denied' : 'failed'
}

/** The frame's observer (./request.ts) that records; `learn` the app's routes once it is assembled. */
export interface RequestAudit extends FrameObserver {
  learn(routes: readonly RouteLike[]): void
}

export function requestAudit(deps: Pick<HttpDeps, 'auth'> & { audit: AuditLog }): RequestAudit {
  const { audit } = deps
  let table = new Map<string, AuditedRoute>()
  let match: RouteMatcher = () => undefined
  return {
    learn(routes) {
      table = auditedRoutes(routes)
      match = routeMatcher(table)
    },
    started(request, requestId, ip) {
      if (!audit.enabled) return undefined
      const actor = () => {
        const p = principalOf(deps, request)
        return p instanceof Promise ? p.then((v) => v?.userId ?? null) : (p?.userId ?? null)
      }
      const scope: AuditScope = {
        requestId,
        ip,
        userAgent: request.headers.get('user-agent'),
        actor,
        expected: (id) => {
          const r = match(request.method, request.url)
          if (!r) return undefined
          let targetId: string | null
          if (r.target === 'created') targetId = id // the object a create makes is the actor it asks
          else if (r.target !== 'self') targetId = targetOf(r.target, request, undefined)
          else {
            const a = actor()
            targetId = a instanceof Promise ? (scope.identified ?? null) : (a ?? scope.identified ?? null)
          }
          return { action: r.action, outcome: 'success', targetType: r.targetType, targetId, ...(r.org ? { orgId: orgOf(r.org, request, undefined) } : {}) }
        },
      }
      audit.enter(scope)
      return scope
    },
    finished(request, scope, route, status, value) {
      scope.finished = true
      if (scope.covered) return void audit.settle(scope)
      const r = table.get(`${request.method} ${normal(route)}`)
      if (!r) return void audit.settle(scope)
      const event = { action: r.action, outcome: outcomeOf(status), status, targetType: r.targetType, ...(r.org ? { orgId: orgOf(r.org, request, value) } : {}) }
      if (r.target !== 'self') return void audit.record({ ...event, targetId: targetOf(r.target, request, value) }, scope)
      // The caller's own account (their session, their password): the actor is the target.
      void Promise.resolve(scope.actor())
        .catch(() => null)
        .then((actorId) => audit.record({ ...event, targetId: actorId ?? scope.identified ?? null }, scope))
    },
  }
}

type RouteMatcher = (method: string, url: string) => AuditedRoute | undefined

/**
 * The audited route a request's method and URL are, while its handler runs (the route's
 * pattern is only handed over at the end): patterns as segments, `:name` matching any one;
 * where two match, the one with more literal segments wins (`/api/datakits/storage` over
 * `/api/datakits/:id`), as in the router.
 */
function routeMatcher(table: Map<string, AuditedRoute>): RouteMatcher {
  const byMethod = new Map<string, { parts: string[]; literal: number; route: AuditedRoute }[]>()
  for (const [key, route] of table) {
    const [method, path] = [key.slice(0, key.indexOf(' ')), key.slice(key.indexOf(' ') + 1)]
    const parts = path.split('/')
    const list = byMethod.get(method) ?? []
    list.push({ parts, literal: parts.filter((p) => !p.startsWith(':')).length, route })
    byMethod.set(method, list)
  }
  for (const list of byMethod.values()) list.sort((a, b) => b.literal - a.literal)
  return (method, url) => {
    const list = byMethod.get(method)
    if (!list) return undefined
    const start = url.indexOf('/', url.indexOf('//') + 2)
    const q = url.indexOf('?', start)
    let path = url.slice(start, q === -1 ? undefined : q)
    if (path.length > 1 && path.endsWith('/')) path = path.slice(0, -1)
    const segs = path.split('/')
    for (const c of list) {
      if (c.parts.length !== segs.length) continue
      if (c.parts.every((p, i) => p.startsWith(':') ? segs[i] !== '' : p === segs[i])) return c.route
    }
    return undefined
  }
}

/** The event's organisation: from the path, or the answer (a failed request's answer names none). */
function orgOf(o: NonNullable<AuditedRoute['org']>, request: Request, value: unknown): string | null {
  if ('segment' in o) {
    const id = targetOf(o, request, value)
    return id !== null && isUuid(id) ? id : null
  }
  const id = (value as { data?: Record<string, unknown> } | null | undefined)?.data?.[o.answer]
  return typeof id === 'string' && isUuid(id) ? id : null
}

function targetOf(t: Exclude<AuditedRoute['target'], 'self'>, request: Request, value: unknown): string | null {
  if (t === 'created') {
    const id = (value as { data?: { id?: unknown } } | null | undefined)?.data?.id
    return typeof id === 'string' ? id : null
  }
  const url = request.url
  if ('query' in t) return new URL(url).searchParams.get(t.query)
  const start = url.indexOf('/', url.indexOf('//') + 2)
  const q = url.indexOf('?', start)
  const seg = url.slice(start, q === -1 ? undefined : q).split('/')[t.segment + 1] // +1: the empty segment before the first "/"
  if (seg === undefined || !seg.includes('%')) return seg ?? null
  try {
    return decodeURIComponent(seg)
  } catch {
    return seg
  }
}
