/**
 * In-app notifications (table notifications) and the notifier's cursor over each user's events
 * (table notification_cursors): one aggregate, a user's notifications.
 *
 * A notification is inserted by `record`, in the transaction of what caused it — the notifier
 * actor's turn (src/actors/notifier.ts) for those it derives from actor events, the auth
 * service's for a password change or a lockout — together with its e-mail (the mail outbox)
 * when e-mail is on and wanted. Everything after that (read, announced on `user:<id>`) is done
 * by the user's notifier actor.
 */
import { ValidationError } from '../core/errors.ts'
import { timed, type Db } from './db.ts'
import type { NotificationKind } from './notifications-kinds.ts'
import { notifyCommitted, queueUserMail, type MailStatus } from './notifications-mail.ts'
import { wantsEmail } from './notifications-preferences.ts'
import type postgres from 'postgres'

/** What became of a notification's e-mail when it was made. */
export type EmailDecision = 'unavailable' | 'opted_out' | 'queued'

export interface NotificationRow {
  id: string
  userId: string
  kind: NotificationKind
  data: Record<string, unknown>
  email: EmailDecision
  /** The queued mail's status (null unless `email` is `queued`). */
  mailStatus: MailStatus | null
  mailSentAt: Date | null
  createdAt: Date
  readAt: Date | null
}

const ROW = (sql: Db) => sql`
  n.id, n.user_id as "userId", n.kind, n.data, n.email, m.status as "mailStatus", m.sent_at as "mailSentAt",
  n.created_at as "createdAt", n.read_at as "readAt"`

export interface NewNotification {
  userId: string
  kind: NotificationKind
  data: Record<string, unknown>
  /** One notification per cause: a second `record` with the same key for the user is ignored. */
  dedupeKey?: string
}

/**
 * Record a notification in `tx`, and queue its e-mail when `mailAvailable` (SMTP_HOST set) and
 * the user wants this kind by e-mail (security kinds: always). `announced`: the caller emits
 * the `notification` event in this same transaction (the notifier's turn); otherwise a NOTIFY
 * at commit has the user's notifier announce it. Undefined when the dedupe key was used already.
 */
export const record = timed('notifications.record', async function record(tx: Db, n: NewNotification, opts: { mailAvailable: boolean; announced?: boolean }): Promise<NotificationRow | undefined> {
  const email: EmailDecision = !opts.mailAvailable ? 'unavailable' : (await wantsEmail(tx, n.userId, n.kind)) ? 'queued' : 'opted_out'
  const id = Bun.randomUUIDv7()
  const mailId = email === 'queued' ? Bun.randomUUIDv7() : null
  const [row] = await tx<{ createdAt: Date }[]>`
    insert into notifications (id, user_id, kind, data, dedupe_key, email, mail_id, announced_at)
    values (${id}, ${n.userId}, ${n.kind}, ${tx.json(n.data as postgres.JSONValue)}, ${n.dedupeKey ?? null}, ${email}, ${mailId}, ${opts.announced ? new Date() : null})
    on conflict (user_id, dedupe_key) where dedupe_key is not null do nothing
    returning created_at as "createdAt"`
  if (!row) return undefined
  if (mailId) await queueUserMail(tx, n.userId, { id: mailId, kind: n.kind, data: n.data })
  if (!opts.announced) await notifyCommitted(tx, { u: n.userId, n: id })
  return { id, userId: n.userId, kind: n.kind, data: n.data, email, mailStatus: mailId ? 'pending' : null, mailSentAt: null, createdAt: row.createdAt, readAt: null }
})

// ---- reading -----------------------------------------------------------------------------

/** The keyset of the list order: unread first (`r` 0), then newest first. */
interface ListCursor {
  r: 0 | 1
  t: string
  id: string
}

function decodeCursor(text: string | undefined): ListCursor | undefined {
  if (text === undefined || text === '') return undefined
  try {
    const c = JSON.parse(Buffer.from(text, 'base64url').toString('utf8')) as ListCursor
    if ((c.r === 0 || c.r === 1) && typeof c.t === 'string' && /^\d{4}-\d\d-\d\d[ T][\d:.]+([+-]\d\d(:?\d\d)?|Z)$/.test(c.t) && typeof c.id === 'string' && /^[0-9a-f-]{36}$/i.test(c.id)) return c
  } catch {
    // the error below
  }
  throw new ValidationError('Validation failed', [{ field: 'cursor', message: 'Invalid cursor' }])
}

