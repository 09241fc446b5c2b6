/**
 * Background tasks started by turns (`ctx.background`): long work that runs after its turn
 * committed without holding the actor's mailbox. Each gets the system's AbortSignal, aborted
 * when the system stops; a task that fails is logged (unless it failed because of that abort).
 */
import type { Logger } from '../../core/logger.ts'

export class BackgroundTasks {
  readonly #abort = new AbortController()
  readonly #tasks = new Set<Promise<void>>()

  constructor(private readonly logger: Logger) {}

  /** Run `task` for the actor `actor` (its key, for the log). */
  start(actor: string, task: (signal: AbortSignal) => Promise<void>): void {
    const p = (async () => {
      try {
        await task(this.#abort.signal)
      } catch (err) {
        if (!this.#abort.signal.aborted) this.logger.error({ err, actor }, 'background task failed')
      }
    })()
    this.#tasks.add(p)
    void p.finally(() => this.#tasks.delete(p))
  }

  /** Abort every task's signal; resolves when all of them have ended. */
  stop(): Promise<unknown> {
    this.#abort.abort()
    return Promise.allSettled(this.#tasks)
  }
}
