/**
 * Turn transactions.
 *
 * A turn is one message applied to one actor. Its transaction writes the kind's state, an
 * inbox row keyed by (actor, message id), the outbox events (numbered per topic) and the
 * reminders the handler scheduled, after a fencing check of the actor's shard epoch; the
 * caller gets the reply, and subscribers the events, only after COMMIT.
 *
 * Handlers of different actors run concurrently, and outside any transaction until they need
 * one, so a handler waiting on Docker or an LLM holds no connection and delays nobody else:
 *
 * - A handler that never touches `ctx.tx` (the common case: compute the new state, emit,
 *   reply) leaves its writes to a group commit: turns of different actors that finish at about
 *   the same time share one transaction — one BEGIN, one statement for all their inbox rows
 *   and events (which makes the fencing check first: actor-turns.ts), the kinds' state, one
 *   COMMIT and one WAL flush for the group (PostgreSQL's own
 *   group commit, done one level up). If the group's transaction fails, its turns are
 *   committed again one by one (their handlers do not run again: only their writes are
 *   replayed), so only the turn whose writes fail is lost.
 * - A handler that uses `ctx.tx` gets a transaction of its own, begun at its first statement;
 *   the runtime's writes follow in it, and a throw rolls all of it back.
 *
 * Statements are pipelined on a reserved connection (postgres.js sends a query as soon as it
 * is executed): when a kind's persist returns its query, BEGIN, the fencing check, the writes
 * and COMMIT of a group go out in one flight, so a group costs one round trip plus the flush.
 *
 * Duplicates: the inbox row's primary key makes a redelivered message fail its insert, which
 * rolls the turn back; the caller then gets the reply stored by the first application. The
 * handler of a redelivered message may thus run again (the design card requires side effects
 * to be idempotent), but its state, events and reply are those of the first application.
 *
 * The turn's types are in turn.ts; the statements a turn writes are issued by turn-writes.ts.
 */
import type { Logger } from '../../core/logger.ts'
import { PG, pgCode } from '../../core/errors.ts'
import type { Db, Sql } from '../../store/db.ts'
import { fenceCall, FENCED_SQLSTATE, shardEpochs } from '../../store/actor-shards.ts'
import { findInbox } from '../../store/actor-inbox.ts'
import { deleteReminders } from '../../store/reminders.ts'
import { FairSemaphore } from '../../core/fair-semaphore.ts'
import { OwnTransaction } from './transaction.ts'
import type { TurnStamps } from './config.ts'
import type { ActorInstance, Envelope } from './instance.ts'
import type { RuntimeMetrics } from './metrics.ts'
import type { ContextFactory, TurnOutcome, TurnScope } from './turn.ts'
import { inboxKey, issueWrites, type Conn, type Work } from './turn-writes.ts'

export interface CommitterOptions {
  maxBatchTurns: number
  commitConcurrency: number
  stamps?: TurnStamps
}

/** The key of turns' connections in TurnCommitter's semaphore (one class of holder). */
const TURNS = 'turns'

/** A group that lost for someone else's reason is committed again at most this often. */
const MAX_GROUP_RETRIES = 5

const noop = () => {}

/** SQLSTATE deadlock_detected: two groups locked rows of a kind's tables in opposite orders. */
const DEADLOCK_DETECTED = '40P01'

function isInboxDuplicate(err: unknown): boolean {
  return pgCode(err) === PG.uniqueViolation && (err as { constraint_name?: string }).constraint_name === 'actor_inbox_pkey'
}

function isRetryable(err: unknown): boolean {
  const code = pgCode(err)
  return code === DEADLOCK_DETECTED || code === PG.serializationFailure
}

export class TurnCommitter {
  #ready: Work[] = []
  #running = 0
  #inFlight = 0
  #scheduled = false
  #idle: PromiseWithResolvers<void> | undefined

  /**
   * A pool connection for a turn. Connections held by turns (group commits, turns' own
   * transactions) are at most the pool's size less one: a turn that waits for the pool while it
   * holds a connection (a handler reading through the pool after its first ctx.tx statement)
   * then always finds one coming free, however many such turns run at once. The runtime's own
   * follow-up queries never wait for the pool while they hold one (#commitOn).
   */
  readonly #reserve: () => Promise<Conn>

