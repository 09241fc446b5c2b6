/**
 * The actor inbox (table actor_inbox): one row per applied message, written in the same
 * transaction as the turn, so a redelivered message is recognised and answered with the
 * reply it got the first time instead of being applied again.
 */
import type postgres from 'postgres'
import type { Db } from './db.ts'

export interface InboxKey {
  kind: string
  actorId: string
  messageId: string
}

export interface InboxEntry extends InboxKey {
  reply: unknown
}

/** The entries among `keys` that were already applied. */
export function findInbox(sql: Db, keys: readonly InboxKey[]) {
  const json = asJson(keys.map((k) => ({ kind: k.kind, actor_id: k.actorId, message_id: k.messageId })))
  return sql<InboxEntry[]>`
    select i.kind, i.actor_id as "actorId", i.message_id as "messageId", i.reply
    from jsonb_to_recordset(${sql.json(json)}) as k (kind text, actor_id text, message_id text)
    join actor_inbox i on i.message_id = k.message_id and i.kind = k.kind and i.actor_id = k.actor_id`
}

/** Delete up to `limit` entries recorded before `before`; returns how many went. */
export async function pruneInbox(sql: Db, before: Date, limit = 10_000): Promise<number> {
  const res = await sql`
    delete from actor_inbox where ctid in (select ctid from actor_inbox where at < ${before} limit ${limit})`
  return res.count
}

/** Rows travel as one jsonb parameter (expanded with jsonb_to_recordset): one statement for any number of rows. */
function asJson(rows: object[]): postgres.JSONValue {
  return rows as postgres.JSONValue
}
