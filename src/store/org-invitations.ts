/**
 * Invitations into an organisation (table org_invitations, written only here): a single-use
 * link token for one e-mail address, of which only the SHA-256 is kept. A new invitation for an
 * address that has one pending replaces it (the old is revoked in the same transaction); the
 * e-mail carrying the link is queued in that transaction too (./notifications-mail.ts), so an
 * invitation and its mail commit together.
 */
import type { Pend } from './audit-pending.ts'
import { createHash, randomBytes } from 'node:crypto'
import { ConflictError, ForbiddenError, NotFoundError } from '../core/errors.ts'
import { timed, type Db, type Sql } from './db.ts'
import { queueInvitationMail } from './notifications-mail.ts'
import { addMember, lockOrg, mayGrant, type Actor, type MembershipAudit, type OrgRole } from './orgs.ts'
import { decodeCursor, toPage, type Page } from './pagination.ts'

/** Where an invitation stands: waiting, used, withdrawn, or past its time. */
export type InvitationState = 'pending' | 'accepted' | 'revoked' | 'expired'

export interface InvitationRow {
  id: string
  orgId: string
  email: string
  role: OrgRole
  state: InvitationState
  invitedBy: string | null
  invitedByEmail: string | null
  expiresAt: Date
  acceptedAt: Date | null
  acceptedBy: string | null
  revokedAt: Date | null
  createdAt: Date
}

const INVITATION = (sql: Db) => sql`
  i.id, i.org_id as "orgId", i.email, i.role,
  case when i.accepted_at is not null then 'accepted' when i.revoked_at is not null then 'revoked' when i.expires_at <= now() then 'expired' else 'pending' end as state,
  i.invited_by as "invitedBy", (select email from users where id = i.invited_by) as "invitedByEmail",
  i.expires_at as "expiresAt", i.accepted_at as "acceptedAt", i.accepted_by as "acceptedBy", i.revoked_at as "revokedAt", i.created_at as "createdAt"`

/** A new token (32 random bytes, base64url) — handed out once, never stored. */
function newToken(): string {
  return randomBytes(32).toString('base64url')
}

/** What is stored of a token. */
export function tokenHash(token: string): Buffer {
  return createHash('sha256').update(token).digest()
}

/** The roles that invite. */
const RANK_ADMIN: readonly OrgRole[] = ['OWNER', 'ADMIN']

export interface NewInvitation {
  orgId: string
  email: string
  role: OrgRole
  ttlHours: number
  /** The e-mail to queue (null: e-mail is off — SMTP_HOST unset). */
  mail: { key: Buffer; invitedBy: string } | null
}

/**
 * Invite `email` into the org as `role`. The actor must be an ADMIN or OWNER there (403) and may
 * not grant a role above their own (403); 409 when the address belongs to a member already. A
 * pending invitation of the same address is revoked. Returns the invitation and its token.
 */
export const createInvitation = timed('org_invitations.create', async function createInvitation(sql: Sql, actor: Actor, n: NewInvitation, pend?: Pend): Promise<{ invitation: InvitationRow; token: string; replaced: string | null }> {
  const email = n.email.toLowerCase()
  return sql.begin(async (tx) => {
    const { name, actorRole } = await lockOrg(tx, n.orgId, actor)
    if (RANK_ADMIN.indexOf(actorRole) === -1) throw new ForbiddenError(`Inviting needs the ADMIN role or above in the organisation (yours: ${actorRole})`)
    mayGrant(actorRole, n.role)
    const [member] = await tx`select 1 from org_members m join users u on u.id = m.user_id where m.org_id = ${n.orgId} and u.email = ${email}`
    if (member) throw new ConflictError('This address belongs to a member of the organisation already', [{ field: 'email', message: 'Already a member' }])
    const [old] = await tx<{ id: string }[]>`
      update org_invitations set revoked_at = now()
      where org_id = ${n.orgId} and email = ${email} and accepted_at is null and revoked_at is null
      returning id`
    const id = Bun.randomUUIDv7()
    const token = newToken()
    const [row] = await tx<{ expiresAt: Date }[]>`
      insert into org_invitations (id, org_id, email, role, token_hash, invited_by, expires_at)
      values (${id}, ${n.orgId}, ${email}, ${n.role}, ${tokenHash(token)}, ${actor.userId}, now() + ${n.ttlHours}::int * interval '1 hour')
      returning expires_at as "expiresAt"`
    if (n.mail) await queueInvitationMail(tx, n.mail.key, { to: email, orgName: name, invitedBy: n.mail.invitedBy, role: n.role, token, expiresAt: row!.expiresAt })
    await pend?.(tx, id)
    return { invitation: (await getInvitation(tx, n.orgId, id))!, token, replaced: old?.id ?? null }
  })
})

