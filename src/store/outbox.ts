/**
 * The outbox (tables actor_outbox, actor_outbox_topics): events committed by actor turns,
 * numbered per topic without gaps. Subscribers get them after commit; a subscriber that was
 * away resumes with readOutbox(topic, lastSeqSeen).
 */
import type postgres from 'postgres'
import type { Db } from './db.ts'

export interface OutboxEvent {
  topic: string
  seq: number
  type: string
  data: unknown
  at: Date
}

export type NewOutboxEvent = Omit<OutboxEvent, 'seq'>

/**
 * Append `events` (in order) and return them numbered. One statement however many events and
 * topics: the per-topic counters are bumped in topic order, so concurrent transactions that
 * share topics lock them in the same order and cannot deadlock each other.
 */
export async function appendOutbox(sql: Db, events: readonly NewOutboxEvent[]): Promise<OutboxEvent[]> {
  if (events.length === 0) return []
  const json = asJson(events.map((e, ord) => ({ topic: e.topic, type: e.type, data: e.data ?? null, at: e.at.toISOString(), ord })))
  const last = await sql<{ topic: string; seq: number }[]>`
    with ev as (
      select * from jsonb_to_recordset(${sql.json(json)}) as e (topic text, type text, data jsonb, at timestamptz, ord int)
    ), counts as (
      select topic, count(*)::int8 as n from ev group by topic
    ), bumped as (
      insert into actor_outbox_topics as t (topic, seq)
      select topic, n from counts order by topic
      on conflict (topic) do update set seq = t.seq + excluded.seq
      returning t.topic, t.seq
    ), inserted as (
      insert into actor_outbox (topic, seq, type, data, at)
      select ev.topic, b.seq - c.n + row_number() over (partition by ev.topic order by ev.ord), ev.type, ev.data, ev.at
      from ev join bumped b on b.topic = ev.topic join counts c on c.topic = ev.topic
      returning 1
    )
    select topic, seq from bumped`
  // Each topic's events take the numbers (last - n, last], in the order they were emitted.
  const next = new Map<string, number>()
  const count = new Map<string, number>()
  for (const e of events) count.set(e.topic, (count.get(e.topic) ?? 0) + 1)
  for (const row of last) next.set(row.topic, row.seq - count.get(row.topic)! + 1)
  return events.map((e) => {
    const seq = next.get(e.topic)!
    next.set(e.topic, seq + 1)
    return { topic: e.topic, seq, type: e.type, data: e.data ?? null, at: e.at }
  })
}

/** Events of `topic` with a sequence number above `afterSeq`, oldest first. */
export async function readOutbox(sql: Db, topic: string, afterSeq: number, limit = 1000): Promise<OutboxEvent[]> {
  return sql<OutboxEvent[]>`
    select topic, seq, type, data, at from actor_outbox
    where topic = ${topic} and seq > ${afterSeq}
    order by seq limit ${limit}`
}

/** The last sequence number given out for `topic` (0 when it has none). */
export async function lastOutboxSeq(sql: Db, topic: string): Promise<number> {
  const [row] = await sql<{ seq: number }[]>`select seq from actor_outbox_topics where topic = ${topic}`
  return row?.seq ?? 0
}

/** Delete up to `limit` events committed before `before`; returns how many went. */
export async function pruneOutbox(sql: Db, before: Date, limit = 10_000): Promise<number> {
  const res = await sql`
    delete from actor_outbox where ctid in (select ctid from actor_outbox where at < ${before} limit ${limit})`
  return res.count
}

/** Rows travel as one jsonb parameter (expanded with jsonb_to_recordset): one statement for any number of rows. */
function asJson(rows: object[]): postgres.JSONValue {
  return rows as postgres.JSONValue
}
