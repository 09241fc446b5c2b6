/**
 * Durable reminders (table actor_reminders): a message to deliver to an actor once it is
 * due. The runtime deletes a reminder in the transaction of the turn it triggered.
 */
import type postgres from 'postgres'
import type { Db } from './db.ts'

export interface Reminder {
  id: string
  shard: number
  kind: string
  actorId: string
  dueAt: Date
  message: unknown
}

export function insertReminders(sql: Db, reminders: readonly Reminder[]) {
  const json = asJson(
    reminders.map((r) => ({ id: r.id, shard: r.shard, kind: r.kind, actor_id: r.actorId, due_at: r.dueAt.toISOString(), message: r.message })),
  )
  return sql`
    insert into actor_reminders (id, shard, kind, actor_id, due_at, message)
    select id, shard, kind, actor_id, due_at, message
    from jsonb_to_recordset(${sql.json(json)}) as r (id uuid, shard int, kind text, actor_id text, due_at timestamptz, message jsonb)`
}

/** Reminders of `shards` that are due, oldest first. */
export async function dueReminders(sql: Db, shards: readonly number[], limit = 500): Promise<Reminder[]> {
  if (shards.length === 0) return []
  return sql<Reminder[]>`
    select id, shard, kind, actor_id as "actorId", due_at as "dueAt", message
    from actor_reminders
    where shard = any(${[...shards]}::int[]) and due_at <= now()
    order by due_at limit ${limit}`
}

export function deleteReminders(sql: Db, ids: readonly string[]) {
  return sql`delete from actor_reminders where id = any(${[...ids]}::uuid[])`
}

export async function countReminders(sql: Db, kind: string, actorId: string): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from actor_reminders where kind = ${kind} and actor_id = ${actorId}`
  return row!.n
}

/** Rows travel as one jsonb parameter (expanded with jsonb_to_recordset): one statement for any number of rows. */
function asJson(rows: object[]): postgres.JSONValue {
  return rows as postgres.JSONValue
}
