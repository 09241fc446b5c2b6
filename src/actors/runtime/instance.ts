/**
 * One activation of one actor: its state in memory, its mailbox, and the shard epoch it was
 * activated under (its turns are fenced with it). An activation is created on the first
 * message, loads its state as its first piece of work, and is dropped by passivation; the
 * state is in SQL after every turn, so nothing is written on the way out.
 */
import type { AnyActorKind } from './define.ts'
import { Mailbox } from './mailbox.ts'

/** How a turn ended, as the caller sees it. */
export type Reply = { ok: true; reply: unknown } | { ok: false; error: unknown }

/** A message on its way to an actor. */
export interface Envelope {
  kind: string
  id: string
  message: unknown
  messageId: string
  /** Check the inbox before applying: the message may have been applied already (it came
   * from a queue that redelivers, from a reminder, or with a caller-given id). */
  dedup: boolean
  origin: 'local' | 'queue' | 'reminder'
  /** For reminders: the row to delete in the turn's transaction. */
  reminderId?: string
  /** Someone waits for the reply (an ask); a tell is settled as soon as it is handed over. */
  wantsReply: boolean
  /** Epoch-ms after which nobody waits for the reply any more. */
  deadline: number
  settle(reply: Reply): void
  /** Times it was routed again after its activation was dropped (bounded, see system.ts). */
  hops?: number
  /** What it carries into its turn's transaction (config.ts TurnStamps), JSON. */
  stamp?: unknown
}

export function actorKey(kind: string, id: string): string {
  return `${kind}:${id}`
}

export class ActorInstance {
  readonly key: string
  state: unknown = undefined
  loaded = false
  /** Set once the activation is dropped: it takes no more messages. */
  closed = false
  lastUsed = performance.now()
  readonly mailbox: Mailbox<Envelope>

  constructor(
    readonly def: AnyActorKind,
    readonly id: string,
    readonly shard: number,
    readonly epoch: number,
    run: (instance: ActorInstance, env: Envelope) => Promise<void>,
    onError: (err: unknown) => void,
  ) {
    this.key = actorKey(def.kind, id)
    this.mailbox = new Mailbox((env) => run(this, env), onError)
  }

  get idle(): boolean {
    return !this.mailbox.busy && this.mailbox.size === 0
  }
}
