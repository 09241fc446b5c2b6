/**
 * The audit log's one writer (tables audit_events, audit_chain, audit_checkpoints; its
 * statements are in ./audit-rows.ts), and the one reader of audit_pending (./audit-pending.ts).
 *
 * Three ways in:
 *
 * - `record(event)`: after the fact (a request's outcome, a failed login). Events are queued
 *   and written in groups, at most one group per `groupIntervalMs` (an event after a quiet
 *   spell is written at once), one statement per group: the chain's head is compared and moved in
 *   the same statement that inserts the group (the head is cached between groups; when
 *   another writer moved it — another node, a transaction below — the group is written again
 *   in a transaction holding the head's row lock). The promise resolves once the group is
 *   committed and never rejects: a failed write is retried while the database is unreachable,
 *   and any event that cannot be written is logged at error level and counted
 *   (`audit_write_failures_total`, `audit_events_lost_total`) — never dropped in silence.
 * - `lock(tx)` then `append(...)`, or `recordIn(tx, event)`: in the caller's transaction, with
 *   the change it records; the head's row lock is held until that transaction ends, so the
 *   change and its record commit or roll back together. A failure here fails the change.
 * - `turnStamps`: a change an actor's turn commits for a request (a workstation started, a
 *   model deployed) commits in the turn's transaction, not the request's. A message the
 *   request sends carries the request's event as it stands (`take`: its route's action and
 *   target, the actor, IP, request id) under a key of the request's, and the turn inserts it
 *   into audit_pending with its change (`insert`): the two commit together, with no lock
 *   shared between turns. The request's outcome, recorded after the fact, joins the chain with
 *   that key as its event id, and the statement that chains it deletes them: the table holds
 *   little more than the requests in flight. `recoverPending` (the audit feature runs it every
 *   half minute) drops pending events whose key is in the chain (a turn that a request only
 *   told, committed after its answer) and moves the others — their node died between the
 *   turn's commit and the answer — into it, as what committed: outcome success,
 *   no status, `detail.recovered`.
 *
 * All fill what the event leaves out from the request it happens in (`enter`: the HTTP frame
 * enters a scope per state-changing request; src/http/plugins/audit.ts): request id, client IP,
 * user agent, actor, and the actor's e-mail (looked up by id, cached for a minute).
 */
import { AsyncLocalStorage } from 'node:async_hooks'
import type { Counter } from 'prom-client'
import { transientDbError } from '../core/errors.ts'
import { FailureStreak } from '../core/failure-streak.ts'
import type { Logger } from '../core/logger.ts'
import type { Metrics } from '../core/metrics.ts'
import { clean, isAction, link, type AuditContent, type AuditEvent, type AuditRow, type ChainHead } from './audit-chain.ts'
import { chainOrphans, insertPending, insertPendingNow, PENDING_GRACE_MS, settlePending, type AuditTurnStamps, type Pend, type PendingAudit } from './audit-pending.ts'
import { ActorEmails } from './audit-emails.ts'
import { appendIfHead, insertLocked, lockHead, readHead } from './audit-rows.ts'
import type { Db, Sql } from './db.ts'

/** What a request tells the recorder about itself. */
export interface AuditScope {
  requestId: string | null
  ip: string | null
  userAgent: string | null
  /** The caller, as the request authenticates (null: anonymous). */
  actor(): string | null | Promise<string | null>
  /** Whom an anonymous request turned out to be about (a registration, a refresh). */
  identified?: string
  /** An event standing for the request itself was recorded: its outcome needs no other. */
  covered?: boolean
  /**
   * The event the request will be recorded as if it succeeds (its route's action, target and
   * org, from the path), for a turn that commits a change for it; `id`: the actor asked (the
   * target of a create). Undefined: the request is not audited.
   */
  expected?(id: string | null): AuditEvent | undefined
  /** The key of the pending events its turns committed (set by the first one): its event's id. */
  pendingKey?: string
  /** Answered: what it sets off from now on is not its own (no pending events are made). */
  finished?: boolean
}


