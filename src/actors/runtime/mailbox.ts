/**
 * An actor's mailbox.
 *
 * Contract: items are handed to `process` in the order they were enqueued, one at a time —
 * `process` is not called again until the promise of the previous call has settled. That is
 * the whole of the "one message at a time" guarantee; everything else (batching, commits,
 * replies) lives in `process`, which must not throw (a throw is reported to `onError` and
 * the drain goes on with the next item).
 */
export class Mailbox<T> {
  #items: (T | undefined)[] = []
  #head = 0
  #running = false
  #idle: PromiseWithResolvers<void> | undefined

  constructor(
    private readonly process: (item: T) => Promise<void>,
    private readonly onError: (err: unknown) => void,
  ) {}

  /** Items waiting (not counting the one being processed). */
  get size(): number {
    return this.#items.length - this.#head
  }

  /** True while an item is being processed. */
  get busy(): boolean {
    return this.#running
  }

  enqueue(item: T): void {
    this.#items.push(item)
    if (!this.#running) void this.#drain()
  }

  /** Remove and return the items not started yet. */
  takeAll(): T[] {
    const rest = this.#items.slice(this.#head) as T[]
    this.#items = []
    this.#head = 0
    return rest
  }

  /** Resolves once nothing is queued or running. */
  idle(): Promise<void> {
    if (!this.#running && this.size === 0) return Promise.resolve()
    return (this.#idle ??= Promise.withResolvers<void>()).promise
  }

  async #drain(): Promise<void> {
    this.#running = true
    while (this.#head < this.#items.length) {
      const item = this.#items[this.#head] as T
      this.#items[this.#head++] = undefined // let the processed message be collected
      try {
        await this.process(item)
      } catch (err) {
        this.onError(err)
      }
    }
    this.#items = []
    this.#head = 0
    this.#running = false
    this.#idle?.resolve()
    this.#idle = undefined
  }
}
