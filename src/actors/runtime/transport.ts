/**
 * Messages between nodes: one BullMQ queue per shard, consumed only by the shard's owner (its
 * worker, shard-worker.ts, runs while it owns the shard). The reply is the job's result; the
 * owner also publishes it on the asking node's Redis channel, which answers the ask without
 * waiting for BullMQ's completion bookkeeping (the job result stays the record: after a
 * subscriber reconnect, asks still waiting look their job up). A reply nobody waits for any
 * more (the ask timed out, its node is gone) is dropped. Committed events are fanned out to
 * every node on one channel.
 *
 * The costly part of a cross-node ask on a small machine is not Redis but this process's
 * socket writes (each wakes Redis through the kernel: bench/actors.ts counts the commands).
 * So the publishes of a tick — a turn's reply and its events — go out as one pipeline.
 *
 * Failover: a job taken by a node that dies keeps its lock until lockDuration (twice the lease
 * TTL) has passed; the stalled-job check of the shard's next owner then puts it back in the
 * queue (BullMQ needs two checks, so up to two stalledIntervals — half a TTL each — more), and
 * the inbox makes the redelivery apply at most once. With the default 5 s TTL a message that
 * was in flight on a dead node is redelivered within about 15 s.
 */
import { Queue, type Job } from 'bullmq'
import { Redis, type RedisOptions } from 'ioredis'
import type { Logger } from '../../core/logger.ts'
import type { OutboxEvent } from '../../store/outbox.ts'
import type { RuntimeConfig } from './config.ts'
import { ActorSystemStoppedError, deserializeError, NotOwnerError, serializeError, type SerializedError } from './errors.ts'
import type { Envelope, Reply } from './instance.ts'
import { QUEUE_STATES, type QueueJobCounts } from './metrics.ts'
import { ShardWorker } from './shard-worker.ts'

export interface TransportOptions {
  redis: string | RedisOptions
  prefix: string
  nodeId: string
  config: RuntimeConfig
  logger: Logger
  /** Hand a message taken from a shard queue to the local actor. */
  deliver(env: Envelope): void
  /** Events committed on another node. */
  onEvents(events: OutboxEvent[]): void
  /** A job of this node's shard queues was found stalled and put back (BullMQ's stalled check). */
  onStalled(): void
}

interface JobData {
  kind: string
  id: string
  message: unknown
  messageId: string
  /** The asking node, when it waits for a reply. */
  replyTo?: string
  /** What the message carries into its turn's transaction (config.ts TurnStamps). */
  stamp?: unknown
}

type WireReply = { ok: true; reply: unknown } | { ok: false; error: SerializedError }

/** Delivery attempts of a job that reaches a node while its shard changes owner. */
const JOB_ATTEMPTS = 40
const JOB_RETRY_DELAY_MS = 250
/** Longest a /metrics scrape waits for the queues' job counts. */
const COUNT_TIMEOUT_MS = 2000

export class ShardTransport {
  /** Commands: BullMQ queues and workers, leases, publishing. */
  readonly redis: Redis
  readonly #sub: Redis
  readonly #opts: TransportOptions
  readonly #queues = new Map<number, Queue>()
  readonly #workers = new Map<number, ShardWorker<JobData, WireReply>>()
  /** Asks waiting for a reply from another node, by job id. */
  readonly #pending = new Map<string, { env: Envelope; shard: number }>()
  #sweeper: ReturnType<typeof setInterval> | undefined
  /** Publishes of this tick, sent together (see the header). */
  #outgoing: [channel: string, message: string][] = []
  #wasConnected = false
  /** How this node's own event fan-out starts (publishEvents' JSON, `from` first). */
  readonly #ownEvents: string
  /** Called when another node asks every node to look at the shard map again. */
  onRebalance: () => void = () => {}

  constructor(opts: TransportOptions) {
    this.#opts = opts
    this.#ownEvents = `{"from":${JSON.stringify(opts.nodeId)},`
    // BullMQ requires maxRetriesPerRequest: null on connections its workers block on.
    const base = { maxRetriesPerRequest: null, lazyConnect: true, connectionName: `quadrax-${opts.nodeId}` }
    this.redis = typeof opts.redis === 'string' ? new Redis(opts.redis, base) : new Redis({ ...opts.redis, ...base })
    this.#sub = this.redis.duplicate()
    // ioredis reconnects by itself; without a listener it would print every failed attempt.
    this.redis.on('error', (err) => opts.logger.warn({ err }, 'redis connection error'))
    this.#sub.on('error', (err) => opts.logger.warn({ err }, 'redis subscriber connection error'))
  }

  /** A key of this runtime in Redis. */
  key(name: string): string {
    return `${this.#opts.prefix}:actors:${name}`
  }

