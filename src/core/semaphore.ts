/**
 * A counting semaphore: at most `size` holders at once, the rest wait in FIFO order. A
 * waiter whose signal aborts leaves the queue and rejects with the signal's reason, so a
 * job cancelled while it waits for a slot never takes one.
 *
 * Used wherever a node bounds concurrent work: dataset operations (background and
 * interactive slots), training runs (TRAINING_CONCURRENCY).
 */
interface Waiter {
  resolve: () => void
  reject: (e: unknown) => void
  signal?: AbortSignal
  onAbort?: () => void
}

export class Semaphore {
  #free: number
  readonly #waiting: Waiter[] = []

  constructor(readonly size: number) {
    if (!Number.isInteger(size) || size < 1) throw new Error('concurrency must be an integer >= 1')
    this.#free = size
  }

  /** Wait for a slot (FIFO). Call `release` exactly once after a successful acquire. */
  acquire(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    if (this.#free > 0) {
      this.#free--
      return Promise.resolve()
    }
    return new Promise((resolve, reject) => {
      const w: Waiter = { resolve, reject, signal }
      if (signal) {
        w.onAbort = () => {
          const i = this.#waiting.indexOf(w)
          if (i >= 0) this.#waiting.splice(i, 1)
          reject(signal.reason)
        }
        signal.addEventListener('abort', w.onAbort, { once: true })
      }
      this.#waiting.push(w)
    })
  }

  /** Hand the slot to the next waiter, or free it. */
  release(): void {
    const next = this.#waiting.shift()
    if (next) {
      if (next.onAbort) next.signal!.removeEventListener('abort', next.onAbort)
      next.resolve()
    } else this.#free++
  }

  /** `fn` holding a slot. */
  async run<T>(fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.acquire(signal)
    try {
      return await fn()
    } finally {
      this.release()
    }
  }

  /** How many wait for a slot. */
  get waiting(): number {
    return this.#waiting.length
  }
}
