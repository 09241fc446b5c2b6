/** Organisations as the API shows them: the TypeBox schemas of bodies, queries and answers, and the row serializers. */
import { t } from 'elysia'
import { iso } from '../../core/time.ts'
import type { InvitationRow } from '../../store/org-invitations.ts'
import type { MemberRow, OrgRow, OrgWithRole } from '../../store/orgs.ts'
import { Envelope } from '../context.ts'

export const ORGS_TAG = 'Organisations'

const ORG_ID = '0f8e2c4a-6b1d-4e3f-9a5c-7d2e1b0c9f84'
const USER_ID = '3f6c2a9e-8b1d-4c7a-9e52-1d7b4a0c6f21'
const INVITATION_ID = '6a1c9e3f-2d4b-4f8a-b7c6-5e0d1a2b3c4d'
const AT = '2026-12-04T10:15:00.000Z'

const nullable = <S extends Parameters<typeof t.Union>[0][number]>(s: S, description?: string) => t.Union([s, t.Null()], description ? { description } : {})

export namespace OrgModel {
  export const role = t.Union([t.Literal('OWNER'), t.Literal('ADMIN'), t.Literal('MEMBER'), t.Literal('VIEWER')], {
    description: 'OWNER > ADMIN > MEMBER > VIEWER: VIEWERs read (query, predict); MEMBERs also create and change; ADMINs also delete others\' objects and manage members and invitations; OWNERs also delete the organisation',
    error: 'role must be OWNER, ADMIN, MEMBER or VIEWER',
  })
  /** A role, or null (a flat union: the OpenAPI document would lose a null beside a nested one). */
  const roleOrNull = (description: string) => t.Union([...role.anyOf, t.Null()], { description })
  const name = t.String({ minLength: 1, maxLength: 100, description: 'Display name (1–100 characters)', error: 'name must be 1–100 characters' })
  const slug = t.String({
    minLength: 1,
    maxLength: 50,
    pattern: '^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$',
    description: 'URL-safe handle, unique across the platform: lower-case letters, digits and inner hyphens (1–50 characters)',
    error: 'slug must be 1–50 lower-case letters, digits or inner hyphens',
  })

  const orgExample = { id: ORG_ID, name: 'Data Science Team', slug: 'data-science', role: 'OWNER' as const, createdBy: USER_ID, createdAt: AT, updatedAt: AT }
  export const org = t.Object(
    {
      id: t.String({ format: 'uuid' }),
      name: t.String(),
      slug: t.String(),
      role: roleOrNull('Your role in it (null: you are a platform admin and not a member)'),
      createdBy: nullable(t.String({ format: 'uuid' }), 'Who created it (null once their account is gone)'),
      createdAt: t.String({ format: 'date-time' }),
      updatedAt: t.String({ format: 'date-time' }),
    },
    { title: 'Organisation', examples: [orgExample] },
  )
  export const create = t.Object({ name, slug }, { additionalProperties: false, examples: [{ name: 'Data Science Team', slug: 'data-science' }] })
  export const patch = t.Object(
    { name: t.Optional(name), slug: t.Optional(slug) },
    { additionalProperties: false, minProperties: 1, error: 'Give name, slug or both', examples: [{ name: 'Data Science' }] },
  )
  export const deleted = t.Object({ id: t.String({ format: 'uuid' }), deleted: t.Literal(true) }, { examples: [{ id: ORG_ID, deleted: true }] })

  const memberExample = { userId: USER_ID, email: 'user@example.com', firstName: 'Ada', lastName: 'Lovelace', role: 'ADMIN' as const, joinedAt: AT, updatedAt: AT }
  export const member = t.Object(
    {
      userId: t.String({ format: 'uuid' }),
      email: t.String(),
      firstName: t.String(),
      lastName: t.String(),
      role,
      joinedAt: t.String({ format: 'date-time' }),
      updatedAt: t.String({ format: 'date-time' }),
    },
    { title: 'OrgMember', examples: [memberExample] },
  )
  export const roleChange = t.Object({ role }, { additionalProperties: false, examples: [{ role: 'ADMIN' }] })
  export const removed = t.Object(
    { orgId: t.String({ format: 'uuid' }), userId: t.String({ format: 'uuid' }), role: t.Union([role], { description: 'The role they had' }), removed: t.Literal(true) },
    { examples: [{ orgId: ORG_ID, userId: USER_ID, role: 'MEMBER', removed: true }] },
  )

