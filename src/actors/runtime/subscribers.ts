/**
 * The listeners of one node to committed outbox events (ActorSystem.subscribe): each event goes
 * to every listener in order; a listener that throws is logged and the others still get it.
 */
import type { Logger } from '../../core/logger.ts'
import type { OutboxEvent } from '../../store/outbox.ts'

export class Subscribers {
  readonly #listeners = new Set<(event: OutboxEvent) => void>()

  constructor(private readonly logger: Logger) {}

  /** Add `listener`; returns its unsubscribe. */
  add(listener: (event: OutboxEvent) => void): () => void {
    this.#listeners.add(listener)
    return () => this.#listeners.delete(listener)
  }

  /** Hand `events` to every listener. */
  emit(events: OutboxEvent[]): void {
    for (const event of events) {
      for (const listener of this.#listeners) {
        try {
          listener(event)
        } catch (err) {
          this.logger.error({ err, topic: event.topic }, 'event listener threw')
        }
      }
    }
  }
}
