/**
 * An organisation's members and invitations: /api/orgs/:id/members, /api/orgs/:id/invitations,
 * and /api/invitations/:token/accept. The rules on roles (at least one OWNER, nobody grants a role
 * above their own, an ADMIN does not touch an OWNER) are kept by the store under the org's row
 * lock (src/store/orgs.ts); the policy answers who may see the org at all (404 otherwise).
 *
 * Invitations are e-mailed (the mail is queued with the invitation, in its transaction). With
 * e-mail off (SMTP_HOST unset) an invitation is still made, and its answer carries the token and
 * the accept link — only then, and only to the inviter — so a server without SMTP can invite.
 */
import { Elysia, t } from 'elysia'
import { access } from '../auth/route-access.ts'
import { NotFoundError } from '../core/errors.ts'
import { acceptInvitation, createInvitation, listInvitations, revokeInvitation, tokenHash } from '../store/org-invitations.ts'
import { sealKey } from '../store/notifications-mail.ts'
import * as orgs from '../store/orgs.ts'
import * as users from '../store/users.ts'
import { Envelope, errors, ok, requireAction, requireUser, type HttpDeps } from './context.ts'
import { actorOf, orgFor } from './orgs.ts'
import { invitationView, memberView, OrgModel as M, ORGS_TAG, orgView } from './views/org.ts'

const jsonBody = (schema: object) => ({ required: true, content: { 'application/json': { schema: schema as { type: 'object' } } } })

/** The accept link of an invitation, as its e-mail carries it (src/engines/mail/templates.ts). */
function acceptUrl(frontendUrl: string, token: string): string {
  const url = new URL('invitations/accept', frontendUrl.endsWith('/') ? frontendUrl : frontendUrl + '/')
  url.searchParams.set('token', token)
  return url.toString()
}

