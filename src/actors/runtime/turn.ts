/**
 * A turn as the runtime's parts see it: the effects a handler records (applied only if its turn
 * commits), how the turn ended (TurnOutcome, for the system), and the handler's scope (for the
 * context the system builds around it). Run and committed by persisted.ts.
 */
import type { NewOutboxEvent, OutboxEvent } from '../../store/outbox.ts'
import type { Db } from '../../store/db.ts'
import type { Reminder } from '../../store/reminders.ts'
import type { TurnContext } from './define.ts'
import type { ActorInstance, Envelope } from './instance.ts'

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
  /** The handler threw, or the turn's writes failed: nothing of the turn was committed.
   * `reload`: the connection failed around COMMIT, so whether the turn committed is unknown
   * and the in-memory state must be reloaded before the next turn. */
  | { type: 'failed'; error: unknown; reload: boolean }
  /** The fencing check refused the turn: another node owns the actor's shard now. */
  | { type: 'fenced' }

/** The handler's view of its turn, for the context the system builds around it. */
export interface TurnScope {
  readonly effects: TurnEffects
  /** The turn's transaction (begun at its first statement). */
  readonly tx: Db
  /** False once the handler has returned: the context refuses to record anything after. */
  readonly open: boolean
  /** A write the handler does not await (ctx.write): the commit waits for it, and fails with it. */
  defer(statement: PromiseLike<unknown>): void
}

export type ContextFactory = (instance: ActorInstance, env: Envelope, scope: TurnScope) => TurnContext<unknown>
