/**
 * A pace: something used up at most `rate` a second on average, `burst` of it at once before
 * the pace applies (a token bucket, counted as debt). `after(amount)` counts what was just used
 * and says how long to wait before the next use, in milliseconds (0: go on).
 *
 * Used for a container job's output (bytes and lines read: docker-run.ts) and, one per user,
 * for the DataKit workers started because of a user's operations and the bytes of rows they
 * are answered with (worker-pool.ts: Paces), and for the bytes of their DataKit downloads
 * (pacedStream, http/downloads.ts).
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

  /** Milliseconds `key` waits before its next use (0: go on), using nothing. */
  owed(key: string): number {
    return this.#paces.get(key)?.after(0) ?? 0
  }
}

/**
 * `source` passed on at the pace `wait` sets, in chunks of at most `maxChunk` bytes: once a
 * chunk is handed on, the next is read only after `wait(chunk.byteLength)` ms (a Paces entry's
 * `after`, so that one key's streams share one pace). Nothing is read ahead of the reader;
 * cancelling it cancels the source.
 */
export function pacedStream(source: ReadableStream<Uint8Array>, wait: (bytes: number) => number, maxChunk: number): ReadableStream<Uint8Array> {
  const reader = source.getReader()
  let rest: Uint8Array = new Uint8Array(0)
  return new ReadableStream<Uint8Array>(
    {
      async pull(controller) {
        while (rest.byteLength === 0) {
          const { done, value } = await reader.read()
          if (done) return controller.close()
          rest = value
        }
        const chunk = rest.subarray(0, maxChunk)
        rest = rest.subarray(chunk.byteLength)
        controller.enqueue(chunk)
        const ms = wait(chunk.byteLength)
        if (ms > 0) await Bun.sleep(ms)
      },
      cancel: (reason) => reader.cancel(reason),
    },
    { highWaterMark: 0 },
  )
}
