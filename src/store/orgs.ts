/**
 * Organisations, their members and invitations (sql/0012_orgs.sql): the one writer of those
 * tables. What a role may do is src/auth/policy.ts's; this module only records who holds which,
 * and keeps the rules that must hold whatever the caller checked before: an org always keeps an
 * OWNER, nobody grants a role above their own, an ADMIN does not touch an OWNER. Each change that
 * could break them locks the org's row (`for update`) first, so two of them never race.
 */
import { ConflictError, ForbiddenError, NotFoundError, PG, pgCode } from '../core/errors.ts'
import { decodeCursor, toPage, type Page } from './pagination.ts'
import type { Pend } from './audit-pending.ts'
import type { AuditLog } from './audit.ts'
import { timed, type Db, type Sql } from './db.ts'

/** A role in an organisation, highest first: OWNER > ADMIN > MEMBER > VIEWER. */
export type OrgRole = 'OWNER' | 'ADMIN' | 'MEMBER' | 'VIEWER'

/**
 * Who holds which role is recorded in the audit log in the same transaction as the change
 * (`org.member_role_changed`, `org.member_removed`, `org.member_added`), so no change goes
 * unrecorded; the request's own after-the-fact event is then not written twice.
 */
export type MembershipAudit = Pick<AuditLog, 'recordIn'>

const RANK: Record<OrgRole, number> = { OWNER: 0, ADMIN: 1, MEMBER: 2, VIEWER: 3 }
/** Does `a` rank at least as high as `b`? (The policy's own, which this layer cannot import.) */
const atLeast = (a: OrgRole, b: OrgRole) => RANK[a] <= RANK[b]

/** The role of `userId` in `orgId`, or null when they are not a member (or there is no such org). */
export const roleOf = timed('orgs.roleOf', async function roleOf(sql: Db, orgId: string, userId: string): Promise<OrgRole | null> {
  const [row] = await sql<{ role: OrgRole }[]>`select role from org_members where org_id = ${orgId} and user_id = ${userId}`
  return row?.role ?? null
})

export const exists = timed('orgs.exists', async function exists(sql: Db, orgId: string): Promise<boolean> {
  const [row] = await sql`select 1 from orgs where id = ${orgId}`
  return row !== undefined
})

export interface OrgRow {
  id: string
  name: string
  slug: string
  createdBy: string | null
  createdAt: Date
  updatedAt: Date
}

/** An org with the caller's role in it (null: not a member — a platform admin looking). */
export interface OrgWithRole extends OrgRow {
  role: OrgRole | null
}

export interface MemberRow {
  userId: string
  email: string
  firstName: string
  lastName: string
  role: OrgRole
  createdAt: Date
  updatedAt: Date
}

/**
 * Who is acting, as the store sees them: their user id, and whether they are a platform admin
 * (who counts as an OWNER of every org, member or not).
 */
export interface Actor {
  userId: string
  platformAdmin: boolean
}

const ORG = (sql: Db) => sql`o.id, o.name, o.slug, o.created_by as "createdBy", o.created_at as "createdAt", o.updated_at as "updatedAt"`
const MEMBER = (sql: Db) => sql`
  m.user_id as "userId", u.email, u.first_name as "firstName", u.last_name as "lastName", m.role,
  m.created_at as "createdAt", m.updated_at as "updatedAt"`

/** What the organisation still holds, by table: it cannot be deleted while any is there. */
const HOLDINGS = ['datakits', 'models', 'pipelines', 'codesheets', 'workstations', 'vms'] as const

function slugTaken(err: unknown): never {
  if (pgCode(err) === PG.uniqueViolation) throw new ConflictError('This slug is taken by another organisation', [{ field: 'slug', message: 'Already taken' }])
  throw err
}

/** A new org with `userId` as its OWNER, in one transaction. 409 when the slug is taken. */
export const createOrg = timed('orgs.create', async function createOrg(sql: Sql, o: { name: string; slug: string; userId: string }, pend?: Pend): Promise<OrgWithRole> {
  const id = Bun.randomUUIDv7()
  return sql
    .begin(async (tx) => {
      const [row] = await tx<OrgRow[]>`
        insert into orgs (id, name, slug, created_by) values (${id}, ${o.name}, ${o.slug}, ${o.userId})
        returning id, name, slug, created_by as "createdBy", created_at as "createdAt", updated_at as "updatedAt"`
      await tx`insert into org_members (org_id, user_id, role) values (${id}, ${o.userId}, 'OWNER')`
      await pend?.(tx, id)
      return { ...row!, role: 'OWNER' as const }
    })
    .catch(slugTaken)
})

/** The org `id` with `userId`'s role in it. */
export const getOrg = timed('orgs.get', async function getOrg(sql: Db, id: string, userId: string): Promise<OrgWithRole | undefined> {
  const [row] = await sql<OrgWithRole[]>`
    select ${ORG(sql)}, m.role from orgs o left join org_members m on m.org_id = o.id and m.user_id = ${userId}
    where o.id = ${id}`
  return row
})

