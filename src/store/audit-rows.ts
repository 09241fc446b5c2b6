/**
 * The audit log's statements (tables audit_events, audit_chain, audit_checkpoints), issued only
 * by its one writer, ./audit.ts (AuditLog), and the retention actor's `removeBefore`. Those of
 * audit_pending are in ./audit-pending.ts.
 */
import type { AuditRow, ChainHead } from './audit-chain.ts'
import { timed, type Db } from './db.ts'

export const readHead = timed('audit.readHead', async function readHead(sql: Db): Promise<ChainHead> {
  const [row] = await sql<ChainHead[]>`select seq, hash from audit_chain`
  return row!
})

export const lockHead = timed('audit.lockHead', async function lockHead(sql: Db): Promise<ChainHead> {
  const [row] = await sql<ChainHead[]>`select seq, hash from audit_chain for update`
  return row!
})

export async function emailsOf(sql: Db, ids: string[]): Promise<{ id: string; email: string }[]> {
  return sql<{ id: string; email: string }[]>`select id, email from users where id = any(${ids}::uuid[])`
}

/**
 * The rows as one JSON text parameter (expanded with json_to_recordset): one statement for any
 * number. Text cast to json, not jsonb: PostgreSQL only checks it, rather than building a jsonb
 * value it would take apart again at once.
 */
function rowsJson(rows: readonly AuditRow[]): string {
  return JSON.stringify(
    rows.map((r) => ({
      seq: r.seq,
      id: r.id,
      at: r.at.toISOString(),
      actor_id: r.actorId,
      actor_email: r.actorEmail,
      org_id: r.orgId,
      action: r.action,
      target_type: r.targetType,
      target_id: r.targetId,
      outcome: r.outcome,
      status: r.status,
      ip: r.ip,
      user_agent: r.userAgent,
      request_id: r.requestId,
      detail: r.detail,
      prev_hash: r.prevHash,
      hash: r.hash,
    })),
  )
}

const INSERT_COLUMNS = (sql: Db) => sql`
  insert into audit_events (seq, id, at, actor_id, actor_email, org_id, action, target_type, target_id, outcome, status, ip, user_agent, request_id, detail, prev_hash, hash)`
const RECORDSET = (sql: Db, rows: readonly AuditRow[]) => sql`
  json_to_recordset(${rowsJson(rows)}::text::json) as r (seq int8, id uuid, at timestamptz, actor_id uuid, actor_email text, org_id uuid, action text, target_type text,
    target_id text, outcome text, status int2, ip text, user_agent text, request_id text, detail jsonb, prev_hash text, hash text)`

/**
 * A common table expression after `moved`: delete the pending events of the requests `settles`
 * (their keys) if the head moved (nothing when there are none).
 */
const settled = (sql: Db, settles: readonly string[]) =>
  settles.length ? sql`, settled as (delete from audit_pending where key = any(${settles}::uuid[]) and exists (select 1 from moved))` : sql``

/**
 * Insert `rows` and move the head to `next`, if the head is still `expected`; false when it
 * moved. The pending events of the requests `settles` (their keys) are deleted with them.
 */
export const appendIfHead = timed('audit.append', async function appendIfHead(sql: Db, expected: ChainHead, rows: readonly AuditRow[], next: ChainHead, settles: readonly string[] = []): Promise<boolean> {
  const result = await sql`
    with moved as (
      update audit_chain set seq = ${next.seq}, hash = ${next.hash}
      where singleton and seq = ${expected.seq} and hash = ${expected.hash}
      returning 1
    )${settled(sql, settles)}
    ${INSERT_COLUMNS(sql)}
    select r.* from ${RECORDSET(sql, rows)}
    where exists (select 1 from moved)`
  return result.count === rows.length
})

/**
 * Insert `rows` and move the head to `next`: the caller holds the head's lock (`lockHead`).
 * The pending events of the requests `settles` (their keys) are deleted in the same statement.
 */
export const insertLocked = timed('audit.appendLocked', async function insertLocked(tx: Db, rows: readonly AuditRow[], next: ChainHead, settles: readonly string[] = []): Promise<void> {
  await tx`
    with moved as (update audit_chain set seq = ${next.seq}, hash = ${next.hash} where singleton returning 1)${settled(tx, settles)}
    ${INSERT_COLUMNS(tx)}
    select r.* from ${RECORDSET(tx, rows)}
    where exists (select 1 from moved)`
})

/**
 * Retention: remove the oldest events up to (not past) the first one at or after `cutoff` —
 * a prefix of the chain, at most `limit` events — and record the last one removed as a
 * checkpoint, in the same statement. Returns how many were removed (0: nothing older).
 */
export const removeBefore = timed('audit.removeBefore', async function removeBefore(tx: Db, cutoff: Date, limit: number): Promise<number> {
  const [row] = await tx<{ removed: number }[]>`
    with oldest as (
      select seq, at from audit_events order by seq limit ${limit}
    ), doomed as (
      -- The prefix before the first event at or after the cutoff (times follow seq only
      -- nearly: a transaction's event may carry a time a little before an earlier seq's).
      select seq from oldest where seq < coalesce((select min(seq) from oldest where at >= ${cutoff}), ${Number.MAX_SAFE_INTEGER})
    ), gone as (
      delete from audit_events e using doomed d where e.seq = d.seq returning e.seq, e.hash, e.at
    ), checkpoint as (
      insert into audit_checkpoints (seq, hash, at, removed)
      select seq, hash, at, (select count(*) from gone) from gone order by seq desc limit 1
      returning removed
    )
    select coalesce((select removed from checkpoint), 0)::int as removed`
  return row!.removed
})
