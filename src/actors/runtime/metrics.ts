/**
 * The runtime's Prometheus metrics, registered on the server's Metrics registry (or on a
 * private one when none is given, so a runtime in a test or bench needs no wiring). The names
 * are the ones docs/metrics.md lists and docs/grafana-dashboard.json reads: keep them.
 *
 * Nothing on the per-message path hashes label objects: live actors, mailbox depth and the
 * shard queues' job counts are sampled when /metrics is scraped, and turn and ask durations go
 * to FastHistograms keyed by a string. The counters that move (stalled jobs, failed lease
 * renewals) move rarely.
 */
import { Gauge, type Counter, type Histogram } from 'prom-client'
import { FastHistogram, Metrics } from '../../core/metrics.ts'

/** Per kind: live activations and messages waiting in their mailboxes. */
export type ActorSample = Map<string, { live: number; waiting: number }>

/** The BullMQ job states counted in actor_queue_jobs. */
export const QUEUE_STATES = ['waiting', 'active', 'delayed', 'failed'] as const
export type QueueJobCounts = Record<(typeof QUEUE_STATES)[number], number>

/** How an ask ended, as its caller saw it. */
export type AskOutcome = 'ok' | 'error' | 'timeout'

export interface RuntimeSamples {
  /** Live actors and mailbox depths, per kind. */
  actors(): ActorSample
  /** Jobs in this node's shard queues (cluster mode; undefined alone, or when Redis did not answer). */
  queueJobs(): Promise<QueueJobCounts | undefined>
}

const TURN_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30]

/** A FastHistogram labelled (kind, outcome), shared by every runtime on the registry. */
function kindOutcomeHistogram(registry: Metrics['registry'], name: string, help: string) {
  const h = (registry.getSingleMetric(name) as unknown as FastHistogram | undefined) ?? new FastHistogram(name, help, ['kind', 'outcome'], TURN_BUCKETS, registry)
  return { observe: (kind: string, outcome: string, seconds: number) => h.observe(`${kind}\u0000${outcome}`, [kind, outcome], seconds) }
}

export class RuntimeMetrics {
  readonly turnDuration: { observe(kind: string, outcome: string, seconds: number): void }
  /** From `ask` to its reply, local or through another node's shard queue. */
  readonly askDuration: { observe(kind: string, outcome: AskOutcome, seconds: number): void }
  readonly batchTurns: Histogram<string>
  readonly shardMoves: Counter<string>
  readonly shardsOwned: Gauge<string>
  readonly fencedBatches: Counter<string>
  readonly remindersFired: Counter<string>
  readonly stalledJobs: Counter<string>
  readonly leaseRenewFailures: Counter<string>

  constructor(metrics: Metrics = new Metrics({ defaultMetrics: false }), samples: RuntimeSamples) {
    const { registry } = metrics
    // Registered once per registry: a second runtime on the same registry (tests) shares them.
    if (!registry.getSingleMetric('actor_live')) {
      new Gauge({
        name: 'actor_live',
        help: 'Live (activated) actors by kind',
        labelNames: ['kind'],
        registers: [registry],
        collect() {
          this.reset()
          for (const [kind, s] of samples.actors()) this.set({ kind }, s.live)
        },
      })
      new Gauge({
        name: 'actor_mailbox_depth',
        help: 'Messages waiting in actor mailboxes, by kind',
        labelNames: ['kind'],
        registers: [registry],
        collect() {
          this.reset()
          for (const [kind, s] of samples.actors()) this.set({ kind }, s.waiting)
        },
      })
      new Gauge({
        name: 'actor_queue_jobs',
        help: "Jobs in this node's shard queues (BullMQ) by state, read from Redis at scrape time",
        labelNames: ['state'],
        registers: [registry],
        async collect() {
          const counts = await samples.queueJobs()
          this.reset()
          if (counts) for (const state of QUEUE_STATES) this.set({ state }, counts[state])
        },
      })
    }
    this.turnDuration = kindOutcomeHistogram(registry, 'actor_turn_duration_seconds', 'Actor turn duration, handler start to commit, by kind and outcome')
    this.askDuration = kindOutcomeHistogram(registry, 'actor_ask_duration_seconds', 'Time from an ask to its reply (ok, error) or its timeout, by kind; local or through a shard queue')
    this.batchTurns = metrics.histogram('actor_commit_batch_turns', 'Turns committed per transaction', [], [1, 2, 4, 8, 16, 32, 64, 128])
    this.shardMoves = metrics.counter('actor_shard_moves_total', 'Shards this node claimed, released or lost', ['direction'])
    this.shardsOwned = metrics.gauge('actor_shards_owned', 'Shards this node owns')
    this.fencedBatches = metrics.counter('actor_fenced_batches_total', 'Turn transactions refused by the shard epoch check')
    this.remindersFired = metrics.counter('actor_reminders_fired_total', 'Reminders delivered, by kind', ['kind'])
    this.stalledJobs = metrics.counter('actor_stalled_jobs_total', "Jobs of this node's shard queues found stalled (their worker stopped renewing the lock) and put back for redelivery")
    this.leaseRenewFailures = metrics.counter('actor_lease_renew_failures_total', 'Heartbeats that did not renew this node\'s shard leases in time (Redis failed or did not answer within half the lease TTL)')
  }
}
