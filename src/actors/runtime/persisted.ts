/**
 * Turn transactions, committed in groups.
 *
 * A turn is one message applied to one actor: its handler runs inside a transaction that also
 * writes the kind's state, an inbox row keyed by (actor, message id), the outbox events (with
 * per-topic sequence numbers) and the reminders it scheduled; after commit the caller gets the
 * reply and subscribers get the events. Ready turns of different actors share a transaction
 * ("group commit", as PostgreSQL does with WAL flushes): one BEGIN, one fencing check, one
 * multi-row insert per runtime table and one COMMIT for the group, which is how a persisted
 * turn gets cheaper than a bare single-row UPDATE transaction. Isolation between the turns of
 * a group comes from savepoints: a handler that throws, or a turn whose writes fail, is rolled
 * back alone and the others commit.
 *
 * Statements are pipelined on a reserved connection (postgres.js sends a query as soon as it
 * is executed, without waiting for the previous one): BEGIN and the fencing check go out
 * before the handlers run, and a lone turn whose writes are single statements sends them
 * together with its COMMIT, so a turn costs one round trip plus the WAL flush.
 *
 * Duplicates: the inbox row's primary key makes a redelivered message fail its insert, which
 * rolls the turn back; the caller then gets the reply stored by the first application. The
 * handler of a redelivered message may thus run again — the design card requires side effects
 * to be idempotent — but its state, events and reply are the first application's.
 */
import type postgres from 'postgres'
import type { Logger } from '../../core/logger.ts'
import { PG, pgCode } from '../../core/errors.ts'
import type { Db, Sql } from '../../store/db.ts'
import { fence, FENCED_SQLSTATE, shardEpochs } from '../../store/actor-shards.ts'
import { findInbox, insertInbox, type InboxKey } from '../../store/actor-inbox.ts'
import { appendOutbox, type NewOutboxEvent, type OutboxEvent } from '../../store/outbox.ts'
import { deleteReminders, insertReminders, type Reminder } from '../../store/reminders.ts'
import type { TurnContext } from './define.ts'
import type { ActorInstance, Envelope } from './instance.ts'
import type { RuntimeMetrics } from './metrics.ts'

type Conn = postgres.ReservedSql<{}>

/** What a handler recorded besides its state and reply; applied only if its turn commits. */
export interface TurnEffects {
  events: NewOutboxEvent[]
  reminders: Reminder[]
  sends: { kind: string; id: string; message: unknown; messageId?: string }[]
  background: ((signal: AbortSignal) => Promise<void>)[]
}

export type TurnOutcome =
  | { type: 'applied'; state: unknown; stateChanged: boolean; reply: unknown; events: OutboxEvent[]; effects: TurnEffects }
  /** The message had been applied before: this is the reply it got then. */
  | { type: 'duplicate'; reply: unknown }
  /** The handler threw or the turn's writes failed; nothing of the turn was committed.
   * `reload`: the connection failed around COMMIT, so the outcome in SQL is unknown and the
   * in-memory state must be reloaded before the next turn. */
  | { type: 'failed'; error: unknown; reload: boolean }
  /** The fencing check refused the turn: another node owns the actor's shard now. */
  | { type: 'fenced' }
  /** The group was lost for a reason that is not this turn's (another shard was fenced, a
   * deadlock): nothing was committed, the turn can simply run again. */
  | { type: 'retry'; error: unknown }

/** The handler's view of its turn, for the context the system builds around it. */
export interface TurnScope {
  readonly effects: TurnEffects
  /** The transaction; first use opens the turn's savepoint. */
  readonly tx: Db
  /** False once the handler has returned: the context refuses to record anything after. */
  readonly open: boolean
}

export type ContextFactory = (instance: ActorInstance, env: Envelope, scope: TurnScope) => TurnContext<unknown>

export interface CommitterOptions {
  maxBatchTurns: number
  commitConcurrency: number
}

interface Pending {
  instance: ActorInstance
  env: Envelope
  resolve(outcome: TurnOutcome): void
}

interface Work extends Pending {
  status: 'waiting' | 'ok' | 'failed' | 'duplicate'
  hasState: boolean
  state: unknown
  reply: unknown
  error: unknown
  effects: TurnEffects
  /** Written inside its own savepoint already (the handler used ctx.tx). */
  written: boolean
  events: OutboxEvent[]
  started: number
}

