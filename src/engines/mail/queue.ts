/**
 * The jobs that send outbox mails, one per row, the job's id being the row's id: BullMQ in a
 * cluster (REDIS_URL), in-process on a lone node — the same contract either way. A job makes up
 * to `attempts` attempts (./delivery.ts), waiting `backoffMs · 2^(n − 1)` after the n-th failure,
 * at most `maxBackoffMs` (the row's next due time follows the same rule: ./delivery.ts
 * `retryDelay`). A job that ran out of attempts leaves its row pending with its next due time;
 * the sweep (src/features/notifications.ts) adds a job for it again then, so an outage longer
 * than one job's retries delays mail and loses none.
 *
 * Adding a job for a row that has one waiting or running does nothing (BullMQ keeps one job per
 * id; the local queue one entry per id); a job for a row that was sent meanwhile claims nothing
 * and ends.
 */
import { Queue, Worker, type Job } from 'bullmq'
import { Redis } from 'ioredis'
import type { Logger } from '../../core/logger.ts'
import { retryDelay, type AttemptOutcome } from './delivery.ts'

export interface MailQueue {
  /** Make sure a job for row `id` exists. */
  add(id: string): Promise<void>
  start(): Promise<void>
  /** Stop taking jobs; resolves when the attempts in progress are done. */
  stop(): Promise<void>
}

export interface MailQueueOptions {
  /** One attempt at row `id` (MailDelivery.attempt). */
  attempt(id: string): Promise<AttemptOutcome>
  attempts: number
  /** The wait after the first failure, doubled after each further one, at most `maxBackoffMs`. */
  backoffMs: number
  maxBackoffMs: number
  /** Attempts running at once on this node. */
  concurrency: number
  logger: Logger
}

class RetryLater extends Error {
  override name = 'RetryLater'
}

/** BullMQ queue `mail` under `prefix`, consumed by every node. */
export class BullMailQueue implements MailQueue {
  readonly #redis: Redis
  #queue: Queue | undefined
  #worker: Worker | undefined

  constructor(
    redisUrl: string,
    private readonly prefix: string,
    private readonly opts: MailQueueOptions,
  ) {
    // BullMQ requires maxRetriesPerRequest: null on connections its workers block on.
    this.#redis = new Redis(redisUrl, { maxRetriesPerRequest: null, lazyConnect: true, connectionName: 'quadrax-mail' })
    this.#redis.on('error', (err) => opts.logger.warn({ err }, 'mail queue redis error'))
  }

  async start(): Promise<void> {
    await this.#redis.connect()
    const { attempts, backoffMs, maxBackoffMs, logger } = this.opts
    this.#queue = new Queue('mail', {
      connection: this.#redis,
      prefix: this.prefix,
      streams: { events: { maxLen: 100 } },
      // Removed when done either way, so the sweep can add a job with the same id later (a row
      // whose job ran out of attempts, or one a dead node had claimed).
      defaultJobOptions: { attempts, backoff: { type: 'capped' }, removeOnComplete: true, removeOnFail: true },
    })
    this.#queue.on('error', (err) => logger.warn({ err }, 'mail queue error'))
    this.#worker = new Worker(
      'mail',
      async (job: Job<{ id: string }>) => {
        const outcome = await this.opts.attempt(job.data.id)
        if (outcome === 'retry') throw new RetryLater(`mail ${job.data.id}: not sent; BullMQ tries again after its backoff`)
        return outcome
      },
      {
        connection: this.#redis,
        prefix: this.prefix,
        concurrency: this.opts.concurrency,
        // For the jobs' backoff type `capped` (not one of BullMQ's own, whose `exponential` has no ceiling): the row's waits.
        settings: { backoffStrategy: (attemptsMade: number) => retryDelay(attemptsMade, { baseMs: backoffMs, maxMs: maxBackoffMs }) },
      },
    )
    this.#worker.on('error', (err) => logger.warn({ err }, 'mail worker error'))
    await this.#worker.waitUntilReady()
  }

  async add(id: string): Promise<void> {
    await this.#queue!.add('mail', { id }, { jobId: id })
  }

  async stop(): Promise<void> {
    await this.#worker?.close()
    await this.#queue?.close()
    await this.#redis.quit().catch(() => this.#redis.disconnect())
  }
}

/** The same jobs in this process (no Redis: a lone node). */
export class LocalMailQueue implements MailQueue {
  /** Rows with a job: waiting for a slot, running, or waiting out a backoff. */
  readonly #jobs = new Map<string, { attempt: number; timer?: ReturnType<typeof setTimeout> }>()
  readonly #ready: string[] = []
  readonly #running = new Set<Promise<void>>()
  #stopped = false

  constructor(private readonly opts: MailQueueOptions) {}

  async start(): Promise<void> {}

  async add(id: string): Promise<void> {
    if (this.#stopped || this.#jobs.has(id)) return
    this.#jobs.set(id, { attempt: 0 })
    this.#ready.push(id)
    this.#pump()
  }

  #pump(): void {
    while (!this.#stopped && this.#running.size < this.opts.concurrency && this.#ready.length > 0) {
      const id = this.#ready.shift()!
      const p = this.#run(id).finally(() => {
        this.#running.delete(p)
        this.#pump()
      })
      this.#running.add(p)
    }
  }

  async #run(id: string): Promise<void> {
    const job = this.#jobs.get(id)!
    job.attempt++
    let outcome: AttemptOutcome
    try {
      outcome = await this.opts.attempt(id)
    } catch (err) {
      // The database could not be asked: as BullMQ would, count it and try again.
      this.opts.logger.warn({ err, mail: id }, 'mail attempt failed')
      outcome = 'retry'
    }
    if (outcome !== 'retry' || job.attempt >= this.opts.attempts || this.#stopped) {
      this.#jobs.delete(id)
      return
    }
    job.timer = setTimeout(() => {
      job.timer = undefined
      this.#ready.push(id)
      this.#pump()
    }, retryDelay(job.attempt, { baseMs: this.opts.backoffMs, maxMs: this.opts.maxBackoffMs }))
  }

  async stop(): Promise<void> {
    this.#stopped = true
    for (const job of this.#jobs.values()) if (job.timer) clearTimeout(job.timer)
    await Promise.allSettled([...this.#running])
    this.#jobs.clear()
  }
}
