import { timed, type Db } from './db.ts'
import { decodeCursor, toPage, type Page } from './pagination.ts'

export type Role = 'ADMIN' | 'USER' | 'VIEWER'

export interface UserRow {
  id: string
  email: string
  firstName: string
  lastName: string
  organization: string | null
  role: Role
  isActive: boolean
  lastLoginAt: Date | null
  createdAt: Date
  updatedAt: Date
}

/**
 * The row plus the field that never leaves the server. (The columns failed_logins,
 * first_failed_login_at and locked_until of the per-account lockout are no longer read:
 * failed logins are throttled in the rate-limit store, see src/auth/login-throttle.ts. They
 * stay until every node of a rolling upgrade has stopped reading them.)
 */
export interface UserSecretRow extends UserRow {
  passwordHash: string
}

const PUBLIC = (sql: Db) => sql`
  id, email, first_name as "firstName", last_name as "lastName", organization, role,
  is_active as "isActive", last_login_at as "lastLoginAt", created_at as "createdAt", updated_at as "updatedAt"`

export const insert = timed('users.insert', async function insert(
  sql: Db,
  u: { email: string; firstName: string; lastName: string; organization?: string | null; role?: Role; passwordHash: string },
): Promise<UserRow> {
  const [row] = await sql<UserRow[]>`
    insert into users (email, first_name, last_name, organization, role, password_hash)
    values (${u.email.toLowerCase()}, ${u.firstName}, ${u.lastName}, ${u.organization ?? null}, ${u.role ?? 'USER'}, ${u.passwordHash})
    returning ${PUBLIC(sql)}`
  return row!
})

export const findById = timed('users.findById', async function findById(sql: Db, id: string): Promise<UserRow | undefined> {
  const [row] = await sql<UserRow[]>`select ${PUBLIC(sql)} from users where id = ${id}`
  return row
})

export const findSecretByEmail = timed('users.findSecretByEmail', async function findSecretByEmail(sql: Db, email: string): Promise<UserSecretRow | undefined> {
  const [row] = await sql<UserSecretRow[]>`
    select ${PUBLIC(sql)}, password_hash as "passwordHash"
    from users where email = ${email.toLowerCase()}`
  return row
})

export const findSecretById = timed('users.findSecretById', async function findSecretById(sql: Db, id: string): Promise<UserSecretRow | undefined> {
  const [row] = await sql<UserSecretRow[]>`
    select ${PUBLIC(sql)}, password_hash as "passwordHash"
    from users where id = ${id}`
  return row
})

export const countAdmins = timed('users.countAdmins', async function countAdmins(sql: Db): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from users where role = 'ADMIN'`
  return row!.n
})

export const recordSuccessfulLogin = timed('users.recordSuccessfulLogin', async function recordSuccessfulLogin(sql: Db, id: string): Promise<void> {
  await sql`update users set last_login_at = now() where id = ${id}`
})

export const setPassword = timed('users.setPassword', async function setPassword(sql: Db, id: string, passwordHash: string): Promise<void> {
  await sql`update users set password_hash = ${passwordHash}, password_changed_at = now(), updated_at = now() where id = ${id}`
})

/** The fields a PATCH may change; who may change which is decided by the caller. */
export interface UserPatch {
  firstName?: string
  lastName?: string
  organization?: string | null
  role?: Role
  isActive?: boolean
}

export const update = timed('users.update', async function update(sql: Db, id: string, patch: UserPatch): Promise<UserRow | undefined> {
  const cols: Record<string, unknown> = {}
  if (patch.firstName !== undefined) cols.first_name = patch.firstName
  if (patch.lastName !== undefined) cols.last_name = patch.lastName
  if (patch.organization !== undefined) cols.organization = patch.organization
  if (patch.role !== undefined) cols.role = patch.role
  if (patch.isActive !== undefined) cols.is_active = patch.isActive
  if (Object.keys(cols).length === 0) return findById(sql, id)
  const [row] = await sql<UserRow[]>`
    update users set ${sql(cols)}, updated_at = now() where id = ${id} returning ${PUBLIC(sql)}`
  return row
})

export const list = timed('users.list', async function list(sql: Db, opts: { limit: number; cursor?: string; search?: string; role?: Role }): Promise<Page<UserRow>> {
  const c = decodeCursor(opts.cursor)
  const pattern = opts.search ? `%${opts.search.replace(/[\\%_]/g, (m) => '\\' + m)}%` : null
  const rows = await sql<(UserRow & { cursorAt: string })[]>`
    select ${PUBLIC(sql)}, created_at::text as "cursorAt" from users
    where true
      ${c ? sql`and (created_at, id) > (${c.t}::text::timestamptz, ${c.id}::uuid)` : sql``}
      ${pattern ? sql`and (email ilike ${pattern} or first_name ilike ${pattern} or last_name ilike ${pattern} or organization ilike ${pattern})` : sql``}
      ${opts.role ? sql`and role = ${opts.role}` : sql``}
    order by created_at, id
    limit ${opts.limit + 1}`
  return toPage(rows, opts.limit)
})
