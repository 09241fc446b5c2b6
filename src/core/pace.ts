/**
 * A pace: something used up at most `rate` a second on average, `burst` of it at once before
 * the pace applies (a token bucket, counted as debt). `after(amount)` counts what was just used
 * and says how long to wait before the next use, in milliseconds (0: go on).
 *
 * Used for a container job's output (bytes and lines read: docker-run.ts) and, one per user,
 * for the DataKit workers started because of a user's operations (worker-pool.ts: Paces).
 */
export class Pace {
  /** Used and not yet paid back by the rate, as of #last. */
  #ahead = 0
  #last = performance.now()
  constructor(
    readonly rate: number,
    readonly burst: number,
  ) {
    if (!(rate > 0)) throw new Error('a pace must be > 0 a second')
    if (!(burst >= 0)) throw new Error('a pace burst must be >= 0')
  }

  /** Milliseconds to wait after using `amount`. */
  after(amount: number): number {
    const now = performance.now()
    this.#ahead = this.#owed(now) + amount
    this.#last = now
    const excess = this.#ahead - this.burst
    return excess > 0 ? (excess / this.rate) * 1000 : 0
  }

  /** Everything used has been paid back: the pace is as good as new. */
  get idle(): boolean {
    return this.#owed(performance.now()) === 0
  }

  #owed(now: number): number {
    return Math.max(0, this.#ahead - ((now - this.#last) * this.rate) / 1000)
  }
}

/** A Pace per key (a user), made on first use and forgotten once idle again. */
export class Paces {
  readonly #paces = new Map<string, Pace>()
  constructor(
    readonly rate: number,
    readonly burst: number,
  ) {}

  /** Milliseconds `key` waits after using `amount`. */
  after(key: string, amount: number): number {
    for (const [k, p] of this.#paces) if (p.idle) this.#paces.delete(k)
    let pace = this.#paces.get(key)
    if (!pace) this.#paces.set(key, (pace = new Pace(this.rate, this.burst)))
    return pace.after(amount)
  }
}
