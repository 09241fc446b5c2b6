/**
 * Password-reset tokens (table password_resets): only the SHA-256 of a token is stored; a
 * token is spent by the reset that uses it, and every other open token of the user with it.
 */
import { timed, type Db } from './db.ts'

/** Store a token's hash for `userId`, valid until `expiresAt`. */
export const insertReset = timed('password_resets.insertReset', async function insertReset(tx: Db, r: { userId: string; tokenHash: string; expiresAt: Date; ip: string | null }): Promise<void> {
  await tx`insert into password_resets (id, user_id, token_hash, expires_at, ip) values (${Bun.randomUUIDv7()}, ${r.userId}, ${r.tokenHash}, ${r.expiresAt}, ${r.ip})`
})

/**
 * Spend the token with `tokenHash` if it is open and not expired, and with it every other open
 * token of its user (in `tx`, the reset's transaction). Returns the user, or undefined for a
 * token that is unknown, used or expired — the same for all three.
 */
export const spendReset = timed('password_resets.spendReset', async function spendReset(tx: Db, tokenHash: string): Promise<string | undefined> {
  const [row] = await tx<{ userId: string }[]>`
    update password_resets set used_at = now()
    where token_hash = ${tokenHash} and used_at is null and expires_at > now()
    returning user_id as "userId"`
  if (!row) return undefined
  await spendAllResets(tx, row.userId)
  return row.userId
})

/** Spend every open token of `userId` (a reset or a password change makes them moot). */
export const spendAllResets = timed('password_resets.spendAllResets', async function spendAllResets(tx: Db, userId: string): Promise<void> {
  await tx`update password_resets set used_at = now() where user_id = ${userId} and used_at is null`
})
