/**
 * Generic actor state (table actor_state): kinds that define no load/persist of their own
 * keep their state here as one jsonb document per actor.
 */
import type postgres from 'postgres'
import type { Db } from './db.ts'

export async function loadActorState(sql: Db, kind: string, actorId: string): Promise<unknown> {
  const [row] = await sql<{ state: unknown }[]>`select state from actor_state where kind = ${kind} and actor_id = ${actorId}`
  return row?.state
}

export function saveActorState(sql: Db, kind: string, actorId: string, state: unknown) {
  return sql`
    insert into actor_state (kind, actor_id, state) values (${kind}, ${actorId}, ${sql.json(state as postgres.JSONValue)})
    on conflict (kind, actor_id) do update set state = excluded.state, updated_at = now()`
}

/** Save the states of several actors of `kind` in one statement (ids distinct). */
export function saveActorStates(sql: Db, kind: string, entries: readonly { id: string; state: unknown }[]) {
  const rows = entries.map((e) => ({ actor_id: e.id, state: e.state }))
  return sql`
    insert into actor_state (kind, actor_id, state)
    select ${kind}, actor_id, state from jsonb_to_recordset(${sql.json(rows as postgres.JSONValue)}) as r (actor_id text, state jsonb)
    on conflict (kind, actor_id) do update set state = excluded.state, updated_at = now()`
}
