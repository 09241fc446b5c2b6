/**
 * Durable reminders: rows in actor_reminders, found by a poller on the node that owns their
 * shard and delivered as ordinary messages whose id is the reminder's id. The turn they
 * trigger deletes the row in its own transaction, so a reminder keeps being delivered until a
 * turn for it commits (at least once, surviving restarts and shard moves), and the inbox
 * makes a second delivery of the same reminder a no-op (its state changes apply once).
 *
 * A handler that throws on a reminder consumes it all the same (the row is deleted with the
 * rolled-back turn's group): there is no caller to give the error to, and retrying a handler
 * that throws would deliver it forever. A kind that wants a retry schedules a new reminder.
 */
import { FailureStreak } from '../../core/failure-streak.ts'
import type { Logger } from '../../core/logger.ts'
import type { Sql } from '../../store/db.ts'
import { dueReminders, type Reminder } from '../../store/reminders.ts'

/** The longest wait between two polls while the database keeps failing. */
const MAX_BACKOFF_MS = 30_000

/**
 * While the database is unreachable the poller backs off (pollMs doubled per failure, at most
 * MAX_BACKOFF_MS) and warns at the 1st, 2nd, 4th, 8th… failure (FailureStreak), then says once
 * that a poll succeeded again: a database down for an hour is a dozen lines, not 3,600.
 */
export class ReminderPoller {
  readonly #failures = new FailureStreak()
  #timer: ReturnType<typeof setTimeout> | undefined
  #nextAt = Infinity
  #running = false
  #again = false
  #stopped = true
  /** Reminders handed to an actor and not settled yet: not delivered a second time meanwhile. */
  readonly #inFlight = new Set<string>()

  constructor(
    private readonly sql: Sql,
    private readonly ownedShards: () => number[],
    private readonly deliver: (reminder: Reminder, done: () => void) => void,
    private readonly pollMs: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    this.#stopped = false
    this.#arm(0)
  }

  stop(): void {
    this.#stopped = true
    clearTimeout(this.#timer)
    this.#timer = undefined
  }

  /** A reminder due at `at` was just stored: look for it then rather than at the next poll. */
  poke(at: Date): void {
    this.#arm(Math.max(0, at.getTime() - Date.now()))
  }

  #arm(delay: number): void {
    if (this.#stopped) return
    const at = Date.now() + delay
    if (at >= this.#nextAt) return
    clearTimeout(this.#timer)
    this.#nextAt = at
    this.#timer = setTimeout(() => void this.#poll(), delay)
  }

  async #poll(): Promise<void> {
    this.#nextAt = Infinity
    this.#timer = undefined
    if (this.#running) {
      this.#again = true
      return
    }
    this.#running = true
    let delay = this.pollMs
    try {
      const due = await dueReminders(this.sql, this.ownedShards())
      const failures = this.#failures.succeed()
      if (failures > 0) this.logger.info({ failures }, 'reminder poll recovered')
      for (const r of due) {
        if (this.#inFlight.has(r.id)) continue
        this.#inFlight.add(r.id)
        this.deliver(r, () => this.#inFlight.delete(r.id))
      }
    } catch (err) {
      const loud = this.#failures.fail()
      const failures = this.#failures.count
      delay = Math.min(MAX_BACKOFF_MS, this.pollMs * 2 ** failures)
      this.logger[loud ? 'warn' : 'debug']({ err, failures, retryInMs: delay }, 'reminder poll failed; backing off')
    } finally {
      this.#running = false
    }
    // A poke (a reminder stored meanwhile) still arms an earlier poll; a failed one waits.
    this.#arm(this.#again && this.#failures.count === 0 ? 0 : delay)
    this.#again = false
  }
}