  constructor(
    private readonly sql: Sql,
    private readonly context: ContextFactory,
    private readonly opts: CommitterOptions,
    private readonly metrics: RuntimeMetrics,
    private readonly logger: Logger,
  ) {
    const connections = new FairSemaphore(Math.max(1, (sql.options?.max ?? 10) - 1))
    this.#reserve = async () => {
      await connections.acquire(TURNS)
      let conn: Conn
      try {
        conn = await sql.reserve()
      } catch (err) {
        connections.release(TURNS)
        throw err
      }
      const release = conn.release
      let held = true
      conn.release = () => {
        if (!held) return
        held = false
        release()
        connections.release(TURNS)
      }
      return conn
    }
  }

  /** Run one turn of `instance` for `env`: the handler, then the commit. */
  async run(instance: ActorInstance, env: Envelope): Promise<TurnOutcome> {
    this.#inFlight++
    try {
      return await this.#turn(instance, env)
    } finally {
      if (--this.#inFlight === 0) {
        this.#idle?.resolve()
        this.#idle = undefined
      }
    }
  }

  /** Resolves when no turn is in flight. */
  idle(): Promise<void> {
    if (this.#inFlight === 0) return Promise.resolve()
    return (this.#idle ??= Promise.withResolvers<void>()).promise
  }

  async #turn(instance: ActorInstance, env: Envelope): Promise<TurnOutcome> {
    const own = new OwnTransaction(this.sql, this.#reserve, instance)
    const w: Work = {
      instance,
      env,
      status: 'ok',
      hasState: false,
      state: undefined,
      reply: undefined,
      error: undefined,
      effects: { events: [], reminders: [], sends: [], background: [] },
      events: [],
      started: performance.now(),
      retries: 0,
      resolve: noop,
    }
    let open = true
    const scope: TurnScope = {
      effects: w.effects,
      get tx(): Db {
        if (!open) throw new Error(`ctx.tx of ${instance.key} used after its handler returned`)
        return own.proxy
      },
      get open() {
        return open
      },
      defer(statement) {
        const p = Promise.resolve(statement)
        p.catch(noop)
        own.deferred.push(p)
      },
    }
    try {
      const result = await instance.def.handle(this.context(instance, env, scope), instance.state, env.message)
      if (result && result.state !== undefined) {
        w.hasState = true
        w.state = result.state
      }
      w.reply = result ? result.reply : undefined
    } catch (err) {
      w.status = 'failed'
      w.error = err
    }
    open = false
    if (own.deferred.length > 0 && !own.opened && w.status === 'ok') {
      // Writes that issued no statement on ctx.tx (a store function with nothing to write): done, or failed.
      const failed = (await Promise.allSettled(own.deferred)).find((r) => r.status === 'rejected')
      if (failed) {
        w.status = 'failed'
        w.error = (failed as PromiseRejectedResult).reason
      }
    }
    let outcome: TurnOutcome
    if (own.opened) outcome = await this.#commitOwn(own, w)
    else if (w.status === 'failed') outcome = await this.#afterFailure(w)
    else outcome = await this.#group(w)
    this.metrics.turnDuration.observe(instance.def.kind, outcome.type, (performance.now() - w.started) / 1000)
    return outcome
  }

  /**
   * A turn that used ctx.tx: its writes and COMMIT (or ROLLBACK) in its own transaction. As in
   * a group, COMMIT goes right behind the runtime's writes when they are all on their way (one
   * round trip for both): if one fails, the transaction is aborted and COMMIT answers ROLLBACK.
   */
  async #commitOwn(own: OwnTransaction, w: Work): Promise<TurnOutcome> {
    let conn: Conn
    try {
      conn = await own.open()
    } catch (error) {
      return { type: 'failed', error, reload: false }
    }
    let finished = false
    try {
      if (w.status === 'ok') {
        let writeError: unknown
        const { done, synchronous } = issueWrites(conn, [w], this.opts.stamps)
        // The handler's unawaited writes went out before the runtime's: the first failure is theirs.
        const written = Promise.allSettled([...own.deferred, done]).then((results) => {
          const failed = results.find((r) => r.status === 'rejected')
          if (failed) writeError = (failed as PromiseRejectedResult).reason
        })
        if (!synchronous) await written
        if (!writeError) {
          const commit = await conn`commit`
          finished = true
          await written
          const fenceError = await own.fenceError()
          if (fenceError) throw fenceError
          if (commit.command === 'COMMIT' && !writeError) return this.#applied(w)
          this.#fail(w, writeError ?? new Error(`turn transaction ended with ${commit.command}`))
          return await this.#afterFailure(w, conn)
        }
        this.#fail(w, writeError)
      }
      const fenceError = await own.fenceError()
      if (fenceError) throw fenceError
      finished = true
      await conn`rollback`
      return await this.#afterFailure(w, conn)
    } catch (err) {
      if (!finished) await conn`rollback`.catch(noop)
      if (pgCode(err) === FENCED_SQLSTATE) {
        this.metrics.fencedBatches.inc()
        return { type: 'fenced' }
      }
      this.logger.error({ err, actor: w.instance.key }, 'turn transaction failed')
      return { type: 'failed', error: err, reload: true }
    } finally {
      conn.release()
    }
  }

  /**
   * Nothing of the turn was committed: say why, consuming a reminder that failed. `db` is the
   * connection the turn's transaction ran on, when it holds one (never wait for the pool while
   * holding a connection: see #commitOn).
   */
  async #afterFailure(w: Work, db: Db = this.sql): Promise<TurnOutcome> {
    if (w.env.dedup || w.status === 'duplicate') {
      // A redelivered message whose handler now throws (say, "already exists") is still a
      // duplicate: answer with the first application's reply.
      try {
        const [row] = await findInbox(db, [inboxKey(w.env)])
        if (row) return { type: 'duplicate', reply: row.reply }
      } catch (err) {
        this.logger.error({ err }, 'inbox lookup failed')
      }
    }
    if (w.env.reminderId && w.status === 'failed') {
      await deleteReminders(db, [w.env.reminderId]).catch((err) => this.logger.error({ err }, 'could not delete a failed reminder'))
    }
    return { type: 'failed', error: w.error, reload: false }
  }

  #applied(w: Work): TurnOutcome {
    return { type: 'applied', state: w.state, stateChanged: w.hasState, reply: w.reply, events: w.events, effects: w.effects }
  }

  #fail(w: Work, err: unknown): void {
    w.status = isInboxDuplicate(err) ? 'duplicate' : 'failed'
    w.error = err
  }

  // ---- group commit ----------------------------------------------------------------------

  #group(w: Work): Promise<TurnOutcome> {
    const { promise, resolve } = Promise.withResolvers<TurnOutcome>()
    w.resolve = resolve
    this.#enqueue(w)
    return promise
  }

  #enqueue(w: Work): void {
    this.#ready.push(w)
    if (this.#running === 0 && !this.#scheduled) {
      // Nothing committing: go now (after the current microtasks, so turns finishing in the
      // same tick still join).
      this.#scheduled = true
      queueMicrotask(() => this.#flush())
    } else if (this.#running < this.opts.commitConcurrency && this.#ready.length >= this.#parallelAt) {
      this.#flush()
    }
  }

  /**
   * A second group goes out while one is committing only once this many turns are waiting:
   * below that, waiting for the commit in flight and sending one larger group costs the
   * database (and this process) far less per turn than two small ones — which is what
   * decides throughput when CPU is the limit. A real backlog still gets parallel groups.
   */
  get #parallelAt(): number {
    return Math.max(1, Math.ceil(this.opts.maxBatchTurns / 4))
  }

  #flush(): void {
    this.#scheduled = false
    while (this.#ready.length > 0 && this.#running < this.opts.commitConcurrency) {
      if (this.#running > 0 && this.#ready.length < this.#parallelAt) break
      const group = this.#ready.splice(0, this.opts.maxBatchTurns)
      this.#running++
      void this.#commitGroup(group).finally(() => {
        this.#running--
        if (this.#ready.length > 0) this.#flush()
      })
    }
  }

  async #commitGroup(works: Work[]): Promise<void> {
    let conn: Conn
    try {
      conn = await this.#reserve()
    } catch (error) {
      for (const w of works) w.resolve({ type: 'failed', error, reload: false })
      return
    }
    try {
      await this.#commitOn(conn, works)
    } finally {
      conn.release()
    }
  }

  /**
   * Commit `works` in one transaction on `conn`. Everything that follows a failure (the
   * turns committed again one by one, the inbox lookup of a duplicate, the epochs of a fenced
   * group) runs on `conn` too: a commit that held its connection while waiting for another
   * from the pool would, with every connection held by such commits (a failover's burst of
   * redelivered duplicates), wait forever — and so would everything else on this node.
   */
  async #commitOn(conn: Conn, works: Work[]): Promise<void> {
    this.metrics.batchTurns.observe(works.length)
    let writeError: unknown
    let inTransaction = false
    try {
      conn`begin`.catch(noop)
      inTransaction = true
      // The fencing check goes with the turns' inbox rows (actor-turns.ts), before any write.
      const fenced = fenceCall(
        conn,
        works.map((w) => w.instance.shard),
        works.map((w) => w.instance.epoch),
      )
      const { done, synchronous } = issueWrites(conn, works, this.opts.stamps, fenced)
      const written = done.catch((err: unknown) => {
        writeError = err
      })
      // When every statement is on its way, COMMIT goes right behind them: if one fails, the
      // transaction is aborted and COMMIT answers ROLLBACK. Otherwise (an async persist may
      // still have statements to send) wait for the writes first.
      if (!synchronous) await written
      const commit = writeError ? await conn`rollback` : await conn`commit`
      inTransaction = false
      await written
      // A stale epoch fails the first statement: the whole group lost its shard (or one of them).
      if (pgCode(writeError) === FENCED_SQLSTATE) throw writeError
      if (commit.command === 'COMMIT') {
        for (const w of works) w.resolve(this.#applied(w))
        return
      }
      if (works.length > 1) {
        // Someone's writes failed (a constraint, a redelivered message): commit each turn
        // alone, so only that one fails.
        for (const w of works) await this.#commitOn(conn, [w])
        return
      }
      const w = works[0]!
      this.#fail(w, writeError ?? new Error(`turn transaction ended with ${commit.command}`))
      w.resolve(await this.#afterFailure(w, conn))
    } catch (err) {
      if (inTransaction) await conn`rollback`.catch(noop)
      await this.#abort(works, err, conn)
    }
  }

  /** A group was rolled back as a whole. */
  async #abort(works: Work[], err: unknown, conn: Conn): Promise<void> {
    let stale = new Set<number>()
    if (pgCode(err) === FENCED_SQLSTATE) {
      this.metrics.fencedBatches.inc()
      stale = await this.#staleShards(works, conn)
    } else if (!isRetryable(err)) {
      this.logger.error({ err }, 'turn transaction failed')
      for (const w of works) w.resolve({ type: 'failed', error: err, reload: true })
      return
    }
    for (const w of works) {
      if (stale.has(w.instance.shard)) w.resolve({ type: 'fenced' })
      // Lost for another turn's reason: nothing was committed, commit the same result again.
      else if (++w.retries <= MAX_GROUP_RETRIES) this.#enqueue(w)
      else w.resolve({ type: 'failed', error: err, reload: false })
    }
  }

  /** Shards of the group whose epoch moved on (looked up after a fenced rollback). */
  async #staleShards(works: Work[], conn: Conn): Promise<Set<number>> {
    const shards = [...new Set(works.map((w) => w.instance.shard))]
    try {
      const current = new Map((await shardEpochs(conn, shards)).map((r) => [r.shard, r.epoch]))
      return new Set(works.filter((w) => current.get(w.instance.shard) !== w.instance.epoch).map((w) => w.instance.shard))
    } catch {
      return new Set(shards)
    }
  }
}