export interface AuditLogOptions {
  /** AUDIT_ENABLED: false records nothing (for benchmarks). */
  enabled: boolean
  logger: Logger
  metrics: Metrics
  /** Events per statement (default 500). */
  maxBatch?: number
  /**
   * At most one group is written per this many milliseconds (default 50): a quiet log writes
   * an event at once; a busy one gathers the events of the interval into one statement, as a
   * statement per request would cost a request more than the rest of the log (bench/audit.ts).
   */
  groupIntervalMs?: number
  /** Events waiting to be written beyond which new ones are lost, loudly (default 100,000). */
  maxQueue?: number
}

interface Pending {
  event: AuditEvent
  /** The key of the request's pending events the event stands for (its id): they go with it. */
  settles: string | undefined
  done: () => void
}

const RESOLVED = Promise.resolve()
const MAX_BACKOFF_MS = 5_000

/** The audit log of one server: see the top of this file. */
export class AuditLog {
  readonly enabled: boolean
  readonly #scopes = new AsyncLocalStorage<AuditScope>()
  readonly #log: Logger
  readonly #maxBatch: number
  readonly #maxQueue: number
  readonly #groupIntervalMs: number
  /** When the last group started to be written. */
  #lastGroupAt = 0
  /** Ends the current wait for more events (a full group, or closing). */
  #gathered: (() => void) | undefined
  readonly #written: Counter<string>
  readonly #failures: Counter<string>
  readonly #lost: Counter<string>
  readonly #recovered: Counter<string>
  readonly #streak = new FailureStreak()
  #queue: Pending[] = []
  #draining: Promise<void> | undefined
  /** The head after this node's last group (undefined: read it). */
  #head: ChainHead | undefined
  readonly #emails = new ActorEmails()
  #closed = false

  constructor(
    private readonly sql: Sql,
    opts: AuditLogOptions,
  ) {
    this.enabled = opts.enabled
    this.#log = opts.logger.child({ component: 'audit' })
    this.#maxBatch = opts.maxBatch ?? 500
    this.#maxQueue = opts.maxQueue ?? 100_000
    this.#groupIntervalMs = opts.groupIntervalMs ?? 50
    this.#written = opts.metrics.counter('audit_events_written_total', 'Audit events committed, by how (after: queued after the fact; transaction: with the change)', ['path'])
    this.#failures = opts.metrics.counter('audit_write_failures_total', 'Failed attempts to write audit events, by how', ['path'])
    this.#lost = opts.metrics.counter('audit_events_lost_total', 'Audit events that could not be written (each logged at error level)', ['reason'])
    this.#recovered = opts.metrics.counter('audit_events_recovered_total', 'Pending audit events of changes whose request was never answered, moved into the chain')
    this.turnStamps = {
      take: (kind, id) => this.#stamp(kind, id),
      insert: (conn, stamps) => insertPending(conn, stamps as PendingAudit[]),
    }
  }

  /** For the actor runtime: see the top of this file. */
  readonly turnStamps: AuditTurnStamps

  /**
   * The current request's event as it stands, inserted in `tx` with the change it records: a
   * change a route makes with its own SQL (an actor's turn does it through turnStamps).
   * `createdId`: the object a create makes. Nothing outside an audited request.
   */
  readonly pend: Pend = async (tx, createdId) => {
    const stamp = this.#stamp('', createdId ?? null)
    if (stamp) await insertPendingNow(tx, [stamp])
  }