/** The orgs `userId` is a member of, with their role, in creation order (keyset on created_at, id). */
export const listMine = timed('orgs.listMine', async function listMine(sql: Db, userId: string, page: { limit: number; cursor?: string }): Promise<Page<OrgWithRole>> {
  const c = decodeCursor(page.cursor)
  const rows = await sql<(OrgWithRole & { cursorAt: string })[]>`
    select ${ORG(sql)}, m.role, o.created_at::text as "cursorAt"
    from org_members m join orgs o on o.id = m.org_id
    where m.user_id = ${userId}
      ${c ? sql`and (o.created_at, o.id) > (${c.t}::text::timestamptz, ${c.id}::uuid)` : sql``}
    order by o.created_at, o.id
    limit ${page.limit + 1}`
  return toPage(rows, page.limit)
})

/** Rename the org or change its slug (409 when taken). Undefined when there is no such org. */
export const updateOrg = timed('orgs.update', async function updateOrg(sql: Db, id: string, patch: { name?: string; slug?: string }): Promise<OrgRow | undefined> {
  const [row] = await sql<OrgRow[]>`
    update orgs o set name = coalesce(${patch.name ?? null}, name), slug = coalesce(${patch.slug ?? null}, slug), updated_at = now()
    where id = ${id}
    returning ${ORG(sql)}`.catch(slugTaken)
  return row
})

/**
 * Delete the org (its members, invitations and quotas go with it). 409 naming what it still
 * holds: its DataKits, models, pipelines, CodeSheets, workstations and VMs must be deleted or
 * moved out first. The org's row is locked first: an object being created in it meanwhile waits
 * for this transaction, then fails its foreign key (it is not left pointing nowhere).
 */
export const deleteOrg = timed('orgs.delete', async function deleteOrg(sql: Sql, id: string, pend?: Pend): Promise<boolean> {
  return sql.begin(async (tx) => {
    const [org] = await tx`select id from orgs where id = ${id} for update`
    if (!org) return false
    const counts = await countHoldings(tx, id)
    const left = HOLDINGS.filter((t) => counts[t] > 0)
    if (left.length > 0) throw holdsObjects(left.map((t) => [t, counts[t]] as const))
    try {
      await tx`delete from orgs where id = ${id}`
    } catch (err) {
      if (pgCode(err) === PG.foreignKeyViolation) throw holdsObjects([])
      throw err
    }
    await pend?.(tx)
    return true
  })
})

async function countHoldings(tx: Db, id: string): Promise<Record<(typeof HOLDINGS)[number], number>> {
  const [row] = await tx<Record<(typeof HOLDINGS)[number], number>[]>`
    select
      (select count(*)::int from datakits where org_id = ${id}) as datakits,
      (select count(*)::int from models where org_id = ${id}) as models,
      (select count(*)::int from pipelines where org_id = ${id}) as pipelines,
      (select count(*)::int from codesheets where org_id = ${id}) as codesheets,
      (select count(*)::int from workstations where org_id = ${id}) as workstations,
      (select count(*)::int from vms where org_id = ${id}) as vms`
  return row!
}

function holdsObjects(left: ReadonlyArray<readonly [string, number]>): ConflictError {
  const what = left.length ? left.map(([t, n]) => `${n} ${t}`).join(', ') : 'objects'
  return new ConflictError(
    `The organisation still holds ${what}: delete them or move them out first`,
    left.map(([t, n]) => ({ field: t, message: `${n} left in the organisation` })),
  )
}

/** The members of `orgId`, oldest first (keyset on when they joined, user id). */
export const listMembers = timed('orgs.listMembers', async function listMembers(sql: Db, orgId: string, page: { limit: number; cursor?: string }): Promise<Page<MemberRow>> {
  const c = decodeCursor(page.cursor)
  const rows = await sql<(MemberRow & { id: string; cursorAt: string })[]>`
    select ${MEMBER(sql)}, m.user_id as id, m.created_at::text as "cursorAt"
    from org_members m join users u on u.id = m.user_id
    where m.org_id = ${orgId}
      ${c ? sql`and (m.created_at, m.user_id) > (${c.t}::text::timestamptz, ${c.id}::uuid)` : sql``}
    order by m.created_at, m.user_id
    limit ${page.limit + 1}`
  const p = toPage(rows, page.limit)
  return { nextCursor: p.nextCursor, items: p.items.map(({ id: _, ...m }) => m) }
})

const getMember = timed('orgs.getMember', async function getMember(sql: Db, orgId: string, userId: string): Promise<MemberRow | undefined> {
  const [row] = await sql<MemberRow[]>`select ${MEMBER(sql)} from org_members m join users u on u.id = m.user_id where m.org_id = ${orgId} and m.user_id = ${userId}`
  return row
})

/**
 * In `tx`: lock the org's row (every change to who holds which role takes this lock first) and
 * return the actor's role there (a platform admin: OWNER). 404 when there is no such org or the
 * actor is not in it.
 */
