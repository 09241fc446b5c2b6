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

/** The row plus the fields that never leave the server. */
export interface UserSecretRow extends UserRow {
  passwordHash: string
  failedLogins: number
  firstFailedLoginAt: Date | null
  lockedUntil: Date | null
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
    select ${PUBLIC(sql)}, password_hash as "passwordHash", failed_logins as "failedLogins",
           first_failed_login_at as "firstFailedLoginAt", locked_until as "lockedUntil"
    from users where email = ${email.toLowerCase()}`
  return row
})

export const findSecretById = timed('users.findSecretById', async function findSecretById(sql: Db, id: string): Promise<UserSecretRow | undefined> {
  const [row] = await sql<UserSecretRow[]>`
    select ${PUBLIC(sql)}, password_hash as "passwordHash", failed_logins as "failedLogins",
           first_failed_login_at as "firstFailedLoginAt", locked_until as "lockedUntil"
    from users where id = ${id}`
  return row
})

export const countAdmins = timed('users.countAdmins', async function countAdmins(sql: Db): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from users where role = 'ADMIN'`
  return row!.n
})

/**
 * Count a failed login inside the lockout window; lock the account when the count reaches
 * `threshold`. One statement, so concurrent failures cannot under-count.
 */
export const recordFailedLogin = timed('users.recordFailedLogin', async function recordFailedLogin(sql: Db, id: string, threshold: number, windowMs: number): Promise<{ failedLogins: number; lockedUntil: Date | null }> {
  const [row] = await sql<{ failedLogins: number; lockedUntil: Date | null }[]>`
    update users set
      failed_logins = case when first_failed_login_at is null or first_failed_login_at < now() - ${windowMs} * interval '1 millisecond'
                           then 1 else failed_logins + 1 end,
      first_failed_login_at = case when first_failed_login_at is null or first_failed_login_at < now() - ${windowMs} * interval '1 millisecond'
                           then now() else first_failed_login_at end
    where id = ${id}
    returning failed_logins as "failedLogins", locked_until as "lockedUntil"`
  if (row && row.failedLogins >= threshold) {
    const [locked] = await sql<{ lockedUntil: Date }[]>`
      update users set locked_until = now() + ${windowMs} * interval '1 millisecond', failed_logins = 0, first_failed_login_at = null
      where id = ${id} returning locked_until as "lockedUntil"`
    return { failedLogins: row.failedLogins, lockedUntil: locked!.lockedUntil }
  }
  return row ?? { failedLogins: 0, lockedUntil: null }
})

export const recordSuccessfulLogin = timed('users.recordSuccessfulLogin', async function recordSuccessfulLogin(sql: Db, id: string): Promise<void> {
  await sql`update users set failed_logins = 0, first_failed_login_at = null, locked_until = null, last_login_at = now() where id = ${id}`
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
