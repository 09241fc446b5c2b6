/**
 * The outbox (tables actor_outbox, actor_outbox_topics): events committed by actor turns,
 * numbered per topic without gaps. Subscribers get them after commit; a subscriber that was
 * away resumes with readOutbox(topic, lastSeqSeen).
 */
import type { Db } from './db.ts'

export interface OutboxEvent {
  topic: string
  seq: number
  type: string
  data: unknown
  at: Date
}

export type NewOutboxEvent = Omit<OutboxEvent, 'seq'>

/** Events of `topic` with a sequence number above `afterSeq`, oldest first. */
export async function readOutbox(sql: Db, topic: string, afterSeq: number, limit = 1000): Promise<OutboxEvent[]> {
  return sql<OutboxEvent[]>`
    select topic, seq, type, data, at from actor_outbox
    where topic = ${topic} and seq > ${afterSeq}
    order by seq limit ${limit}`
}

/** The last sequence number given out for `topic` (0 when it has none). */
export async function topicHead(sql: Db, topic: string): Promise<number> {
  const [row] = await sql<{ seq: number }[]>`select seq from actor_outbox_topics where topic = ${topic}`
  return row?.seq ?? 0
}

/** Delete up to `limit` events committed before `before`; returns how many went. */
export async function pruneOutbox(sql: Db, before: Date, limit = 10_000): Promise<number> {
  const res = await sql`
    delete from actor_outbox where ctid in (select ctid from actor_outbox where at < ${before} limit ${limit})`
  return res.count
}