export function orgMemberRoutes(deps: HttpDeps) {
  const { config } = deps
  const mail = config.smtp.host !== undefined
  const key = mail ? sealKey(config.jwt.secret) : undefined
  return new Elysia()
    .get(
      '/api/orgs/:id/members',
      async ({ request, params, query }) => {
        const { org } = await orgFor(deps, request, params.id, 'read')
        const limit = query.limit ?? 20
        const page = await orgs.listMembers(deps.sql, org.id, { limit, cursor: query.cursor })
        return ok(page.items.map(memberView), { nextCursor: page.nextCursor, limit })
      },
      {
        params: M.idParams,
        query: t.Object({ ...Envelope.pageQuery }),
        response: { 200: Envelope.list(M.member), ...errors(400, 404) },
        detail: {
          summary: 'List an organisation\'s members',
          description: 'Its members with their e-mail, names and role, in the order they joined, a page at a time (`limit`, `cursor`). Every member may look; 404 to non-members.',
          tags: [ORGS_TAG],
          ...access.object('org', 'read'),
        },
      },
    )
    .patch(
      '/api/orgs/:id/members/:userId',
      async ({ request, params, body }) => {
        const { me, org } = await orgFor(deps, request, params.id, 'change')
        const { member } = await orgs.changeRole(deps.sql, org.id, actorOf(me), params.userId, body.role, deps.audit)
        // What they may watch follows their role: their subscriptions are checked again, on every node.
        await deps.auth.registry.invalidateUser(params.userId)
        return ok(memberView(member))
      },
      {
        params: M.memberParams,
        body: M.roleChange,
        response: { 200: Envelope.data(M.member), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Change a member\'s role',
          description:
            'Sets the member\'s `role` (ADMINs and OWNERs). Nobody grants a role above their own (403: an ADMIN cannot make an OWNER), an ADMIN cannot change an OWNER (403), ' +
            'and an organisation always keeps at least one OWNER: demoting the last one is a 409 (make someone else OWNER first). ' +
            '404 `Member not found` when the user is not in it; 404 to non-members.',
          tags: [ORGS_TAG],
          ...access.object('org', 'change'),
          requestBody: jsonBody(M.roleChange),
        },
      },
    )
    .delete(
      '/api/orgs/:id/members/:userId',
      async ({ request, params }) => {
        // Leaving is for any member; removing someone else is checked by the store (ADMIN or above).
        await requireAction(deps, request, 'org', 'change')
        const { me, org } = await orgFor(deps, request, params.id, 'read')
        const role = await orgs.removeMember(deps.sql, org.id, actorOf(me), params.userId, deps.audit)
        await deps.auth.registry.invalidateUser(params.userId)
        return ok({ orgId: org.id, userId: params.userId, role, removed: true as const })
      },
      {
        params: M.memberParams,
        response: { 200: Envelope.data(M.removed), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Remove a member, or leave',
          description:
            'Removes the member from the organisation. Every member may remove themself (leave); removing someone else needs the ADMIN role or above, ' +
            'and removing an OWNER needs an OWNER (403). The last OWNER cannot leave nor be removed (409). The objects they made in the organisation stay in it. ' +
            '404 `Member not found` when the user is not in it; 404 to non-members.',
          tags: [ORGS_TAG],
          ...access.object('org', 'change'),
        },
      },
    )
    .post(
      '/api/orgs/:id/invitations',
      async ({ request, params, body, set }) => {
        const { me, org } = await orgFor(deps, request, params.id, 'change')
        const inviter = await users.findById(deps.sql, me.userId)
        const invitedBy = inviter ? `${inviter.firstName} ${inviter.lastName}`.trim() || inviter.email : 'Someone'
        const made = await createInvitation(deps.sql, actorOf(me), {
          orgId: org.id,
          email: body.email,
          role: body.role ?? 'MEMBER',
          ttlHours: config.orgInvitations.ttlHours,
          mail: key ? { key, invitedBy } : null,
        }, deps.audit.pend)
        set.status = 201
        const view = { ...invitationView(made.invitation), emailSent: mail }
        return ok(mail ? view : { ...view, token: made.token, acceptUrl: acceptUrl(config.frontendUrl, made.token) })
      },
      {
        params: M.idParams,
        body: M.invite,
        response: { 201: Envelope.data(M.invited), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Invite someone into an organisation',
          description:
            'Invites `email` as `role` (default MEMBER; at most your own role: 403 above it) — ADMINs and OWNERs only. An e-mail with a single-use link ' +
            '(`FRONTEND_URL/invitations/accept?token=…`) is queued in the same transaction; the link works for `ORG_INVITATION_TTL_HOURS` (default 168, 7 days) and only the SHA-256 of its token is stored. ' +
            'A pending invitation of the same address is revoked (replaced). With e-mail off (SMTP_HOST unset) the invitation is made all the same, `emailSent` is false, ' +
            'and this answer — only this one — carries the `token` and the `acceptUrl` to pass on yourself. 409 when the address belongs to a member already; 404 to non-members.',
          tags: [ORGS_TAG],
          ...access.object('org', 'change'),
          requestBody: jsonBody(M.invite),
        },
      },
    )
    .get(
      '/api/orgs/:id/invitations',
      async ({ request, params, query }) => {
        const { me, org } = await orgFor(deps, request, params.id, 'change')
        const limit = query.limit ?? 20
        const page = await listInvitations(deps.sql, org.id, { limit, cursor: query.cursor, state: query.state })
        return ok(page.items.map(invitationView), { nextCursor: page.nextCursor, limit })
      },
      {
        params: M.idParams,
        query: M.invitationQuery,
        response: { 200: Envelope.list(M.invitation), ...errors(400, 403, 404) },
        detail: {
          summary: 'List an organisation\'s invitations',
          description:
            'Its invitations, oldest first, a page at a time, each with its `state` (`pending`, `accepted`, `revoked`, `expired`); `state` narrows the list. ' +
            'ADMINs and OWNERs only (403 for MEMBERs and VIEWERs); 404 to non-members. Tokens are never shown.',
          tags: [ORGS_TAG],
          ...access.object('org', 'change'),
        },
      },
    )
    .delete(
      '/api/orgs/:id/invitations/:invitationId',
      async ({ request, params }) => {
        const { org } = await orgFor(deps, request, params.id, 'change')
        return ok(invitationView(await deps.audit.change(deps.sql, (tx) => revokeInvitation(tx, org.id, params.invitationId))))
      },
      {
        params: M.invitationParams,
        response: { 200: Envelope.data(M.invitation), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Revoke an invitation',
          description: 'Its link stops working at once (ADMINs and OWNERs). 409 when it was accepted or revoked already; 404 `Invitation not found` when the organisation has no such invitation.',
          tags: [ORGS_TAG],
          ...access.object('org', 'change'),
        },
      },
    )
    .post(
      '/api/invitations/:token/accept',
      async ({ request, params }) => {
        const me = await requireUser(deps, request)
        const user = await users.findById(deps.sql, me.userId)
        if (!user) throw new NotFoundError('Invitation')
        const r = await acceptInvitation(deps.sql, tokenHash(params.token), { id: user.id, email: user.email }, deps.audit)
        const org = await orgs.getOrg(deps.sql, r.orgId, me.userId)
        return ok({ orgId: r.orgId, invitationId: r.invitationId, role: r.role, previousRole: r.previous, org: orgView(org!) })
      },
      {
        params: M.tokenParams,
        response: { 200: Envelope.data(M.accepted), ...errors(400, 403, 404, 409) },
        detail: {
          summary: 'Accept an invitation',
          description:
            'Joins the organisation with the invitation\'s role — as the signed-in user whose e-mail is the one invited (case-insensitive; 403 for anyone else). ' +
            'The token works once: a second accept, a revoked or an expired invitation is a 409; an unknown token a 404. ' +
            'Someone who is a member already keeps the higher of their role and the invitation\'s (accepting never demotes).',
          tags: [ORGS_TAG],
          ...access.signedIn,
        },
      },
    )
}
