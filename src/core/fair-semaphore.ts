/**
 * Slots shared fairly between users: at most `size` holders at once, at most `perKey` of
 * them for one key (a user). When a slot frees, it goes to the waiting key that holds the
 * fewest slots (round-robin among equals), each key's jobs in arrival order. One user's
 * backlog of slow work therefore never holds another user's first job back by more than one
 * slot's turnover.
 *
 * A waiter whose signal aborts leaves the queue and rejects with the signal's reason, so a job
 * cancelled while it waits never takes a slot.
 *
 * Used for the work users start on a node: DataKit queries and previews, profiling, training.
 */

interface Waiter {
  key: string
  resolve: () => void
  reject: (e: unknown) => void
  signal?: AbortSignal
  onAbort?: () => void
}

export class FairSemaphore {
  #active = 0
  readonly #activeByKey = new Map<string, number>()
  /** Waiters by key, in arrival order; a key is present only while it has waiters. */
  readonly #queues = new Map<string, Waiter[]>()
  /** Keys with waiters, in the order they are served (the front is next). */
  readonly #turns: string[] = []

  constructor(
    readonly size: number,
    readonly perKey: number = size,
  ) {
    if (!Number.isInteger(size) || size < 1) throw new Error('size must be an integer >= 1')
    if (!Number.isInteger(perKey) || perKey < 1) throw new Error('perKey must be an integer >= 1')
  }

  /** Wait for a slot for `key`. Call `release(key)` exactly once after a successful acquire. */
  acquire(key: string, signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    if (this.#active < this.size && this.#held(key) < this.perKey && !this.#queues.has(key)) {
      this.#take(key)
      return Promise.resolve()
    }
    return new Promise((resolve, reject) => {
      const w: Waiter = { key, resolve, reject, signal }
      if (signal) {
        w.onAbort = () => {
          this.#remove(w)
          reject(signal.reason)
        }
        signal.addEventListener('abort', w.onAbort, { once: true })
      }
      const q = this.#queues.get(key)
      if (q) q.push(w)
      else {
        this.#queues.set(key, [w])
        this.#turns.push(key)
      }
    })
  }

  /** Give `key`'s slot back and hand free slots to the waiters whose turn it is. */
  release(key: string): void {
    const held = this.#held(key)
    if (held <= 0) throw new Error(`release without acquire for ${key}`)
    if (held === 1) this.#activeByKey.delete(key)
    else this.#activeByKey.set(key, held - 1)
    this.#active--
    this.#dispatch()
  }

  /** `fn` holding a slot for `key`. */
  async run<T>(key: string, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.acquire(key, signal)
    try {
      return await fn()
    } finally {
      this.release(key)
    }
  }

  /** Slots held now, and jobs waiting (for observation and tests). */
  get active(): number {
    return this.#active
  }

  get waiting(): number {
    let n = 0
    for (const q of this.#queues.values()) n += q.length
    return n
  }

  #held(key: string): number {
    return this.#activeByKey.get(key) ?? 0
  }

  #take(key: string): void {
    this.#active++
    this.#activeByKey.set(key, this.#held(key) + 1)
  }

  /**
   * While slots are free, serve the waiting key that holds the fewest slots (the earliest in
   * turn among equals), so a user with nothing running goes before one already running work;
   * a key at its own limit waits.
   */
  #dispatch(): void {
    while (this.#active < this.size) {
      let pick = -1
      for (let i = 0; i < this.#turns.length; i++) {
        const held = this.#held(this.#turns[i]!)
        if (held >= this.perKey) continue
        if (pick < 0 || held < this.#held(this.#turns[pick]!)) pick = i
      }
      if (pick < 0) return
      const key = this.#turns.splice(pick, 1)[0]!
      const q = this.#queues.get(key)!
      const w = q.shift()!
      if (q.length === 0) this.#queues.delete(key)
      else this.#turns.push(key)
      if (w.onAbort) w.signal!.removeEventListener('abort', w.onAbort)
      this.#take(key)
      w.resolve()
    }
  }

  #remove(w: Waiter): void {
    const q = this.#queues.get(w.key)
    if (!q) return
    const i = q.indexOf(w)
    if (i >= 0) q.splice(i, 1)
    if (q.length === 0) {
      this.#queues.delete(w.key)
      const t = this.#turns.indexOf(w.key)
      if (t >= 0) this.#turns.splice(t, 1)
    }
  }
}
