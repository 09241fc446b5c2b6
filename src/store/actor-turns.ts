/**
 * The runtime's records of committed turns, written in one statement for any number of
 * turns: their inbox rows (actor_inbox) and their outbox events (actor_outbox, numbered per
 * topic through actor_outbox_topics), and what their messages carried (`also`: the audit
 * log's statement for audit_pending, src/store/audit-pending.ts). One statement rather than one
 * per table, because on a group commit the fixed cost of a statement is most of the cost of
 * a row.
 */
import type postgres from 'postgres'
import type { Db } from './db.ts'
import type { InboxEntry } from './actor-inbox.ts'
import type { NewOutboxEvent, OutboxEvent } from './outbox.ts'

export interface TurnRecords {
  inbox: readonly InboxEntry[]
  events: readonly NewOutboxEvent[]
  /** One more data-modifying common table expression (`name as (insert …)`) for the same statement: the turns' stamps. */
  also?: postgres.PendingQuery<postgres.Row[]>
  /**
   * The turns' fencing check (actor-shards.ts fenceCall), made before anything is written:
   * in the inbox insert's FROM list when the turns have no events or stamps (the common turn,
   * one statement fewer), else as a statement of its own sent first. Either way before the
   * topic rows are locked, so a turn never holds a row while it waits behind a shard's claim.
   */
  fence?: postgres.PendingQuery<postgres.Row[]>
}

/**
 * Insert the inbox rows and append the events, in order; the statement is sent at once (the
 * runtime pipelines COMMIT behind it). Resolves with the events numbered. A duplicate inbox
 * key fails it (SQLSTATE 23505 on actor_inbox_pkey), and with it the transaction; so does a
 * stale shard epoch (QXF01) when `fence` is given.
 *
 * Each topic's counter is bumped once by the number of its events, in topic order (so
 * concurrent transactions sharing topics lock them in the same order and cannot deadlock);
 * the k-th event of a topic with n events takes number last - n + k.
 */
export function recordTurns(sql: Db, records: TurnRecords): Promise<OutboxEvent[]> {
  if (records.events.length === 0 && !records.also) return insertInbox(sql, records.inbox, records.fence)
  const fenced = records.fence ? sql`select ${records.fence}`.execute() : undefined
  const inbox = records.inbox.map((e) => ({ kind: e.kind, actor_id: e.actorId, message_id: e.messageId, reply: e.reply ?? null }))
  const count = new Map<string, number>()
  for (const e of records.events) count.set(e.topic, (count.get(e.topic) ?? 0) + 1)
  const seen = new Map<string, number>()
  const events = records.events.map((e) => {
    const k = (seen.get(e.topic) ?? 0) + 1
    seen.set(e.topic, k)
    return { topic: e.topic, n: count.get(e.topic)!, k, type: e.type, data: e.data ?? null, at: e.at.toISOString() }
  })
  const query = sql<{ topic: string; seq: number }[]>`
    with inbox as (
      insert into actor_inbox (kind, actor_id, message_id, reply)
      select kind, actor_id, message_id, reply
      from jsonb_to_recordset(${sql.json(inbox as postgres.JSONValue)}) as r (kind text, actor_id text, message_id text, reply jsonb)
    ), e as (
      select * from jsonb_to_recordset(${sql.json(events as postgres.JSONValue)})
        as e (topic text, n int8, k int8, type text, data jsonb, at timestamptz)
    ), topics as (
      insert into actor_outbox_topics as t (topic, seq)
      select distinct on (topic) topic, n from e order by topic
      on conflict (topic) do update set seq = t.seq + excluded.seq
      returning t.topic, t.seq
    ), appended as (
      insert into actor_outbox (topic, seq, type, data, at)
      select e.topic, t.seq - e.n + e.k, e.type, e.data, e.at from e join topics t on t.topic = e.topic
    )${records.also ? sql`, ${records.also}` : sql``}
    select topic, seq from topics`
  const numbered = query.execute().then((rows) => {
    const last = new Map(rows.map((r) => [r.topic, r.seq]))
    return records.events.map((e, i) => ({
      topic: e.topic,
      seq: last.get(e.topic)! - events[i]!.n + events[i]!.k,
      type: e.type,
      data: e.data ?? null,
      at: e.at,
    }))
  })
  if (!fenced) return numbered
  numbered.catch(() => {})
  // The fence's failure first: it is why the transaction aborted.
  return fenced.then(() => numbered)
}

/**
 * Turns with no events: their inbox rows alone, from arrays (cheaper for the server to run
 * than the general statement's JSON and common table expressions). The fencing call sits in
 * the FROM list beside the rows, which are never none, so it runs before the first insert.
 */
function insertInbox(sql: Db, inbox: readonly InboxEntry[], fence?: postgres.PendingQuery<postgres.Row[]>): Promise<OutboxEvent[]> {
  const replies = inbox.map((e) => (e.reply === undefined || e.reply === null ? null : JSON.stringify(e.reply)))
  return sql`
    insert into actor_inbox (kind, actor_id, message_id, reply)
    select r.kind, r.actor_id, r.message_id, r.reply::jsonb
    from ${fence ? sql`${fence} as fence,` : sql``}
      unnest(${inbox.map((e) => e.kind)}::text[], ${inbox.map((e) => e.actorId)}::text[], ${inbox.map((e) => e.messageId)}::text[], ${replies}::text[])
        as r (kind, actor_id, message_id, reply)`
    .execute()
    .then(() => [])
}
