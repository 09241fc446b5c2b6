/**
 * /api/orgs: organisations — create (the creator is its OWNER), list mine, read, rename, delete —
 * and an organisation's audit log. Members and invitations: ./org-members.ts. Who may do what is
 * the policy's (src/auth/policy.ts: members read, ADMINs change, OWNERs delete, outsiders get
 * 404); the rules on roles are kept by the store under the org's row lock (src/store/orgs.ts).
 */
import { Elysia, t } from 'elysia'
import { access } from '../auth/route-access.ts'
import type { Action } from '../auth/policy.ts'
import * as orgs from '../store/orgs.ts'
import { answerAudit, auditResponses, AuditModel, filterOf } from './audit.ts'
import { authorize, Envelope, errors, ok, requireAction, requireUser, type HttpDeps } from './context.ts'
import { OrgModel as M, ORGS_TAG, orgView } from './views/org.ts'

const jsonBody = (schema: object) => ({ required: true, content: { 'application/json': { schema: schema as { type: 'object' } } } })

/**
 * The caller and org `id`, with the caller's role in it, if the policy lets them do `action` to
 * it: 404 `Organisation not found` to anyone outside it (platform admins excepted), 403 to a
 * member whose role is too low. For this module and ./org-members.ts.
 */
export async function orgFor(deps: HttpDeps, request: Request, id: string, action: Action) {
  const me = await requireUser(deps, request)
  const { obj } = await authorize(deps, request, {
    resource: 'org',
    action,
    label: 'Organisation',
    load: () => orgs.getOrg(deps.sql, id, me.userId),
    owner: (o) => ({ ownerId: null, orgId: o.id }),
  })
  return { me, org: obj }
}

/** The store's actor: who acts, and whether they are a platform admin (an OWNER everywhere). */
export const actorOf = (me: { userId: string; role: string }): orgs.Actor => ({ userId: me.userId, platformAdmin: me.role === 'ADMIN' })

const orgAuditQuery = t.Omit(AuditModel.listQuery, ['orgId'])

export function orgRoutes(deps: HttpDeps) {
  return new Elysia({ prefix: '/api/orgs' })
    .post(
      '/',
      async ({ request, body, set }) => {
        const me = await requireAction(deps, request, 'org', 'change')
        const org = await orgs.createOrg(deps.sql, { name: body.name, slug: body.slug, userId: me.userId }, deps.audit.pend)
        set.status = 201
        return ok(orgView(org))
      },
      {
        body: M.create,
        response: { 201: Envelope.data(M.org), ...errors(400, 403, 409) },
        detail: {
          summary: 'Create an organisation',
          description:
            'Creates an organisation from `name` and `slug` (unique, URL-safe) and makes you its OWNER, in one transaction. ' +
            'Invite people with `POST /api/orgs/:id/invitations`; create DataKits, models, pipelines and CodeSheets in it with their `orgId`. ' +
            '409 when the slug is taken; 403 for a platform VIEWER (read-only).',
          tags: [ORGS_TAG],
          ...access.collection('org', 'change'),
          requestBody: jsonBody(M.create),
        },
      },
    )
    .get(
      '/',
      async ({ request, query }) => {
        const me = await requireAction(deps, request, 'org', 'read')
        const limit = query.limit ?? 20
        const page = await orgs.listMine(deps.sql, me.userId, { limit, cursor: query.cursor })
        return ok(page.items.map(orgView), { nextCursor: page.nextCursor, limit })
      },
      {
        query: t.Object({ ...Envelope.pageQuery }),
        response: { 200: Envelope.list(M.org), ...errors(400) },
        detail: {
          summary: 'List my organisations',
          description: 'The organisations you are a member of, each with your `role` there, oldest first, a page at a time (`limit`, `cursor`). 400 for a bad cursor.',
          tags: [ORGS_TAG],
          ...access.collection('org', 'read'),
        },
      },
    )
    .get(
      '/:id',
      async ({ request, params }) => ok(orgView((await orgFor(deps, request, params.id, 'read')).org)),
      {
        params: M.idParams,
        response: { 200: Envelope.data(M.org), ...errors(400, 404) },
        detail: {
          summary: 'Get an organisation',
          description: 'The organisation, with your `role` in it. 404 when it does not exist or you are not a member.',
          tags: [ORGS_TAG],
          ...access.object('org', 'read'),
        },
      },
    )
    .patch(
      '/:id',
      async ({ request, params, body }) => {
        const { org } = await orgFor(deps, request, params.id, 'change')
        const row = await deps.audit.change(deps.sql, (tx) => orgs.updateOrg(tx, org.id, body))
        return ok(orgView({ ...(row ?? org), role: org.role }))
      },
      {
        params: M.idParams,
        body: M.patch,
        response: { 200: Envelope.data(M.org), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Rename an organisation',
          description: 'Changes its `name`, its `slug` or both (ADMINs and OWNERs). 409 when the slug is taken; 403 for MEMBERs and VIEWERs; 404 to non-members.',
          tags: [ORGS_TAG],
          ...access.object('org', 'change'),
          requestBody: jsonBody(M.patch),
        },
      },
    )
    .delete(
      '/:id',
      async ({ request, params }) => {
        const { org } = await orgFor(deps, request, params.id, 'delete')
        await orgs.deleteOrg(deps.sql, org.id, deps.audit.pend)
        return ok({ id: org.id, deleted: true as const })
      },
      {
        params: M.idParams,
        response: { 200: Envelope.data(M.deleted), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Delete an organisation',
          description:
            'Deletes the organisation with its memberships, invitations and quotas (OWNERs only: 403 for the rest). ' +
            'Nothing it holds is deleted with it: 409, naming what is left, while any DataKit, model, pipeline, CodeSheet, workstation or VM is still in it — ' +
            'delete those or move them out first. Its audit events stay in the platform\'s audit log.',
          tags: [ORGS_TAG],
          ...access.object('org', 'delete'),
        },
      },
    )
    .get(
      '/:id/audit',
      async ({ request, params, query, set }) => {
        const { me, org } = await orgFor(deps, request, params.id, 'change')
        return answerAudit(deps, { ...filterOf(query), orgId: org.id }, query, set.headers as Record<string, string>)
      },
      {
        params: M.idParams,
        query: orgAuditQuery,
        detail: {
          summary: 'List an organisation\'s audit events',
          description:
            'The audit events of this organisation (its OWNERs and ADMINs only: 403 for MEMBERs and VIEWERs, 404 to non-members): ' +
            'changes to it, its members (`org.member_added` — an invitation accepted —, `org.member_role_changed`, `org.member_removed`) and its invitations ' +
            '(`org.invitation_created`, `org.invitation_revoked`), with who, the outcome and status, the client IP, user agent and request id. ' +
            'The same filters, pages and export as `GET /api/admin/audit` (without `orgId`): `actorId`, `action` (a prefix), `targetType`, `targetId`, `outcome`, `from`/`to`; ' +
            'newest first a page at a time, or every matching event streamed oldest first with `format=ndjson`. 400 for a bad filter or cursor.',
          tags: [ORGS_TAG],
          ...access.object('org', 'change'),
          responses: auditResponses(400, 401, 403, 404),
        },
      },
    )
}
