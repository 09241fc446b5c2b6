/**
 * The statements a turn writes, for one turn or a group (persisted.ts): the kinds' state
 * (persist, or persistMany for several actors of a kind), the inbox rows, numbered outbox
 * events and the stamps its messages carried (config.ts TurnStamps: a request's audit event)
 * in one statement, the reminders scheduled and the one a reminder turn consumes. They are
 * sent pipelined on the turn's reserved connection, each as soon as it is issued.
 */
import type postgres from 'postgres'
import type { InboxKey } from '../../store/actor-inbox.ts'
import { recordTurns } from '../../store/actor-turns.ts'
import type { OutboxEvent } from '../../store/outbox.ts'
import { deleteReminders, insertReminders } from '../../store/reminders.ts'
import type { TurnStamps } from './config.ts'
import type { AnyActorKind } from './define.ts'
import type { ActorInstance, Envelope } from './instance.ts'
import type { TurnEffects, TurnOutcome } from './turn.ts'

export type Conn = postgres.ReservedSql<{}>

const noop = () => {}

/** A turn between its handler and its commit. */
export interface Work {
  instance: ActorInstance
  env: Envelope
  status: 'ok' | 'failed' | 'duplicate'
  hasState: boolean
  state: unknown
  reply: unknown
  error: unknown
  effects: TurnEffects
  events: OutboxEvent[]
  started: number
  /** Group commits this turn lost for another turn's reason (a fenced shard, a deadlock). */
  retries: number
  resolve(outcome: TurnOutcome): void
}

/** postgres.js queries are lazy promises with an `execute` method; async functions return plain promises. */
function isQuery(x: unknown): x is postgres.PendingQuery<any> {
  return x instanceof Promise && typeof (x as { execute?: unknown }).execute === 'function'
}

export function inboxKey(env: Envelope): InboxKey {
  return { kind: env.kind, actorId: env.id, messageId: env.messageId }
}

/**
 * Send the writes of `works`: state, inbox rows and outbox events, reminders (new ones, and
 * the one a reminder turn consumes). `synchronous` tells whether every statement is already
 * on its way: the runtime's own are; a kind's persist is when it returns its query rather
 * than awaiting inside an async function.
 */
export function issueWrites(
  conn: Conn,
  works: Work[],
  stamps?: TurnStamps,
  fence?: postgres.PendingQuery<postgres.Row[]>,
): { done: Promise<void>; synchronous: boolean } {
  const all: Promise<unknown>[] = []
  let synchronous = true
  const issue = (q: Promise<unknown> | null) => {
    // A kind whose turns write their own changes has nothing to persist.
    if (q === null) return
    // execute() sends queries in call order; catch() marks the rejection handled here, and
    // allSettled below still reports it.
    if (isQuery(q)) q.execute()
    else synchronous = false
    q.catch(noop)
    all.push(q)
  }
  try {
    const stamped = stamps ? works.flatMap((w) => (w.env.stamp !== undefined ? [w.env.stamp] : [])) : []
    const numbered = recordTurns(conn, {
      inbox: works.map((w) => ({ ...inboxKey(w.env), reply: w.reply })),
      events: works.flatMap((w) => w.effects.events),
      also: stamped.length > 0 ? stamps!.insert(conn, stamped) : undefined,
      // First, so the fencing lock is taken before the kinds' rows are written.
      fence,
    }).then((out) => {
      let i = 0
      for (const w of works) w.events = out.slice(i, (i += w.effects.events.length))
    })
    numbered.catch(noop)
    all.push(numbered)
    const byKind = new Map<AnyActorKind, Work[]>()
    for (const w of works) if (w.hasState) byKind.set(w.instance.def, [...(byKind.get(w.instance.def) ?? []), w])
    for (const [def, changed] of byKind) {
      if (changed.length > 1 && def.persistMany) issue(def.persistMany(conn, changed.map((w) => ({ id: w.instance.id, state: w.state }))))
      else for (const w of changed) issue(def.persist(conn, w.instance.id, w.state))
    }
    const reminders = works.flatMap((w) => w.effects.reminders)
    if (reminders.length > 0) issue(insertReminders(conn, reminders))
    const consumed = works.flatMap((w) => (w.env.reminderId ? [w.env.reminderId] : []))
    if (consumed.length > 0) issue(deleteReminders(conn, consumed))
  } catch (err) {
    // A synchronous throw (a reply that is not JSON, a persist that throws before its first
    // await): wait for what was sent, then report it like a failed statement.
    const done = Promise.allSettled(all).then(() => Promise.reject(err))
    done.catch(noop)
    return { done, synchronous: false }
  }
  const done = Promise.allSettled(all).then((results) => {
    const failed = results.find((r) => r.status === 'rejected')
    if (failed) throw (failed as PromiseRejectedResult).reason
  })
  // Handled by whoever awaits it, possibly only after COMMIT's answer: not "unhandled" meanwhile.
  done.catch(noop)
  return { done, synchronous }
}
