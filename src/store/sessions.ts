import { timed, type Db } from './db.ts'
import type { Role } from './users.ts'

export interface SessionAuthRow {
  id: string
  userId: string
  role: Role
  isActive: boolean
  revoked: boolean
  expiresAt: Date
}

export const insert = timed('sessions.insert', async function insert(
  sql: Db,
  s: { id: string; userId: string; refreshHash: string; expiresAt: Date; userAgent?: string | null; ip?: string | null },
): Promise<void> {
  await sql`
    insert into sessions (id, user_id, refresh_hash, expires_at, user_agent, ip)
    values (${s.id}, ${s.userId}, ${s.refreshHash}, ${s.expiresAt}, ${s.userAgent ?? null}, ${s.ip ?? null})`
})

/** What every authenticated request needs to know about its session, in one query. */
export const findAuth = timed('sessions.findAuth', async function findAuth(sql: Db, id: string): Promise<SessionAuthRow | undefined> {
  const [row] = await sql<SessionAuthRow[]>`
    select s.id, s.user_id as "userId", u.role, u.is_active as "isActive",
           (s.revoked_at is not null) as revoked, s.expires_at as "expiresAt"
    from sessions s join users u on u.id = s.user_id
    where s.id = ${id}`
  return row
})

/**
 * Rotate a refresh token: succeeds only for the current generation of a live session, in
 * one statement, so of two parallel refreshes of one token exactly one wins.
 */
export const rotate = timed('sessions.rotate', async function rotate(sql: Db, id: string, generation: number, presentedHash: string, nextHash: string): Promise<boolean> {
  const rows = await sql`
    update sessions set refresh_hash = ${nextHash}, refresh_generation = refresh_generation + 1, last_refreshed_at = now()
    where id = ${id} and refresh_generation = ${generation} and refresh_hash = ${presentedHash}
      and revoked_at is null and expires_at > now()
    returning id`
  return rows.length === 1
})

export const revoke = timed('sessions.revoke', async function revoke(sql: Db, id: string, reason: string): Promise<boolean> {
  const rows = await sql`update sessions set revoked_at = now(), revoked_reason = ${reason} where id = ${id} and revoked_at is null returning id`
  return rows.length === 1
})

/** Revoke every live session of a user (optionally all but one); returns their ids. */
export const revokeAllForUser = timed('sessions.revokeAllForUser', async function revokeAllForUser(sql: Db, userId: string, reason: string, exceptId?: string): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`
    update sessions set revoked_at = now(), revoked_reason = ${reason}
    where user_id = ${userId} and revoked_at is null ${exceptId ? sql`and id <> ${exceptId}` : sql``}
    returning id`
  return rows.map((r) => r.id)
})
