/**
 * The mail outbox (table notification_mails): e-mails written in the transaction of what caused
 * them, then sent by a job whose id is the row's id (src/engines/mail/delivery.ts). The row is
 * the truth: a job claims it before sending (so two nodes never both send it), marks it sent,
 * or puts it back with the time of its next attempt. Every insert also sends a PostgreSQL
 * NOTIFY on NOTIFY_CHANNEL, delivered to every node when (and only if) the transaction
 * commits: that is what enqueues the job at once; a periodic sweep catches what a node missed.
 *
 * Secrets a mail carries (a password-reset or invitation token) are sealed at rest with
 * AES-256-GCM under a key derived from JWT_SECRET (`sealKey`), and dropped from the row once it
 * is sent or given up: a copy of the database alone does not hand out working links.
 */
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto'
import type postgres from 'postgres'
import { timed, type Db } from './db.ts'
import type { MailKind } from './notifications-kinds.ts'

/** The channel of the NOTIFY every new notification or mail sends (payload: NotifyPayload as JSON). */
export const NOTIFY_CHANNEL = 'quadrax_notifications'

/** What a NOTIFY says: whose notification (`u`, `n`), which mail (`m`). */
export interface NotifyPayload {
  u?: string
  n?: string
  m?: string
}

type Json = postgres.JSONValue

/** Send the NOTIFY in `tx` (delivered at commit). */
export function notifyCommitted(tx: Db, payload: NotifyPayload) {
  return tx`select pg_notify(${NOTIFY_CHANNEL}, ${JSON.stringify(payload)})`
}

// ---- sealing -----------------------------------------------------------------------------

/** The key secrets are sealed with: derived from JWT_SECRET, the same on every node. */
export function sealKey(secret: string): Buffer {
  return createHash('sha256').update('quadrax-mail-seal:').update(secret).digest()
}

/** `text` encrypted and authenticated (AES-256-GCM): base64url of iv ‖ tag ‖ ciphertext. */
export function seal(key: Buffer, text: string): string {
  const iv = randomBytes(12)
  const cipher = createCipheriv('aes-256-gcm', key, iv)
  const body = Buffer.concat([cipher.update(text, 'utf8'), cipher.final()])
  return Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64url')
}

/** The text `seal` sealed; throws when the key is not the one it was sealed with. */
export function unseal(key: Buffer, sealed: string): string {
  const raw = Buffer.from(sealed, 'base64url')
  const decipher = createDecipheriv('aes-256-gcm', key, raw.subarray(0, 12))
  decipher.setAuthTag(raw.subarray(12, 28))
  return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8')
}

// ---- writing ---------------------------------------------------------------------------

export interface NewMail {
  id?: string
  kind: MailKind
  /** What the template shows; a `sealed` field holds the sealed secret (see `seal`). */
  data: Record<string, unknown>
}

/**
 * Queue a mail to the user `userId` (their address and first name as they are now), in `tx`.
 * Returns its id, or undefined when there is no such user.
 */
export const queueUserMail = timed('notification_mails.queueUserMail', async function queueUserMail(tx: Db, userId: string, m: NewMail): Promise<string | undefined> {
  const id = m.id ?? Bun.randomUUIDv7()
  const rows = await tx`
    insert into notification_mails (id, user_id, kind, to_address, data)
    select ${id}, u.id, ${m.kind}, u.email, ${tx.json(m.data as Json)}::jsonb || jsonb_build_object('firstName', u.first_name)
    from users u where u.id = ${userId}
    returning id`
  if (rows.length === 0) return undefined
  await notifyCommitted(tx, { m: id })
  return id
})

/** Queue a mail to an address that may be nobody's yet (an invitation), in `tx`. Returns its id. */
const queueAddressMail = timed('notification_mails.queueAddressMail', async function queueAddressMail(tx: Db, to: string, m: NewMail): Promise<string> {
  const id = m.id ?? Bun.randomUUIDv7()
  await tx`insert into notification_mails (id, kind, to_address, data) values (${id}, ${m.kind}, ${to}, ${tx.json(m.data as Json)})`
  await notifyCommitted(tx, { m: id })
  return id
})