  /**
   * `change(tx)` in a transaction of `sql` that also holds the request's pending event (see
   * `pend`); `created`: the id of what it made, from its result. Without an audited request,
   * just `change(sql)`.
   */
  async change<T>(sql: Sql, change: (tx: Db) => Promise<T>, created?: (result: T) => string | undefined): Promise<T> {
    const scope = this.#scopes.getStore()
    if (!this.enabled || !scope || scope.finished || !scope.expected) return change(sql)
    return (await sql.begin(async (tx) => {
      const result = await change(tx)
      await this.pend(tx, created?.(result))
      return result
    })) as T
  }

  /** The current request's pending event for a message to actor (kind, id), or undefined. */
  #stamp(_kind: string, id: string | null): PendingAudit | undefined {
    const scope = this.#scopes.getStore()
    if (!this.enabled || !scope || scope.finished || !scope.expected) return undefined
    const event = scope.expected(id)
    if (!event || !isAction(event.action)) return undefined
    // The caller is known by now (the route authorized the request); if not, it stays unknown.
    const actor = scope.actor()
    const filled = this.#fill(event, scope, actor instanceof Promise ? null : (actor ?? scope.identified ?? null), new Date())
    scope.pendingKey ??= crypto.randomUUID()
    return { key: scope.pendingKey, event: { ...filled, at: filled.at!.toISOString() } }
  }

  /**
   * The request of `scope` was recorded otherwise (an event in its own transaction): drop the
   * pending events its turns committed. Never rejects (a failure leaves them to the sweep).
   */
  settle(scope: AuditScope): Promise<void> {
    const key = scope.pendingKey
    if (!this.enabled || !key) return RESOLVED
    return settlePending(this.sql, [key]).catch((err: unknown) => this.#log.warn({ err }, 'pending audit events could not be dropped; the sweep records them'))
  }

  /**
   * Move pending events older than `olderThanMs` into the chain: the changes of requests that
   * were never answered (their node died between the turn's commit and the answer). One event
   * per request, as what committed: outcome success, no status, `detail.recovered`. Safe on
   * every node at once (the rows are taken under the chain's lock). Returns how many.
   */
  async recoverPending(olderThanMs = PENDING_GRACE_MS): Promise<number> {
    const total = await chainOrphans(this.sql, olderThanMs, this.#maxBatch, (tx, events) => this.#emails.fill(tx, events))
    if (total > 0) {
      this.#head = undefined // moved under its lock
      this.#recovered.inc(total)
      this.#log.warn({ recovered: total }, 'audit events of changes whose request was never answered were recorded from their pending rows')
    }
    return total
  }

  /**
   * From here on (this request's async continuation), events fill what they leave out from
   * `scope`. Called by the HTTP frame as a state-changing request starts.
   */
  enter(scope: AuditScope): void {
    this.#scopes.enterWith(scope)
  }

  /** The anonymous request in progress turned out to be about this user (register, refresh). */
  identify(userId: string): void {
    const s = this.#scopes.getStore()
    if (s) s.identified = userId
  }

  /**
   * Record `event` after the fact: resolves when it is committed (or counted lost); never
   * rejects. `scope`: the request it belongs to — by default the one whose code is running.
   * Code that runs on its own (an actor's turn, a job) passes `null`: work a request set off
   * runs in that request's async context, which is not the request it may be about.
   */
  record(event: AuditEvent, scope: AuditScope | null | undefined = this.#scopes.getStore()): Promise<void> {
    if (!this.enabled) return RESOLVED
    if (!isAction(event.action)) {
      this.#lose([event], 'error', new Error(`${JSON.stringify(event.action)} is not an action name (e.g. model.deploy)`))
      return RESOLVED
    }
    // Its time is when it happened, not when its group is written.
    const at = event.at ?? new Date()
    if (!scope) return this.#enqueue({ ...event, at })
    scope.covered = true
    // The request's outcome (recorded once it is answered) stands for its pending events: it
    // takes their key as its id, and the statement that chains it deletes them.
    const settles = scope.finished ? scope.pendingKey : undefined
    if (settles) event = { ...event, id: settles }
    if (event.actorId !== undefined) return this.#enqueue(this.#fill(event, scope, event.actorId, at), settles)
    // The caller is usually known without I/O: then no promise is made for it. One whose token
    // could not be checked (the session store failed) is recorded as unknown.
    const actor = scope.actor()
    if (actor instanceof Promise) {
      const e = event
      return actor.then(
        (id) => this.#enqueue(this.#fill(e, scope, id ?? scope.identified ?? null, at), settles),
        () => this.#enqueue(this.#fill(e, scope, scope.identified ?? null, at), settles),
      )
    }
    return this.#enqueue(this.#fill(event, scope, actor ?? scope.identified ?? null, at), settles)
  }

  #enqueue(event: AuditEvent, settles?: string): Promise<void> {
    return new Promise<void>((done) => {
      if (this.#queue.length >= this.#maxQueue) {
        // Its pending events (if any) stay: recoverPending records them.
        this.#lose([event], 'queue_full', new Error(`more than ${this.#maxQueue} audit events waiting`))
        return done()
      }
      this.#queue.push({ event, settles, done })
      if (this.#queue.length >= this.#maxBatch) this.#gathered?.()
      this.#drain()
    })
  }

  /**
   * Take the chain's lock in `tx` (held until it ends) and return the appender of this
   * transaction's events; undefined when auditing is off.
   */
  async lock(tx: Db): Promise<ChainLock | undefined> {
    if (!this.enabled) return undefined
    try {
      return new ChainLock(this, tx, await lockHead(tx))
    } catch (err) {
      this.#failures.inc({ path: 'transaction' })
      this.#log.error({ err }, 'could not lock the audit chain; the change is refused')
      throw err
    }
  }

  /** `event` in `tx`, with the change it records. */
  async recordIn(tx: Db, event: AuditEvent): Promise<void> {
    await (await this.lock(tx))?.append(event)
  }

  /** Write what is queued (at shutdown): waits for every queued event to be settled. */
  async close(): Promise<void> {
    this.#closed = true
    this.#gathered?.()
    while (this.#draining) await this.#draining
  }

  /** @internal ChainLock's part: the events' rows after `head`, written in `tx`. */
  async appendLocked(tx: Db, head: ChainHead, events: readonly AuditEvent[]): Promise<ChainHead> {
    const scope = this.#cover()
    try {
      const filled = await Promise.all(
        events.map(async (e) => {
          const at = e.at ?? new Date()
          if (!scope) return { ...e, at }
          const actor = e.actorId !== undefined ? e.actorId : ((await Promise.resolve(scope.actor()).catch(() => null)) ?? scope.identified ?? null)
          return this.#fill(e, scope, actor, at)
        }),
      )
      await this.#emails.fill(tx, filled)
      const { rows, head: next } = link(head, filled.map(clean))
      await insertLocked(tx, rows, next)
      this.#written.inc({ path: 'transaction' }, rows.length)
      return next
    } catch (err) {
      this.#failures.inc({ path: 'transaction' })
      this.#log.error({ err, actions: events.map((e) => e.action) }, 'audit events could not be written; the change they record is refused')
      throw err
    }
  }

  /** Mark the request's scope covered (an event standing for it is being recorded). */
  #cover(): AuditScope | undefined {
    const s = this.#scopes.getStore()
    if (s) s.covered = true
    return s
  }

  /** A copy of `event` with its actor and time, and what else it leaves out taken from the request. */
  #fill(event: AuditEvent, scope: AuditScope, actorId: string | null, at: Date): AuditEvent {
    return {
      ...event,
      at,
      actorId,
      requestId: event.requestId !== undefined ? event.requestId : scope.requestId,
      ip: event.ip !== undefined ? event.ip : scope.ip,
      userAgent: event.userAgent !== undefined ? event.userAgent : scope.userAgent,
    }
  }

  #drain(): void {
    if (this.#draining) return
    this.#draining = (async () => {
      while (this.#queue.length) {
        // Let a group gather until the interval since the last one is over (nothing waits on
        // it: the requests it records are answered already).
        const wait = this.#lastGroupAt + this.#groupIntervalMs - Date.now()
        if (wait > 0 && this.#queue.length < this.#maxBatch && !this.#closed) await this.#gather(wait)
        else await Promise.resolve() // the events of the same tick
        this.#lastGroupAt = Date.now()
        const group = this.#queue.splice(0, this.#maxBatch)
        await this.#writeGroup(group)
      }
    })().finally(() => {
      this.#draining = undefined
      if (this.#queue.length) this.#drain()
    })
  }

  /** Until `ms` have passed, the group is full or the log closes. */
  #gather(ms: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.#gathered?.(), ms)
      this.#gathered = () => {
        clearTimeout(timer)
        this.#gathered = undefined
        resolve()
      }
    })
  }

  async #writeGroup(group: Pending[]): Promise<void> {
    await this.#write(group)
    for (const p of group) p.done()
  }

  async #write(group: Pending[]): Promise<void> {
    const events = group.map((p) => p.event)
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#emails.fill(this.sql, events)
        await this.#append(events.map(clean), group.flatMap((p) => (p.settles ? [p.settles] : [])))
        this.#written.inc({ path: 'after' }, events.length)
        const failures = this.#streak.succeed()
        if (failures > 0) this.#log.info({ failures }, 'audit events are written again')
        return
      } catch (err) {
        this.#failures.inc({ path: 'after' })
        this.#head = undefined
        if (!transientDbError(err)) {
          // Retrying will not help; one by one, only the event at fault is lost (its pending
          // events, if any, stay for recoverPending).
          if (group.length > 1) for (const p of group) await this.#write([p])
          else this.#lose(events, 'error', err)
          return
        }
        // While the database is unreachable the group waits (and later ones queue behind it);
        // at shutdown it gets three tries.
        if (this.#closed && attempt >= 3) return this.#lose(events, 'error', err)
        if (this.#streak.fail()) this.#log.error({ err, waiting: this.#queue.length + group.length, attempt }, 'audit events could not be written yet (database unavailable); retrying')
        await Bun.sleep(Math.min(MAX_BACKOFF_MS, 50 * 2 ** Math.min(attempt, 10)))
      }
    }
  }

  /**
   * Append after the cached head in one statement; if another writer moved it, under its lock.
   * The pending events of `settles` (their keys) are deleted in the same statement.
   */
  async #append(contents: AuditContent[], settles: readonly string[]): Promise<void> {
    const head = this.#head ?? (await readHead(this.sql))
    const optimistic = link(head, contents)
    if (await appendIfHead(this.sql, head, optimistic.rows, optimistic.head, settles)) {
      this.#head = optimistic.head
      return
    }
    this.#head = undefined
    const next = await this.sql.begin(async (tx) => {
      const locked = link(await lockHead(tx), contents)
      await insertLocked(tx, locked.rows, locked.head, settles)
      return locked.head
    })
    this.#head = next
  }

  #lose(events: readonly AuditEvent[], reason: string, err: unknown): void {
    this.#lost.inc({ reason }, events.length)
    this.#log.error(
      { err, lost: events.length, events: events.slice(0, 20).map((e) => ({ action: e.action, outcome: e.outcome, actorId: e.actorId ?? null, targetId: e.targetId ?? null, requestId: e.requestId ?? null })) },
      'audit events could not be written and are lost',
    )
  }
}

/** The chain's lock in one transaction: append its events (the head moves with each call). */
class ChainLock {
  constructor(
    private readonly log: AuditLog,
    private readonly tx: Db,
    private head: ChainHead,
  ) {}

  async append(...events: AuditEvent[]): Promise<void> {
    if (events.length) this.head = await this.log.appendLocked(this.tx, this.head, events)
  }
}
