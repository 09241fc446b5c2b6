/**
 * What a handler sees of its turn (TurnContext): its transaction, itself, and the effects it
 * records — events, reminders, messages, background work — which take effect only if the
 * turn commits. Recording anything after the handler returned is a bug, and throws.
 */
import { ValidationError } from '../../core/errors.ts'
import type { Logger } from '../../core/logger.ts'
import type { Reminder } from '../../store/reminders.ts'
import type { ActorRef, AnyActorKind, AskOptions, TellOptions, TurnContext } from './define.ts'
import type { ActorInstance, Envelope } from './instance.ts'
import type { TurnScope } from './turn.ts'

/** What a turn's context needs of the actor system. */
export interface ContextSystem {
  nodeId: string
  logger: Logger
  tell(kind: string, id: string, message: unknown, opts?: TellOptions): void
  ask(kind: string, id: string, message: unknown, opts?: AskOptions): Promise<unknown>
  /** A registered kind (throws for one this node does not know). */
  kind(kind: string): AnyActorKind
  /** A reminder for (kind, id), its message checked against the kind's schema. */
  reminder(kind: string, id: string, at: Date, message: unknown): Reminder
}

export function turnContext(system: ContextSystem, inst: ActorInstance, env: Envelope, scope: TurnScope): TurnContext<unknown> {
  const { kind, id } = env
  const effects = scope.effects
  const record = (what: string) => {
    if (!scope.open) throw new Error(`ctx.${what} of ${inst.key} used after its handler returned`)
  }
  const self: ActorRef<unknown> = {
    kind,
    id,
    // Inside the handler a tell to itself waits for the commit, like any other effect;
    // from a background task it goes out at once.
    tell: (message, opts) => {
      if (!scope.open) return system.tell(kind, id, message, opts)
      const errors = inst.def.validate(message)
      if (errors.length > 0) throw new ValidationError(`invalid ${kind} message`, errors)
      effects.sends.push({ kind, id, message, messageId: opts?.messageId })
    },
    ask: (message, opts) => system.ask(kind, id, message, opts),
  }
  return {
    kind,
    id,
    messageId: env.messageId,
    nodeId: system.nodeId,
    get tx() {
      return scope.tx
    },
    self,
    logger: system.logger,
    write(statement) {
      record('write')
      scope.defer(statement)
    },
    emit(topic, type, data) {
      record('emit')
      effects.events.push({ topic, type, data, at: new Date() })
    },
    schedule(at, message) {
      record('schedule')
      effects.reminders.push(system.reminder(kind, id, at, message))
    },
    send(toKind, toId, message) {
      record('send')
      const errors = system.kind(toKind).validate(message)
      if (errors.length > 0) throw new ValidationError(`invalid ${toKind} message`, errors)
      effects.sends.push({ kind: toKind, id: toId, message })
    },
    background(task) {
      record('background')
      effects.background.push(task)
    },
  }
}
