/**
 * The consumer of a shard queue: a BullMQ Worker with its own fetch loop, so that a message
 * reaching an idle shard runs without Redis work competing with it.
 *
 * BullMQ's loop (Worker.mainLoop), with concurrency above 1, asks Redis for another job before
 * it starts the one it just took, and starts it only when that answer (an empty queue) is in;
 * the marker the first fetch leaves behind then wakes the blocking wait once more for nothing.
 * So a job reaching an idle worker waits one Redis round trip, and runs its turn beside two
 * more, each of which costs this process a socket write and a parse (bench/actors.ts measured
 * about 0.4 ms of a 2.6 ms cross-node ask going to them on a busy 2-core machine). Here a job
 * that found the queue empty starts at once, and the loop looks for the next one when it has
 * finished (BullMQ's fetch-next on completion brings it in the same round trip), or after
 * LOOKAHEAD_MS if it runs longer: another message of the shard waits at most that long behind
 * a slow turn. A job taken from a queue that was not empty (a backlog) is followed by the next
 * fetch at once, as in BullMQ, so concurrency ramps up as fast as there.
 *
 * Everything else is BullMQ's, through its public and protected API: `getNextJob` (blocking on
 * the queue's marker, promoting delayed jobs), `processJob` (lock tracking, completion or
 * failure with the job's attempts and backoff, fetch-next), the lock renewer, the stalled-job
 * checker, and `close()`, which waits for `mainLoopRunning`: this loop ends only once the jobs
 * it started are finished.
 */
import { Worker, type Job, type Processor, type WorkerOptions } from 'bullmq'

/** Longest a job that found the queue empty runs before the loop looks for the next one. */
const LOOKAHEAD_MS = 2
/** Pause before fetching again after a Redis error (BullMQ's runRetryDelay is 15 s). */
const FETCH_RETRY_MS = 1000

export class ShardWorker<Data = unknown, Result = unknown> extends Worker<Data, Result> {
  #active = 0
  #tokens = 0
  /** The last fetch found the queue empty (BullMQ's 'drained'). */
  #idle = true
  #wake: PromiseWithResolvers<void> | undefined

  constructor(name: string, processor: Processor<Data, Result>, opts: WorkerOptions) {
    // BullMQ's constructor starts run() itself (autorun), before this class's fields exist.
    super(name, processor, { ...opts, autorun: false })
    this.on('drained', () => (this.#idle = true))
    if (opts.autorun !== false) this.run().catch((err: Error) => this.emit('error', err))
  }

  override async run(): Promise<void> {
    if (this.running) throw new Error('ShardWorker is already running')
    this.running = true
    try {
      if (this.closing) return
      await this.startStalledCheckTimer()
      if (!this.opts.skipLockRenewal) this.lockManager.start()
      this.mainLoopRunning = this.#loop()
      await this.mainLoopRunning
    } finally {
      this.running = false
    }
  }

  /** Resolves when a job finishes, or after `ms`. */
  #finished(ms?: number): Promise<void> {
    const wake = (this.#wake ??= Promise.withResolvers<void>())
    if (ms === undefined) return wake.promise
    let timer: ReturnType<typeof setTimeout> | undefined
    return Promise.race([wake.promise, new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)))]).finally(() => clearTimeout(timer))
  }

  async #loop(): Promise<void> {
    while (!this.closing) {
      if (this.#active >= this.concurrency) {
        await this.#finished()
        continue
      }
      const token = `${this.id}:${this.#tokens++}`
      let job: Job<Data, Result> | undefined
      try {
        job = await this.getNextJob(token, { block: true })
      } catch (err) {
        if (this.closing) break
        this.emit('error', err as Error)
        await Bun.sleep(FETCH_RETRY_MS)
        continue
      }
      if (!job) continue
      const alone = this.#idle
      this.#idle = false
      void this.#run(job, token)
      if (alone) await this.#finished(LOOKAHEAD_MS)
    }
    while (this.#active > 0) await this.#finished()
  }

  /** Process `first`, then each job its completion fetched (BullMQ's fetch-next, same token). */
  async #run(first: Job<Data, Result>, token: string): Promise<void> {
    this.#active++
    try {
      let job: Job<Data, Result> | void = first
      while (job) {
        job = await this.processJob(job, token, () => !this.closing && this.#active <= this.concurrency)
        const wake = this.#wake
        this.#wake = undefined
        wake?.resolve()
      }
    } catch (err) {
      this.emit('error', err as Error)
    } finally {
      this.#active--
      const wake = this.#wake
      this.#wake = undefined
      wake?.resolve()
    }
  }
}
