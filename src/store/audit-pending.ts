/**
 * The audit log's pending events (table audit_pending, sql/0014_audit_pending.sql): a
 * request's event as the actor turn that commits its change inserts it, before it joins the
 * chain. What AuditLog (./audit.ts, their one reader and the only one to delete them) hands
 * the actor runtime, and their statements.
 */
import type postgres from 'postgres'
import { clean, link, type AuditEvent } from './audit-chain.ts'
import { insertLocked, lockHead } from './audit-rows.ts'
import { timed, type Db, type Sql } from './db.ts'

/**
 * What a message from outside any turn carries into the turn that applies it (the actor
 * runtime's `stamps` option; src/actors/runtime/config.ts): the request's pending event.
 */
export interface AuditTurnStamps {
  take(kind: string, id: string): PendingAudit | undefined
  insert(conn: Db, stamps: unknown[]): postgres.PendingQuery<postgres.Row[]>
}

/** How old a pending event is before `recoverPending` takes its request for dead. */
export const PENDING_GRACE_MS = 60_000

/** A request's event as a turn commits it, before it joins the chain (sql/0014_audit_pending.sql). */
export interface PendingAudit {
  /** The request's (every turn it set off carries the same). */
  key: string
  /** The event, its time as ISO 8601 (JSON: it may travel to another node with the message). */
  event: Record<string, unknown>
}

/**
 * The insert of the pending events of the turns committing on `conn`, as one data-modifying
 * common table expression: the runtime adds it to the statement that writes the turns' inbox
 * rows and events (src/store/actor-turns.ts), one statement fewer per commit.
 */
export function insertPending(conn: Db, stamps: readonly PendingAudit[]): postgres.PendingQuery<postgres.Row[]> {
  return conn`audit_pending_inserted as (
    insert into audit_pending (key, event)
    select key, event from json_to_recordset(${JSON.stringify(stamps)}::text::json) as r (key uuid, event json))`
}

/** The pending events, inserted on their own (in the transaction of a change a route makes with its own SQL). */
export async function insertPendingNow(tx: Db, stamps: readonly PendingAudit[]): Promise<void> {
  await tx`insert into audit_pending (key, event) select key, event from json_to_recordset(${JSON.stringify(stamps)}::text::json) as r (key uuid, event json)`
}

/**
 * What a store function that runs its own transaction is handed to record the request's
 * pending event in it (AuditLog.pend): `createdId`, the object it makes.
 */
export type Pend = (tx: Db, createdId?: string) => Promise<void>

/** Drop the pending events of requests whose outcome is recorded otherwise (in a transaction of its own). */
export const settlePending = timed('audit.settlePending', async function settlePending(sql: Db, keys: readonly string[]): Promise<void> {
  await sql`delete from audit_pending where key = any(${keys}::uuid[])`
})

/**
 * Drop pending events older than `olderThanMs` whose request's event is in the chain (its id
 * is their key; looked for among the events since a little before the oldest of them).
 * Returns how many rows remain that old: the events of requests never answered.
 */
const dropChained = timed('audit.dropChained', async function dropChained(sql: Db, olderThanMs: number): Promise<number> {
  const [row] = await sql<{ left: number }[]>`
    with old as (
      select key, created_at from audit_pending where created_at < now() - make_interval(secs => ${olderThanMs / 1000})
    ), chained as (
      select e.id from audit_events e
      where e.at >= (select min(created_at) from old) - interval '10 minutes' and e.id in (select key from old)
    ), gone as (
      delete from audit_pending p where p.key in (select id from chained) and p.created_at < now() - make_interval(secs => ${olderThanMs / 1000})
      returning 1
    )
    select ((select count(*) from old) - (select count(*) from gone))::int as left`
  return row!.left
})

/**
 * Pending events older than `olderThanMs` whose request's event is not in the chain, oldest
 * first, at most `limit`, locked (another sweeper skips them): their requests were never
 * answered. The caller holds the chain's lock, so no such event is being written meanwhile.
 */
async function takeOrphans(tx: Db, olderThanMs: number, limit: number): Promise<PendingAudit[]> {
  // One pass over the events since a little before the oldest candidate (an anti-join), not a
  // look-up per row.
  return tx<PendingAudit[]>`
    with candidates as (
      select key, event, created_at from audit_pending
      where created_at < now() - make_interval(secs => ${olderThanMs / 1000})
      order by created_at limit ${limit} for update skip locked
    )
    select c.key, c.event from candidates c
    where not exists (
      select 1 from audit_events e where e.id = c.key and e.at >= (select min(created_at) from candidates) - interval '10 minutes'
    )
    order by c.created_at`
}

/**
 * Chain the pending events older than `olderThanMs` whose request's event is not in the chain
 * (AuditLog.recoverPending): after dropping those that are, `batch` rows at a time, each batch
 * in a transaction holding the chain's lock, one event per request; `emailsOf` fills the
 * actors' e-mails. Returns how many events it chained.
 */
export async function chainOrphans(sql: Sql, olderThanMs: number, batch: number, emailsOf: (tx: Db, events: AuditEvent[]) => Promise<void>): Promise<number> {
  if ((await dropChained(sql, olderThanMs)) === 0) return 0
  let total = 0
  for (;;) {
    const { rows, events } = await sql.begin(async (tx) => {
      const head = await lockHead(tx)
      const rows = await takeOrphans(tx, olderThanMs, batch)
      const first = new Map<string, Record<string, unknown>>()
      for (const r of rows) if (!first.has(r.key)) first.set(r.key, r.event)
      const events = [...first].map(([key, e]) => recovered(key, e))
      if (events.length === 0) return { rows: 0, events: 0 }
      await emailsOf(tx, events)
      const linked = link(head, events.map(clean))
      await insertLocked(tx, linked.rows, linked.head, [...first.keys()])
      return { rows: rows.length, events: events.length }
    })
    total += events
    if (rows < batch) return total
  }
}

/** A pending event as recoverPending records it: what committed, its answer unknown. */
function recovered(key: string, e: Record<string, unknown>): AuditEvent {
  const str = (k: string) => (typeof e[k] === 'string' ? (e[k] as string) : null)
  const at = new Date(str('at') ?? Date.now())
  const detail = e.detail && typeof e.detail === 'object' ? (e.detail as AuditEvent['detail']) : null
  return {
    id: key,
    action: str('action') ?? 'audit.unknown',
    outcome: 'success',
    status: null,
    at: Number.isNaN(at.getTime()) ? new Date() : at,
    actorId: str('actorId'),
    orgId: str('orgId'),
    targetType: str('targetType'),
    targetId: str('targetId'),
    ip: str('ip'),
    userAgent: str('userAgent'),
    requestId: str('requestId'),
    detail: { ...detail, recovered: true },
  }
}

