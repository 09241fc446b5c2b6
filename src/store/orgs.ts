/**
 * Organisations, their members and invitations (sql/0012_orgs.sql): the one writer of those
 * tables. What a role may do is src/auth/policy.ts's; this module only records who holds which.
 */
import { timed, type Db } from './db.ts'

/** A role in an organisation, highest first: OWNER > ADMIN > MEMBER > VIEWER. */
export type OrgRole = 'OWNER' | 'ADMIN' | 'MEMBER' | 'VIEWER'

/** The role of `userId` in `orgId`, or null when they are not a member (or there is no such org). */
export const roleOf = timed('orgs.roleOf', async function roleOf(sql: Db, orgId: string, userId: string): Promise<OrgRole | null> {
  const [row] = await sql<{ role: OrgRole }[]>`select role from org_members where org_id = ${orgId} and user_id = ${userId}`
  return row?.role ?? null
})

export const exists = timed('orgs.exists', async function exists(sql: Db, orgId: string): Promise<boolean> {
  const [row] = await sql`select 1 from orgs where id = ${orgId}`
  return row !== undefined
})
