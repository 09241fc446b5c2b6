/**
 * What an actor kind is: its message union (a TypeBox schema, checked at `ask` time), how its
 * state is loaded and persisted through raw SQL, and its handler. `defineActor` checks the
 * definition once and compiles the message schema.
 */
import type { Static, TSchema } from '@sinclair/typebox'
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import type { Logger } from '../../core/logger.ts'
import type { ErrorDetail } from '../../core/errors.ts'
import type { Db } from '../../store/db.ts'
import { loadActorState, saveActorState, saveActorStates } from '../../store/actor-state.ts'

export interface AskOptions {
  /** Milliseconds to wait for the reply (default: the system's askTimeoutMs). */
  timeout?: number
  /**
   * Idempotency key: a message with an id the actor already applied is not applied again;
   * the ask gets the reply of the first application. Generated when absent.
   */
  messageId?: string
}

export type TellOptions = Pick<AskOptions, 'messageId'>

/** A handle on one actor. */
export interface ActorRef<M> {
  readonly kind: string
  readonly id: string
  tell(message: M, opts?: TellOptions): void
  ask(message: M, opts?: AskOptions): Promise<unknown>
}

/**
 * What a handler sees besides its state and message. Everything it records (events,
 * reminders, messages to other actors, background tasks) takes effect only if its turn
 * commits; if the handler throws, all of it is dropped with the turn's SQL writes.
 */
export interface TurnContext<M> {
  readonly kind: string
  readonly id: string
  /** The message's id: its inbox key, and a natural idempotency key for side effects. */
  readonly messageId: string
  readonly nodeId: string
  /**
   * The turn's transaction, for the kind's own SQL writes (pass it to src/store functions).
   * Valid until the handler returns. Statements on it are rolled back if the handler throws.
   */
  readonly tx: Db
  /** This actor. `self.tell` inside the handler is sent after commit. */
  readonly self: ActorRef<M>
  /**
   * A write of the turn whose result the handler does not need (a store function called with
   * `tx`, not awaited): sent at once and awaited by the runtime with its own writes, so COMMIT
   * follows it in the same flight instead of after a round trip of its own. If it fails, the
   * turn fails and nothing of it is committed.
   */
  write(statement: PromiseLike<unknown>): void
  readonly logger: Logger
  /** Append an event to the outbox (numbered per topic; published to subscribers after commit). */
  emit(topic: string, type: string, data: unknown): void
  /** A durable reminder: `message` is delivered to this actor at least once after `at`. */
  schedule(at: Date, message: M): void
  /** Tell another actor something, after this turn commits. */
  send(kind: string, id: string, message: unknown): void
  /**
   * Start long-running work after the turn commits, without holding the mailbox: the task
   * reports back with `ctx.self.tell(...)`. Its signal is aborted when the system stops.
   */
  background(task: (signal: AbortSignal) => Promise<void>): void
}

/** `T` as JSON carries it: dates become ISO strings. */
type Jsonified<T> = T extends Date ? string : T extends readonly (infer U)[] ? Jsonified<U>[] : T extends object ? { [K in keyof T]: Jsonified<T[K]> } : T

/**
 * What an ask resolves to when the handler replied a `T`: `T` itself when the actor ran on
 * this node, its JSON form when it ran on another node or the reply was read back from the
 * inbox (a redelivered message). Readers of a reply accept both (dates: `Date | string`).
 */
export type Replied<T> = T | Jsonified<T>

/** A handler's outcome: the new state (persisted in the turn) and the ask's reply. */
export interface TurnResult<S> {
  state?: S
  reply?: unknown
}

type Handler<S, M> = (ctx: TurnContext<M>, state: S, message: M) => TurnResult<S> | void | Promise<TurnResult<S> | void>

export interface ActorKindOptions<S, T extends TSchema> {
  /** Name used in `ask(kind, …)`, metrics and storage: lower-case letters, digits, dashes. */
  kind: string
  /** The message union (discriminated on `type` by convention). */
  messages: T
  /** Load the state on activation. Together with `persist`, or neither (then `initial`). */
  load?(sql: Db, id: string): Promise<S>
  /**
   * Write the state a turn returned, inside the turn's transaction. Return the query itself (not
   * an async function's promise) so COMMIT can follow it in the same flight; `null` when the
   * kind's turns write what they change themselves (ctx.tx) and there is nothing more to write.
   */
  persist?(tx: Db, id: string, state: S): Promise<unknown> | null
  /**
   * Optional: write the states of several actors' turns in one statement. A group commit uses
   * it instead of one `persist` per turn (a statement's fixed cost is most of a small row's);
   * ids within one call are distinct.
   */
  persistMany?(tx: Db, entries: { id: string; state: S }[]): Promise<unknown>
  /** Without load/persist: the state of an actor never seen, kept in table actor_state. */
  initial?(id: string): S
  handle: Handler<S, Static<T>>
}

/** A registered kind, as the runtime uses it. */
export interface ActorKind<S, M> {
  readonly kind: string
  readonly messages: TSchema
  /** Errors of `message` against the schema (empty when valid). */
  validate(message: unknown): ErrorDetail[]
  load(sql: Db, id: string): Promise<S>
  persist(tx: Db, id: string, state: S): Promise<unknown> | null
  /** Several turns' states in one statement, when the kind (or the generic table) can. */
  persistMany?(tx: Db, entries: { id: string; state: S }[]): Promise<unknown>
  handle(ctx: TurnContext<M>, state: S, message: M): TurnResult<S> | void | Promise<TurnResult<S> | void>
}

// Kinds are stored side by side whatever their state and message types; method syntax in
// ActorKind keeps ActorKind<X, Y> assignable to this.
export type AnyActorKind = ActorKind<any, any>

export function defineActor<S, T extends TSchema>(opts: ActorKindOptions<S, T>): ActorKind<S, Static<T>> {
  if (!/^[a-z][a-z0-9-]{0,62}$/.test(opts.kind)) throw new Error(`actor kind "${opts.kind}": names are lower-case letters, digits and dashes`)
  if (!opts.load !== !opts.persist) throw new Error(`actor kind "${opts.kind}": define both load and persist, or neither`)
  if (!opts.load && !opts.initial) throw new Error(`actor kind "${opts.kind}": without load/persist, initial(id) is required`)
  const check: TypeCheck<T> = TypeCompiler.Compile(opts.messages)
  const kind = opts.kind
  const initial = opts.initial
  return {
    kind,
    messages: opts.messages,
    validate(message) {
      if (check.Check(message)) return []
      return [...check.Errors(message)].slice(0, 10).map((e) => ({ field: e.path || '/', message: e.message }))
    },
    load: opts.load
      ? opts.load.bind(opts)
      : async (sql, id) => {
          const stored = await loadActorState(sql, kind, id)
          return stored === undefined ? initial!(id) : (stored as S)
        },
    persist: opts.persist ? opts.persist.bind(opts) : (tx, id, state) => saveActorState(tx, kind, id, state),
    persistMany: opts.persistMany
      ? opts.persistMany.bind(opts)
      : opts.persist
        ? undefined
        : (tx, entries) => saveActorStates(tx, kind, entries),
    handle: opts.handle,
  }
}
