/**
 * The runtime's Prometheus metrics, registered on the server's Metrics registry (or on a
 * private one when none is given, so a runtime in a test or bench needs no wiring).
 *
 * Live actors and mailbox depth are sampled when /metrics is scraped rather than counted on
 * every message, and turn durations go to a FastHistogram: nothing on the per-message path
 * hashes label objects.
 */
import { Gauge, type Counter, type Histogram } from 'prom-client'
import { FastHistogram, Metrics } from '../../core/metrics.ts'

/** Per kind: live activations and messages waiting in their mailboxes. */
export type ActorSample = Map<string, { live: number; waiting: number }>

const TURN_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30]

export class RuntimeMetrics {
  readonly turnDuration: { observe(kind: string, outcome: string, seconds: number): void }
  readonly batchTurns: Histogram<string>
  readonly shardMoves: Counter<string>
  readonly shardsOwned: Gauge<string>
  readonly fencedBatches: Counter<string>
  readonly remindersFired: Counter<string>

  constructor(metrics: Metrics = new Metrics({ defaultMetrics: false }), sample: () => ActorSample) {
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
          for (const [kind, s] of sample()) this.set({ kind }, s.live)
        },
      })
      new Gauge({
        name: 'actor_mailbox_depth',
        help: 'Messages waiting in actor mailboxes, by kind',
        labelNames: ['kind'],
        registers: [registry],
        collect() {
          this.reset()
          for (const [kind, s] of sample()) this.set({ kind }, s.waiting)
        },
      })
    }
    const turns =
      (registry.getSingleMetric('actor_turn_duration_seconds') as unknown as FastHistogram | undefined) ??
      new FastHistogram('actor_turn_duration_seconds', 'Actor turn duration, handler start to commit, by kind and outcome', ['kind', 'outcome'], TURN_BUCKETS, registry)
    this.turnDuration = { observe: (kind, outcome, seconds) => turns.observe(`${kind}\u0000${outcome}`, [kind, outcome], seconds) }
    this.batchTurns = metrics.histogram('actor_commit_batch_turns', 'Turns committed per transaction', [], [1, 2, 4, 8, 16, 32, 64, 128])
    this.shardMoves = metrics.counter('actor_shard_moves_total', 'Shards this node claimed, released or lost', ['direction'])
    this.shardsOwned = metrics.gauge('actor_shards_owned', 'Shards this node owns')
    this.fencedBatches = metrics.counter('actor_fenced_batches_total', 'Turn transactions refused by the shard epoch check')
    this.remindersFired = metrics.counter('actor_reminders_fired_total', 'Reminders delivered, by kind', ['kind'])
  }
}