  export const state = t.Union([t.Literal('pending'), t.Literal('accepted'), t.Literal('revoked'), t.Literal('expired')], {
    description: '`pending`: its link works; `accepted`; `revoked` (by an admin, or replaced by a newer invitation of the same address); `expired`',
  })
  const invitationExample = {
    id: INVITATION_ID,
    orgId: ORG_ID,
    email: 'new.colleague@example.com',
    role: 'MEMBER' as const,
    state: 'pending' as const,
    invitedBy: USER_ID,
    invitedByEmail: 'user@example.com',
    expiresAt: '2026-12-11T10:15:00.000Z',
    acceptedAt: null,
    acceptedBy: null,
    revokedAt: null,
    createdAt: AT,
  }
  const invitationFields = {
    id: t.String({ format: 'uuid' }),
    orgId: t.String({ format: 'uuid' }),
    email: t.String({ description: 'The address invited (lower-cased)' }),
    role,
    state,
    invitedBy: nullable(t.String({ format: 'uuid' })),
    invitedByEmail: nullable(t.String()),
    expiresAt: t.String({ format: 'date-time' }),
    acceptedAt: nullable(t.String({ format: 'date-time' })),
    acceptedBy: nullable(t.String({ format: 'uuid' })),
    revokedAt: nullable(t.String({ format: 'date-time' })),
    createdAt: t.String({ format: 'date-time' }),
  }
  export const invitation = t.Object(invitationFields, { title: 'OrgInvitation', examples: [invitationExample] })
  export const invite = t.Object(
    {
      email: t.String({ format: 'email', maxLength: 254, description: 'Who to invite (their account must have this e-mail to accept)', error: 'email must be an e-mail address' }),
      role: t.Union(role.anyOf, { description: 'The role they get (at most your own)', error: 'role must be OWNER, ADMIN, MEMBER or VIEWER', default: 'MEMBER' }),
    },
    { additionalProperties: false, examples: [{ email: 'new.colleague@example.com', role: 'MEMBER' }] },
  )
  export const invited = t.Object(
    {
      ...invitationFields,
      emailSent: t.Boolean({ description: 'true: the e-mail with the link is queued (delivered with retries); false: e-mail is off (SMTP_HOST unset) — the link is in this answer instead' }),
      token: t.Optional(t.String({ description: 'Only when e-mail is off: the single-use token (shown once; pass it on to the invitee yourself)' })),
      acceptUrl: t.Optional(t.String({ description: 'Only when e-mail is off: the link the e-mail would have carried (FRONTEND_URL/invitations/accept?token=…)' })),
    },
    { title: 'OrgInvitationCreated', examples: [{ ...invitationExample, emailSent: true }] },
  )
  export const invitationQuery = t.Object({ ...Envelope.pageQuery, state: t.Optional(state) })
  export const accepted = t.Object(
    {
      orgId: t.String({ format: 'uuid' }),
      invitationId: t.String({ format: 'uuid' }),
      role: t.Union([role], { description: 'Your role in the organisation now' }),
      previousRole: roleOrNull('Your role before (null: you were not a member); accepting never lowers it'),
      org,
    },
    { examples: [{ orgId: ORG_ID, invitationId: INVITATION_ID, role: 'MEMBER', previousRole: null, org: { ...orgExample, role: 'MEMBER' } }] },
  )

  export const idParams = t.Object({ id: t.String({ format: 'uuid', description: 'The organisation id', error: 'Invalid organisation id' }) })
  export const memberParams = t.Object({ id: idParams.properties.id, userId: t.String({ format: 'uuid', description: 'The member\'s user id', error: 'Invalid user id' }) })
  export const invitationParams = t.Object({ id: idParams.properties.id, invitationId: t.String({ format: 'uuid', description: 'The invitation id', error: 'Invalid invitation id' }) })
  export const tokenParams = t.Object({ token: t.String({ minLength: 1, maxLength: 128, description: 'The token of the invitation link', error: 'Invalid invitation token' }) })
}

export function orgView(o: OrgWithRole | (OrgRow & { role?: OrgWithRole['role'] })) {
  return { id: o.id, name: o.name, slug: o.slug, role: o.role ?? null, createdBy: o.createdBy, createdAt: iso(o.createdAt)!, updatedAt: iso(o.updatedAt)! }
}

export function memberView(m: MemberRow) {
  return { userId: m.userId, email: m.email, firstName: m.firstName, lastName: m.lastName, role: m.role, joinedAt: iso(m.createdAt)!, updatedAt: iso(m.updatedAt)! }
}

export function invitationView(i: InvitationRow) {
  return {
    id: i.id,
    orgId: i.orgId,
    email: i.email,
    role: i.role,
    state: i.state,
    invitedBy: i.invitedBy,
    invitedByEmail: i.invitedByEmail,
    expiresAt: iso(i.expiresAt)!,
    acceptedAt: iso(i.acceptedAt),
    acceptedBy: i.acceptedBy,
    revokedAt: iso(i.revokedAt),
    createdAt: iso(i.createdAt)!,
  }
}
