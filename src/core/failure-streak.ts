/**
 * The consecutive failures of a recurring task (a poll, a heartbeat), and which are worth a
 * warning: the 1st, 2nd, 4th, 8th… A dependency down for an hour then costs a dozen lines
 * rather than one a tick; the rest go to debug, and the recovery is said once.
 */
export class FailureStreak {
  #count = 0

  /** How many failures in a row so far. */
  get count(): number {
    return this.#count
  }

  /** One more failure: true when this one should be a warning. */
  fail(): boolean {
    const n = ++this.#count
    return (n & (n - 1)) === 0
  }

  /** A success: the length of the streak it ended (0 when there was none). */
  succeed(): number {
    const n = this.#count
    this.#count = 0
    return n
  }
}