/** A page of the user's notifications: unread first, newest first within each; `unread` keeps only those. */
export const listNotifications = timed('notifications.listNotifications', async function listNotifications(
  sql: Db,
  userId: string,
  o: { limit: number; cursor?: string; unread?: boolean },
): Promise<{ items: NotificationRow[]; nextCursor: string | null }> {
  const c = decodeCursor(o.cursor)
  const rows = await sql<(NotificationRow & { cursorAt: string; isRead: boolean })[]>`
    select ${ROW(sql)}, n.created_at::text as "cursorAt", (n.read_at is not null) as "isRead"
    from notifications n left join notification_mails m on m.id = n.mail_id
    where n.user_id = ${userId}
      ${o.unread ? sql`and n.read_at is null` : sql``}
      ${c ? sql`and ((n.read_at is not null)::int > ${c.r} or ((n.read_at is not null)::int = ${c.r} and (n.created_at, n.id) < (${c.t}::text::timestamptz, ${c.id}::uuid)))` : sql``}
    order by (n.read_at is not null), n.created_at desc, n.id desc
    limit ${o.limit + 1}`
  const items = rows.slice(0, o.limit)
  const last = items[items.length - 1]
  const nextCursor = rows.length > o.limit && last ? Buffer.from(JSON.stringify({ r: last.isRead ? 1 : 0, t: last.cursorAt, id: last.id })).toString('base64url') : null
  return { items: items.map(({ cursorAt: _c, isRead: _r, ...n }) => n), nextCursor }
})

// ---- the notifier's writes -----------------------------------------------------------------

/**
 * Mark the user's notifications `ids` read (those already read stay as they were), all or none:
 * when any id is not one of the user's, nothing changes and the ids that are not are returned.
 */
export const markRead = timed('notifications.markRead', async function markRead(tx: Db, userId: string, ids: string[]): Promise<{ read: NotificationRow[] } | { missing: string[] }> {
  const wanted = [...new Set(ids)]
  const found = await tx<{ id: string }[]>`select id from notifications where user_id = ${userId} and id = any(${wanted}::uuid[]) for update`
  const have = new Set(found.map((r) => r.id))
  const missing = wanted.filter((id) => !have.has(id))
  if (missing.length > 0) return { missing }
  const read = await tx<NotificationRow[]>`
    with n as (
      update notifications set read_at = coalesce(read_at, now()) where user_id = ${userId} and id = any(${wanted}::uuid[])
      returning *
    )
    select ${ROW(tx)} from n left join notification_mails m on m.id = n.mail_id order by n.created_at desc, n.id desc`
  return { read }
})

/** Mark all of the user's unread notifications read; how many were. */
export const markAllRead = timed('notifications.markAllRead', async function markAllRead(tx: Db, userId: string): Promise<number> {
  const res = await tx`update notifications set read_at = now() where user_id = ${userId} and read_at is null`
  return res.count
})

/** The user's notifications not yet announced (oldest first, at most `limit`), marked announced. */
export const takeUnannounced = timed('notifications.takeUnannounced', async function takeUnannounced(tx: Db, userId: string, limit: number): Promise<NotificationRow[]> {
  return tx<NotificationRow[]>`
    with n as (
      update notifications set announced_at = now()
      where id in (select id from notifications where user_id = ${userId} and announced_at is null order by created_at limit ${limit})
      returning *
    )
    select ${ROW(tx)} from n left join notification_mails m on m.id = n.mail_id order by n.created_at`
})

// ---- the notifier's cursor -----------------------------------------------------------------

/** How far the user's notifier has read `user:<id>`, and whether its storage warning is out. */
export interface NotifierCursor {
  seq: number
  storageWarned: boolean
}

export const loadCursor = timed('notifications.loadCursor', async function loadCursor(sql: Db, userId: string): Promise<NotifierCursor> {
  const [row] = await sql<NotifierCursor[]>`select seq, storage_warned as "storageWarned" from notification_cursors where user_id = ${userId}`
  return row ?? { seq: 0, storageWarned: false }
})

export function saveCursor(tx: Db, userId: string, c: NotifierCursor) {
  return tx`
    insert into notification_cursors (user_id, seq, storage_warned) values (${userId}, ${c.seq}, ${c.storageWarned})
    on conflict (user_id) do update set seq = excluded.seq, storage_warned = excluded.storage_warned`
}

/**
 * Users whose notifier has something to do: events on `user:<id>` past its cursor, or
 * notifications not announced yet. For the sweep that catches what live triggers missed.
 */
export const usersBehind = timed('notifications.usersBehind', async function usersBehind(sql: Db, limit: number): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`
    select u.id from actor_outbox_topics t
      join users u on t.topic = 'user:' || u.id::text
      left join notification_cursors c on c.user_id = u.id
    where t.topic like 'user:%' and t.seq > coalesce(c.seq, 0)
    union
    select distinct user_id from notifications where announced_at is null
    limit ${limit}`
  return rows.map((r) => r.id)
})