const noop = () => {}

/** postgres.js queries are lazy promises with an `execute` method; async functions return plain promises. */
function isQuery(x: unknown): x is postgres.PendingQuery<any> {
  return x instanceof Promise && typeof (x as { execute?: unknown }).execute === 'function'
}

function inboxKey(env: Envelope): InboxKey {
  return { kind: env.kind, actorId: env.id, messageId: env.messageId }
}

function isInboxDuplicate(err: unknown): boolean {
  return pgCode(err) === PG.uniqueViolation && (err as { constraint_name?: string }).constraint_name === 'actor_inbox_pkey'
}

export class TurnCommitter {
  #pending: Pending[] = []
  #running = 0
  #scheduled = false
  #idle: PromiseWithResolvers<void> | undefined

  constructor(
    private readonly sql: Sql,
    private readonly context: ContextFactory,
    private readonly opts: CommitterOptions,
    private readonly metrics: RuntimeMetrics,
    private readonly logger: Logger,
  ) {}

  /** Run one turn of `instance` for `env`; resolves once it is committed or rolled back. */
  submit(instance: ActorInstance, env: Envelope): Promise<TurnOutcome> {
    const { promise, resolve } = Promise.withResolvers<TurnOutcome>()
    this.#pending.push({ instance, env, resolve })
    // Turns that become ready in the same tick (typically: the callers a previous group
    // answered, asking again) join one group.
    if (!this.#scheduled) {
      this.#scheduled = true
      queueMicrotask(() => this.#flush())
    }
    return promise
  }

  /** Resolves when no turn is waiting or in flight. */
  idle(): Promise<void> {
    if (this.#running === 0 && this.#pending.length === 0) return Promise.resolve()
    return (this.#idle ??= Promise.withResolvers<void>()).promise
  }

  #flush(): void {
    this.#scheduled = false
    while (this.#pending.length > 0 && this.#running < this.opts.commitConcurrency) {
      // Spread what is ready over the free connections, so both the database's cores and the
      // WAL flushes of concurrent groups overlap; a backlog then drains in full groups.
      const free = this.opts.commitConcurrency - this.#running
      const size = Math.min(this.opts.maxBatchTurns, Math.ceil(this.#pending.length / free))
      const group = this.#pending.splice(0, size)
      this.#running++
      void this.#run(group).finally(() => {
        this.#running--
        if (this.#pending.length > 0) this.#flush()
        else if (this.#running === 0) {
          this.#idle?.resolve()
          this.#idle = undefined
        }
      })
    }
  }

  async #run(group: Pending[]): Promise<void> {
    this.metrics.batchTurns.observe(group.length)
    let conn: Conn
    try {
      conn = await this.sql.reserve()
    } catch (error) {
      for (const p of group) p.resolve({ type: 'failed', error, reload: false })
      return
    }
    const works: Work[] = group.map((p) => ({
      ...p,
      status: 'waiting',
      hasState: false,
      state: undefined,
      reply: undefined,
      error: undefined,
      effects: { events: [], reminders: [], sends: [], background: [] },
      written: false,
      events: [],
      started: performance.now(),
    }))
    let fenceError: unknown
    let inTransaction = false
    try {
      conn`begin`.catch(noop)
      inTransaction = true
      const shards = works.map((w) => w.instance.shard)
      const epochs = works.map((w) => w.instance.epoch)
      const fenced = fence(conn, shards, epochs).then(noop, (err) => {
        fenceError = err
      })

      for (const w of works) await this.#handle(conn, w)

      const toWrite = works.filter((w) => w.status === 'ok' && !w.written)
      let pipelined: Promise<void> | undefined
      if (toWrite.length > 0) {
        if (works.length === 1) {
          const { done, synchronous } = this.#issueWrites(conn, toWrite)
          // A lone turn whose statements are all out already can send COMMIT right behind
          // them: if one fails, the transaction is aborted and COMMIT answers ROLLBACK.
          if (synchronous) pipelined = done
          else await done
        } else {
          await this.#writeIsolated(conn, toWrite)
        }
      }
      const reminderIds = works.filter((w) => w.env.reminderId && w.status !== 'waiting').map((w) => w.env.reminderId!)
      if (reminderIds.length > 0) deleteReminders(conn, reminderIds).catch(noop)
      const commit = await conn`commit`
      inTransaction = false
      let writeError: unknown
      if (pipelined) await pipelined.catch((err) => (writeError = err))
      await fenced
      if (fenceError) throw fenceError
      if (commit.command !== 'COMMIT') {
        if (writeError && works.length === 1) {
          // The lone turn's own writes failed: that turn failed (or was a duplicate).
          this.#fail(works[0]!, writeError)
          await this.#afterRollback(works)
          await this.#settle(works)
          return
        }
        throw writeError ?? new Error(`turn transaction ended with ${commit.command}`)
      }
      await this.#settle(works)
    } catch (err) {
      if (inTransaction) await conn`rollback`.catch(noop)
      await this.#abort(works, fenceError ?? err)
    } finally {
      conn.release()
    }
  }

  /** Run the handler of one turn, inside the group's transaction. */
  async #handle(conn: Conn, w: Work): Promise<void> {
    let open = true
    let savepoint = false
    const scope: TurnScope = {
      effects: w.effects,
      get tx(): Db {
        if (!open) throw new Error(`ctx.tx of ${w.instance.key} used after its handler returned`)
        if (!savepoint) {
          savepoint = true
          conn`savepoint turn`.catch(noop)
        }
        return conn
      },
      get open() {
        return open
      },
    }
    w.started = performance.now()
    try {
      const result = await w.instance.def.handle(this.context(w.instance, w.env, scope), w.instance.state, w.env.message)
      open = false
      w.status = 'ok'
      if (result && result.state !== undefined) {
        w.hasState = true
        w.state = result.state
      }
      w.reply = result ? result.reply : undefined
    } catch (err) {
      open = false
      w.status = 'failed'
      w.error = err
    }
    if (!savepoint) return
    if (w.status === 'ok') {
      // The handler wrote through ctx.tx: its state, inbox row and events go in the same
      // savepoint, so a failure of any of them rolls back the handler's writes too.
      try {
        await this.#issueWrites(conn, [w]).done
        w.written = true
        conn`release savepoint turn`.catch(noop)
        return
      } catch (err) {
        this.#fail(w, err)
      }
    }
    // Throws if the connection is gone: then the whole group fails.
    await conn`rollback to savepoint turn`
    conn`release savepoint turn`.catch(noop)
  }

  #fail(w: Work, err: unknown): void {
    w.status = isInboxDuplicate(err) ? 'duplicate' : 'failed'
    w.error = err
    w.written = false
  }

