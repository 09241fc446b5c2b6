/**
 * Who may start a dataset operation, and when (for WorkerPool, worker-pool.ts):
 * - slots shared fairly between users (FairSemaphore: at most `perUser` each, a freed slot
 *   goes to the waiting user holding the fewest);
 * - at most `queuePerUser` operations of one user waiting beyond those (one more is a
 *   QueueFullError), counted from admission to release, synchronously: a slot that is free is
 *   granted on a later tick, so counting waiters by the promise would count it;
 * - given `answerPace`, the bytes of rows each user is answered with (previews and queries: a
 *   Pace each). Once a user owes more than the burst, their next preview or query waits, before
 *   it takes a slot and counted in their queue, until the rate has paid it back; when that wait
 *   would not end before its deadline, an AnswerRateError. Unpaced, one user fetching 8 MB
 *   answers back to back took the 2 cores' worth of worker, IPC, response and gzip work, and
 *   another user's `select 1` waited (bench:abuse item 2, README).
 */
import { untilAborted } from '../../core/abortable.ts'
import { FairSemaphore } from '../../core/fair-semaphore.ts'
import { Paces } from '../../core/pace.ts'
import { AnswerRateError, QueueFullError } from './errors.ts'

export interface AdmissionOptions {
  /** Operations running at once. */
  size: number
  /** Of those, at most this many for one user. */
  perUser: number
  /** Operations one user may have waiting beyond `perUser` running (one more is a 429); undefined: no cap. */
  queuePerUser?: number
  /** Bytes of rows one user may be answered with a second, and at once before the pace applies; undefined: unpaced. */
  answerPace?: { bytesPerSecond: number; burstBytes: number }
}

export class Admission {
  readonly #slots: FairSemaphore
  readonly #queuePerUser: number | undefined
  /** Operations admitted (running or waiting for a slot), by user. */
  readonly #inFlight = new Map<string, number>()
  /** The pace of the bytes each user is answered with (answerPace). */
  readonly #answers: Paces | undefined

  constructor(opts: AdmissionOptions) {
    this.#slots = new FairSemaphore(opts.size, Math.min(opts.perUser, opts.size))
    this.#queuePerUser = opts.queuePerUser
    if (opts.answerPace) this.#answers = new Paces(opts.answerPace.bytesPerSecond, opts.answerPace.burstBytes)
  }

  /**
   * Wait for a slot for `user`. `answering`: the operation answers with rows, so it first waits
   * for the user's answer pace (AnswerRateError when that wait would not end before `deadline`,
   * a performance.now() time; none: it may wait as long as it takes).
   */
  async admit(user: string, signal: AbortSignal | undefined, answering?: { deadline: number | undefined }): Promise<void> {
    const inFlight = this.#inFlight.get(user) ?? 0
    const cap = this.#queuePerUser
    if (cap !== undefined && inFlight >= this.#slots.perKey + cap) throw new QueueFullError(cap)
    this.#inFlight.set(user, inFlight + 1)
    const paced = answering && this.#answers
    try {
      for (;;) {
        const owed = paced?.owed(user) ?? 0
        if (paced && owed > 0) {
          if (answering.deadline !== undefined && performance.now() + owed >= answering.deadline) throw new AnswerRateError(paced.rate, owed)
          await untilAborted(Bun.sleep(owed), signal)
        }
        await this.#slots.acquire(user, signal)
        // Their operation that held the slot was answered meanwhile: wait for the pace again.
        if (!paced?.owed(user)) return
        this.#slots.release(user)
      }
    } catch (err) {
      this.#done(user)
      throw err
    }
  }

  /** Count `bytes` of rows `user` was just answered with (against their answer pace). */
  answered(user: string, bytes: number): void {
    this.#answers?.after(user, bytes)
  }

  /** Give `user`'s slot back (after admit succeeded). */
  release(user: string): void {
    this.#done(user)
    this.#slots.release(user)
  }

  #done(user: string): void {
    const left = (this.#inFlight.get(user) ?? 1) - 1
    if (left > 0) this.#inFlight.set(user, left)
    else this.#inFlight.delete(user)
  }
}