export async function lockOrg(tx: Db, orgId: string, actor: Actor): Promise<{ name: string; actorRole: OrgRole }> {
  const [org] = await tx<{ name: string }[]>`select name from orgs where id = ${orgId} for update`
  // Read after the lock, in a statement of its own: it sees what the change that held it committed.
  const role = !org ? null : actor.platformAdmin ? 'OWNER' : await roleOf(tx, orgId, actor.userId)
  if (!org || role === null) throw new NotFoundError('Organisation')
  return { name: org.name, actorRole: role }
}

/** 403 unless `actorRole` may hand out `role`: nobody grants a role above their own. */
export function mayGrant(actorRole: OrgRole, role: OrgRole): void {
  if (!atLeast(actorRole, role)) throw new ForbiddenError(`You cannot grant the ${role} role: it is above your own (${actorRole})`)
}

async function ownerCount(tx: Db, orgId: string): Promise<number> {
  const [row] = await tx<{ n: number }[]>`select count(*)::int as n from org_members where org_id = ${orgId} and role = 'OWNER'`
  return row!.n
}

const LAST_OWNER = 'An organisation keeps at least one OWNER: make someone else OWNER first'

/**
 * Set `userId`'s role in `orgId`. The actor must be an ADMIN or OWNER there (403), may not grant
 * a role above their own (403), an ADMIN may not change an OWNER (403), and the last OWNER stays
 * one (409). 404 `Member` when `userId` is not in the org. Returns the member as it is now, and
 * the role it had.
 */
export const changeRole = timed('orgs.changeRole', async function changeRole(
  sql: Sql,
  orgId: string,
  actor: Actor,
  userId: string,
  role: OrgRole,
  audit?: MembershipAudit,
): Promise<{ member: MemberRow; from: OrgRole }> {
  return sql.begin(async (tx) => {
    const { actorRole } = await lockOrg(tx, orgId, actor)
    if (!atLeast(actorRole, 'ADMIN')) throw new ForbiddenError(`Changing roles needs the ADMIN role or above in the organisation (yours: ${actorRole})`)
    const from = await roleOf(tx, orgId, userId)
    if (from === null) throw new NotFoundError('Member')
    mayGrant(actorRole, role)
    if (from === 'OWNER' && actorRole !== 'OWNER') throw new ForbiddenError('Only an OWNER can change the role of an OWNER')
    if (from === 'OWNER' && role !== 'OWNER' && (await ownerCount(tx, orgId)) <= 1) throw new ConflictError(LAST_OWNER)
    if (from !== role) await tx`update org_members set role = ${role}, updated_at = now() where org_id = ${orgId} and user_id = ${userId}`
    await audit?.recordIn(tx, { action: 'org.member_role_changed', outcome: 'success', status: 200, orgId, targetType: 'user', targetId: userId, detail: { from, to: role } })
    return { member: (await getMember(tx, orgId, userId))!, from }
  })
})

/**
 * Remove `userId` from `orgId`. Anyone may leave (remove themselves); removing someone else needs
 * the ADMIN role or above, and an OWNER to remove an OWNER (403). The last OWNER cannot go (409).
 * 404 `Member` when `userId` is not in the org. Returns the role they had.
 */
export const removeMember = timed('orgs.removeMember', async function removeMember(sql: Sql, orgId: string, actor: Actor, userId: string, audit?: MembershipAudit): Promise<OrgRole> {
  return sql.begin(async (tx) => {
    const { actorRole } = await lockOrg(tx, orgId, actor)
    const self = userId === actor.userId
    if (!self && !atLeast(actorRole, 'ADMIN')) throw new ForbiddenError(`Removing members needs the ADMIN role or above in the organisation (yours: ${actorRole})`)
    const role = await roleOf(tx, orgId, userId)
    if (role === null) throw new NotFoundError('Member')
    if (!self && role === 'OWNER' && actorRole !== 'OWNER') throw new ForbiddenError('Only an OWNER can remove an OWNER')
    if (role === 'OWNER' && (await ownerCount(tx, orgId)) <= 1) throw new ConflictError(LAST_OWNER)
    await tx`delete from org_members where org_id = ${orgId} and user_id = ${userId}`
    await audit?.recordIn(tx, { action: 'org.member_removed', outcome: 'success', status: 200, orgId, targetType: 'user', targetId: userId, detail: { role, left: self } })
    return role
  })
})

/**
 * Make `userId` a member of `orgId` with `role` (an accepted invitation), in `tx`. Someone who is
 * a member already keeps the higher of their role and `role`: accepting never demotes.
 */
export async function addMember(tx: Db, orgId: string, userId: string, role: OrgRole): Promise<{ role: OrgRole; previous: OrgRole | null }> {
  const previous = await roleOf(tx, orgId, userId)
  if (previous !== null && atLeast(previous, role)) return { role: previous, previous }
  await tx`
    insert into org_members (org_id, user_id, role) values (${orgId}, ${userId}, ${role})
    on conflict (org_id, user_id) do update set role = excluded.role, updated_at = now()`
  return { role, previous }
}