/**
 * Queue the e-mail inviting `to` into an organisation, in the transaction that creates the
 * invitation. `token` is the invitation's single-use token (sealed here; the link is
 * `FRONTEND_URL/invitations/accept?token=…`). For the organisations feature.
 */
export function queueInvitationMail(
  tx: Db,
  key: Buffer,
  invite: { to: string; orgName: string; invitedBy: string; role: string; token: string; expiresAt: Date },
): Promise<string> {
  const { to, token, expiresAt, ...rest } = invite
  return queueAddressMail(tx, to, { kind: 'org.invitation', data: { ...rest, expiresAt: expiresAt.toISOString(), sealed: seal(key, token) } })
}

// ---- sending -----------------------------------------------------------------------------

export type MailStatus = 'pending' | 'sending' | 'sent' | 'failed'

export interface MailRow {
  id: string
  userId: string | null
  kind: MailKind
  to: string
  data: Record<string, unknown>
  status: MailStatus
  attempts: number
  createdAt: Date
}

const MAIL = (sql: Db) => sql`
  id, user_id as "userId", kind, to_address as "to", data, status, attempts, created_at as "createdAt"`

/**
 * Claim row `id` for one attempt by `node`, for `leaseMs`: a pending row, or one whose claim
 * expired (its node died mid-send). Undefined when it is sent, given up, or claimed by a live
 * attempt — then this attempt must not send.
 */
export const claimMail = timed('notification_mails.claimMail', async function claimMail(sql: Db, id: string, node: string, leaseMs: number): Promise<MailRow | undefined> {
  const [row] = await sql<MailRow[]>`
    update notification_mails
    set status = 'sending', claimed_by = ${node}, claimed_until = now() + ${leaseMs}::int8 * interval '1 millisecond', attempts = attempts + 1
    where id = ${id} and (status = 'pending' or (status = 'sending' and claimed_until < now()))
    returning ${MAIL(sql)}`
  return row
})

/** The attempt of `node` sent the mail: sent, its secret dropped. */
export const markSent = timed('notification_mails.markSent', async function markSent(sql: Db, id: string, node: string): Promise<void> {
  await sql`
    update notification_mails set status = 'sent', sent_at = now(), claimed_by = null, claimed_until = null, last_error = null, data = data - 'sealed'
    where id = ${id} and claimed_by = ${node}`
})

/** The attempt failed for a reason that may pass: pending again, not before `nextAt`. */
export const markRetry = timed('notification_mails.markRetry', async function markRetry(sql: Db, id: string, node: string, error: string, nextAt: Date): Promise<void> {
  await sql`
    update notification_mails set status = 'pending', claimed_by = null, claimed_until = null, last_error = ${error.slice(0, 1000)}, next_attempt_at = ${nextAt}
    where id = ${id} and claimed_by = ${node}`
})

/** Given up (the server refused the address for good, or it kept failing too long): failed, its secret dropped. */
export const markFailed = timed('notification_mails.markFailed', async function markFailed(sql: Db, id: string, node: string, error: string): Promise<void> {
  await sql`
    update notification_mails set status = 'failed', claimed_by = null, claimed_until = null, last_error = ${error.slice(0, 1000)}, data = data - 'sealed'
    where id = ${id} and claimed_by = ${node}`
})

/** Mails that should be on their way now: pending and due, or claimed by an attempt that died. */
export const dueMails = timed('notification_mails.dueMails', async function dueMails(sql: Db, limit: number): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`
    select id from notification_mails
    where (status = 'pending' and next_attempt_at <= now()) or (status = 'sending' and claimed_until < now())
    order by next_attempt_at limit ${limit}`
  return rows.map((r) => r.id)
})