  get #replyChannel(): string {
    return this.key(`reply:${this.#opts.nodeId}`)
  }

  async start(): Promise<void> {
    await this.redis.connect()
    await this.#sub.connect()
    this.#sub.on('message', (channel: string, text: string) => this.#onMessage(channel, text))
    this.#sub.on('ready', () => {
      // Pub/sub messages sent while the subscriber was away are lost: look the waiting asks'
      // jobs up for results that arrived meanwhile.
      if (this.#wasConnected) void this.#recoverReplies()
      this.#wasConnected = true
    })
    this.#wasConnected = true
    await this.#sub.subscribe(this.#replyChannel, this.key('events'), this.key('rebalance'))
    this.#sweeper = setInterval(() => {
      const now = Date.now()
      for (const [jobId, p] of this.#pending) if (p.env.deadline < now) this.#pending.delete(jobId)
    }, 1000)
  }

  #queue(shard: number): Queue {
    let q = this.#queues.get(shard)
    if (!q) {
      q = new Queue(`actors-${shard}`, {
        connection: this.redis,
        prefix: this.#opts.prefix,
        // Nobody reads these queues' event streams (replies go by pub/sub): keep them short.
        streams: { events: { maxLen: 100 } },
        defaultJobOptions: {
          attempts: JOB_ATTEMPTS,
          backoff: { type: 'fixed', delay: JOB_RETRY_DELAY_MS },
          // Kept a minute: the result of an ask whose pub/sub reply was missed is read here.
          removeOnComplete: { age: 60, count: 10_000 },
          removeOnFail: { age: 3600 },
        },
      })
      q.on('error', (err) => this.#opts.logger.warn({ err, shard }, 'shard queue error'))
      this.#queues.set(shard, q)
    }
    return q
  }

  /** Send `env` to the owner of `shard` through the shard's queue. */
  send(shard: number, env: Envelope): void {
    const jobId = Bun.randomUUIDv7()
    const data: JobData = { kind: env.kind, id: env.id, message: env.message, messageId: env.messageId }
    if (env.stamp !== undefined) data.stamp = env.stamp
    const waits = env.wantsReply
    if (waits) {
      data.replyTo = this.#opts.nodeId
      this.#pending.set(jobId, { env, shard })
    }
    this.#queue(shard)
      .add('message', data, { jobId })
      .then(
        () => {
          if (!waits) env.settle({ ok: true, reply: undefined })
        },
        (error) => {
          this.#pending.delete(jobId)
          env.settle({ ok: false, error })
        },
      )
  }

  /** Start consuming `shard`'s queue (this node now owns the shard). */
  async startWorker(shard: number): Promise<void> {
    if (this.#workers.has(shard)) return
    const { config } = this.#opts
    const worker = new ShardWorker<JobData, WireReply>(`actors-${shard}`, (job) => this.#process(job), {
      connection: this.redis,
      prefix: this.#opts.prefix,
      name: this.#opts.nodeId,
      concurrency: config.queueConcurrency,
      // Twice the lease: a busy event loop renewing late must not make a healthy node's jobs
      // look stalled (a redelivery would be harmless, thanks to the inbox, but wasted work).
      lockDuration: 2 * config.leaseTtlMs,
      stalledInterval: Math.max(250, Math.floor(config.leaseTtlMs / 2)),
      // A job caught by several node failures must still be redelivered, not failed.
      maxStalledCount: 1000,
      drainDelay: 5,
    })
    worker.on('error', (err) => this.#opts.logger.warn({ err, shard }, 'shard worker error'))
    worker.on('stalled', (jobId) => {
      this.#opts.logger.warn({ shard, jobId }, 'stalled job put back in its shard queue')
      this.#opts.onStalled()
    })
    this.#workers.set(shard, worker)
    await worker.waitUntilReady()
  }

  /** Stop consuming `shard`'s queue, after the jobs in progress are done. */
  async stopWorker(shard: number): Promise<void> {
    const worker = this.#workers.get(shard)
    if (!worker) return
    this.#workers.delete(shard)
    await worker.close()
  }

  async #process(job: Job<JobData>): Promise<WireReply> {
    const d = job.data
    const reply = await new Promise<Reply>((settle) =>
      this.#opts.deliver({
        kind: d.kind,
        id: d.id,
        message: d.message,
        messageId: d.messageId,
        stamp: d.stamp,
        // A job can be delivered twice (stalled-job recovery after a crash): always check.
        dedup: true,
        origin: 'queue',
        wantsReply: d.replyTo !== undefined,
        deadline: Date.now() + this.#opts.config.askTimeoutMs,
          settle,
      }),
    )
    // Not this node's shard (any more): fail the attempt so the job goes back to the queue
    // for the shard's owner.
    if (!reply.ok && reply.error instanceof NotOwnerError) throw reply.error
    const wire: WireReply = reply.ok ? { ok: true, reply: reply.reply ?? null } : { ok: false, error: serializeError(reply.error) }
    if (d.replyTo) this.#publish(this.key(`reply:${d.replyTo}`), JSON.stringify({ jobId: job.id, ...wire }))
    return wire
  }

  #onMessage(channel: string, text: string): void {
    try {
      if (channel === this.#replyChannel) {
        const msg = JSON.parse(text) as WireReply & { jobId: string }
        this.#answer(msg.jobId, msg)
      } else if (channel === this.key('events')) {
        // This node's own fan-out comes back too; `from` leads the text, so it is skipped unparsed.
        if (text.startsWith(this.#ownEvents)) return
        const msg = JSON.parse(text) as { from: string; events: (OutboxEvent & { at: string })[] }
        if (msg.from !== this.#opts.nodeId) this.#opts.onEvents(msg.events.map((e) => ({ ...e, at: new Date(e.at) })))
      } else if (channel === this.key('rebalance')) {
        if (text !== this.#opts.nodeId) this.onRebalance()
      }
    } catch (err) {
      this.#opts.logger.warn({ err, channel }, 'bad cluster message')
    }
  }

  #answer(jobId: string, wire: WireReply): void {
    const p = this.#pending.get(jobId)
    if (!p) return
    this.#pending.delete(jobId)
    p.env.settle(wire.ok ? { ok: true, reply: wire.reply } : { ok: false, error: deserializeError(wire.error) })
  }

  async #recoverReplies(): Promise<void> {
    for (const [jobId, p] of [...this.#pending]) {
      try {
        const job = await this.#queue(p.shard).getJob(jobId)
        if (job?.finishedOn && job.returnvalue) this.#answer(jobId, job.returnvalue as WireReply)
      } catch (err) {
        this.#opts.logger.warn({ err }, 'reply recovery failed')
      }
    }
  }

  /** Fan committed events out to the other nodes. */
  publishEvents(events: OutboxEvent[]): void {
    this.#publish(this.key('events'), JSON.stringify({ from: this.#opts.nodeId, events }))
  }

  /** Publish at the end of this tick, in one write with the tick's other publishes. */
  #publish(channel: string, message: string): void {
    if (this.#outgoing.push([channel, message]) > 1) return
    queueMicrotask(() => {
      const batch = this.#outgoing
      this.#outgoing = []
      const failed = (err: unknown) => this.#opts.logger.warn({ err, channels: batch.map(([c]) => c) }, 'publish failed')
      if (batch.length === 1) {
        this.redis.publish(batch[0]![0], batch[0]![1]).catch(failed)
        return
      }
      const pipe = this.redis.pipeline()
      for (const [c, m] of batch) pipe.publish(c, m)
      pipe.exec().then((results) => results?.forEach(([err]) => err && failed(err)), failed)
    })
  }

  /**
   * Jobs in the queues of the shards this node consumes, by state (read at /metrics scrape
   * time). Undefined when Redis does not answer within COUNT_TIMEOUT_MS: a scrape must not hang
   * on a Redis outage (commands wait for the reconnection).
   */
  async queueJobs(): Promise<QueueJobCounts | undefined> {
    const reads = Promise.all([...this.#workers.keys()].map((s) => this.#queue(s).getJobCounts(...QUEUE_STATES)))
    reads.catch(() => {})
    let timer: ReturnType<typeof setTimeout> | undefined
    const timeout = new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), COUNT_TIMEOUT_MS)))
    try {
      const counts = await Promise.race([reads, timeout])
      if (!counts) return undefined
      const total = Object.fromEntries(QUEUE_STATES.map((s) => [s, 0])) as QueueJobCounts
      for (const c of counts) for (const s of QUEUE_STATES) total[s] += c[s] ?? 0
      return total
    } catch (err) {
      this.#opts.logger.debug({ err }, 'could not count shard queue jobs')
      return undefined
    } finally {
      clearTimeout(timer)
    }
  }

  /** Ask every other node to look at the shard map now (a shard was freed). */
  notifyRebalance(): void {
    this.redis.publish(this.key('rebalance'), this.#opts.nodeId).catch(() => {})
  }

  async stop(): Promise<void> {
    clearInterval(this.#sweeper)
    await Promise.all([...this.#workers.keys()].map((s) => this.stopWorker(s)))
    await Promise.all([...this.#queues.values()].map((q) => q.close()))
    this.#queues.clear()
    // The turns may still commit on their owners; their replies then go to a channel nobody reads.
    for (const p of this.#pending.values()) p.env.settle({ ok: false, error: new ActorSystemStoppedError() })
    this.#pending.clear()
    this.#sub.disconnect()
    await this.redis.quit().catch(() => this.redis.disconnect())
  }
}