  /** Writes of several turns: all at once in one savepoint, and if that fails, one by one. */
  async #writeIsolated(conn: Conn, works: Work[]): Promise<void> {
    conn`savepoint batch`.catch(noop)
    try {
      await this.#issueWrites(conn, works).done
      conn`release savepoint batch`.catch(noop)
      return
    } catch {
      await conn`rollback to savepoint batch`
      conn`release savepoint batch`.catch(noop)
    }
    for (const w of works) {
      conn`savepoint turn`.catch(noop)
      try {
        await this.#issueWrites(conn, [w]).done
        conn`release savepoint turn`.catch(noop)
      } catch (err) {
        this.#fail(w, err)
        await conn`rollback to savepoint turn`
        conn`release savepoint turn`.catch(noop)
      }
    }
  }

  /**
   * Send the writes of `works` (state, inbox, outbox, reminders). `synchronous` tells whether
   * every statement is already on its way (the runtime's own are; a kind's persist is when it
   * returns its query rather than awaiting inside an async function).
   */
  #issueWrites(conn: Conn, works: Work[]): { done: Promise<void>; synchronous: boolean } {
    const all: Promise<unknown>[] = []
    let synchronous = true
    const issue = (q: Promise<unknown>) => {
      // Queries are executed in call order; catch() marks the rejection handled here, and
      // allSettled below still reports it.
      if (isQuery(q)) q.execute()
      else synchronous = false
      q.catch(noop)
      all.push(q)
    }
    try {
      for (const w of works) if (w.hasState) issue(w.instance.def.persist(conn, w.instance.id, w.state))
      issue(insertInbox(conn, works.map((w) => ({ ...inboxKey(w.env), reply: w.reply }))))
      const events = works.flatMap((w) => w.effects.events)
      if (events.length > 0) {
        const numbered = appendOutbox(conn, events).then((out) => {
          let i = 0
          for (const w of works) w.events = out.slice(i, (i += w.effects.events.length))
        })
        all.push(numbered)
        numbered.catch(noop)
      }
      const reminders = works.flatMap((w) => w.effects.reminders)
      if (reminders.length > 0) issue(insertReminders(conn, reminders))
    } catch (err) {
      // A synchronous throw (a reply that is not JSON, a persist that throws before its first
      // await): wait for what was sent, then report it like a failed statement.
      return { done: Promise.allSettled(all).then(() => Promise.reject(err)), synchronous: false }
    }
    const done = Promise.allSettled(all).then((results) => {
      const failed = results.find((r) => r.status === 'rejected')
      if (failed) throw (failed as PromiseRejectedResult).reason
    })
    return { done, synchronous }
  }

  /** After a rolled-back lone turn: a failed reminder is consumed all the same (see reminders.ts). */
  async #afterRollback(works: Work[]): Promise<void> {
    const ids = works.filter((w) => w.env.reminderId && w.status === 'failed').map((w) => w.env.reminderId!)
    if (ids.length > 0) await deleteReminders(this.sql, ids).catch((err) => this.logger.error({ err }, 'could not delete failed reminders'))
  }

  /** Resolve every turn of a committed group. */
  async #settle(works: Work[]): Promise<void> {
    // A redelivered message whose handler now throws (say, "already exists") is still a
    // duplicate: answer with the first application's reply.
    const suspects = works.filter((w) => w.status === 'duplicate' || (w.status === 'failed' && w.env.dedup))
    const stored = new Map<Work, unknown>()
    if (suspects.length > 0) {
      try {
        const rows = await findInbox(this.sql, suspects.map((w) => inboxKey(w.env)))
        for (const w of suspects) {
          const row = rows.find((r) => r.kind === w.env.kind && r.actorId === w.env.id && r.messageId === w.env.messageId)
          if (row) stored.set(w, row.reply)
        }
      } catch (err) {
        this.logger.error({ err }, 'inbox lookup failed')
      }
    }
    const now = performance.now()
    for (const w of works) {
      const kind = w.instance.def.kind
      if (stored.has(w)) {
        this.metrics.turnDuration.observe({ kind, outcome: 'duplicate' }, (now - w.started) / 1000)
        w.resolve({ type: 'duplicate', reply: stored.get(w) })
      } else if (w.status === 'ok') {
        this.metrics.turnDuration.observe({ kind, outcome: 'applied' }, (now - w.started) / 1000)
        w.resolve({ type: 'applied', state: w.state, stateChanged: w.hasState, reply: w.reply, events: w.events, effects: w.effects })
      } else {
        this.metrics.turnDuration.observe({ kind, outcome: 'failed' }, (now - w.started) / 1000)
        w.resolve({ type: 'failed', error: w.error, reload: false })
      }
    }
  }

  /** Resolve every turn of a group that was rolled back as a whole. */
  async #abort(works: Work[], err: unknown): Promise<void> {
    const code = pgCode(err)
    if (code === FENCED_SQLSTATE) {
      this.metrics.fencedBatches.inc()
      const stale = await this.#staleShards(works)
      for (const w of works) w.resolve(stale.has(w.instance.shard) || stale.size === 0 ? { type: 'fenced' } : { type: 'retry', error: err })
      return
    }
    if (code === '40P01' || code === PG.serializationFailure) {
      for (const w of works) w.resolve({ type: 'retry', error: err })
      return
    }
    this.logger.error({ err }, 'turn transaction failed')
    for (const w of works) {
      this.metrics.turnDuration.observe({ kind: w.instance.def.kind, outcome: 'failed' }, (performance.now() - w.started) / 1000)
      w.resolve({ type: 'failed', error: err, reload: true })
    }
  }

  /** Shards of the group whose epoch moved on (looked up after a fenced rollback). */
  async #staleShards(works: Work[]): Promise<Set<number>> {
    const shards = [...new Set(works.map((w) => w.instance.shard))]
    try {
      const current = new Map((await shardEpochs(this.sql, shards)).map((r) => [r.shard, r.epoch]))
      return new Set(works.filter((w) => current.get(w.instance.shard) !== w.instance.epoch).map((w) => w.instance.shard))
    } catch {
      return new Set(shards)
    }
  }
}