const getInvitation = timed('org_invitations.get', async function getInvitation(sql: Db, orgId: string, id: string): Promise<InvitationRow | undefined> {
  const [row] = await sql<InvitationRow[]>`select ${INVITATION(sql)} from org_invitations i where i.org_id = ${orgId} and i.id = ${id}`
  return row
})

/** The org's invitations, every state, in creation order (keyset on created_at, id); `state` narrows them. */
export const listInvitations = timed('org_invitations.list', async function listInvitations(
  sql: Db,
  orgId: string,
  page: { limit: number; cursor?: string; state?: InvitationState },
): Promise<Page<InvitationRow>> {
  const c = decodeCursor(page.cursor)
  const state = page.state
  const rows = await sql<(InvitationRow & { cursorAt: string })[]>`
    select ${INVITATION(sql)}, i.created_at::text as "cursorAt"
    from org_invitations i
    where i.org_id = ${orgId}
      ${c ? sql`and (i.created_at, i.id) > (${c.t}::text::timestamptz, ${c.id}::uuid)` : sql``}
      ${state === 'accepted' ? sql`and i.accepted_at is not null` : sql``}
      ${state === 'revoked' ? sql`and i.accepted_at is null and i.revoked_at is not null` : sql``}
      ${state === 'pending' ? sql`and i.accepted_at is null and i.revoked_at is null and i.expires_at > now()` : sql``}
      ${state === 'expired' ? sql`and i.accepted_at is null and i.revoked_at is null and i.expires_at <= now()` : sql``}
    order by i.created_at, i.id
    limit ${page.limit + 1}`
  return toPage(rows, page.limit)
})

/**
 * Revoke a pending invitation (its link stops working). 404 when the org has no such invitation;
 * 409 when it was accepted or revoked already (an expired one is revoked all the same).
 */
export const revokeInvitation = timed('org_invitations.revoke', async function revokeInvitation(sql: Db, orgId: string, id: string): Promise<InvitationRow> {
  const [done] = await sql`update org_invitations set revoked_at = now() where org_id = ${orgId} and id = ${id} and accepted_at is null and revoked_at is null returning id`
  const row = await getInvitation(sql, orgId, id)
  if (!row) throw new NotFoundError('Invitation')
  if (!done) throw new ConflictError(`This invitation was ${row.state} already`)
  return row
})

/**
 * Accept the invitation whose token hashes to `hash`, as `user` (whose e-mail must be the
 * invitation's, case-insensitive). Single use and race-free: the one conditional update that
 * marks it accepted is what decides — of two accepts at once, one wins. 404 for an unknown token;
 * 403 when it is for another address (nothing more is said about it); 409 when it was used,
 * revoked or is past its time. Someone who is a member already keeps the higher of their role and
 * the invitation's.
 */
export const acceptInvitation = timed('org_invitations.accept', async function acceptInvitation(
  sql: Sql,
  hash: Buffer,
  user: { id: string; email: string },
  audit?: MembershipAudit,
): Promise<{ orgId: string; invitationId: string; role: OrgRole; previous: OrgRole | null }> {
  const email = user.email.toLowerCase()
  return sql.begin(async (tx) => {
    const [won] = await tx<{ id: string; orgId: string; role: OrgRole }[]>`
      update org_invitations set accepted_at = now(), accepted_by = ${user.id}
      where token_hash = ${hash} and email = ${email} and accepted_at is null and revoked_at is null and expires_at > now()
      returning id, org_id as "orgId", role`
    if (!won) {
      const [row] = await tx<{ email: string; state: InvitationState }[]>`select i.email, ${INVITATION(tx)} from org_invitations i where i.token_hash = ${hash}`
      if (!row) throw new NotFoundError('Invitation')
      if (row.email !== email) throw new ForbiddenError('This invitation is for another e-mail address: sign in with the account it was sent to')
      throw new ConflictError(`This invitation was ${row.state === 'pending' ? 'just used' : row.state} and can no longer be accepted`)
    }
    // Who holds which role changes under the org's lock (./orgs.ts).
    await tx`select id from orgs where id = ${won.orgId} for update`
    const { role, previous } = await addMember(tx, won.orgId, user.id, won.role)
    await audit?.recordIn(tx, { action: 'org.member_added', outcome: 'success', status: 200, orgId: won.orgId, actorId: user.id, targetType: 'user', targetId: user.id, detail: { role, previousRole: previous, invitationId: won.id } })
    return { orgId: won.orgId, invitationId: won.id, role, previous }
  })
})
