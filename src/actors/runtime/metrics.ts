/**
 * The runtime's Prometheus metrics, registered on the server's Metrics registry (or on a
 * private one when none is given, so a runtime in a test or bench needs no wiring).
 */
import type { Counter, Gauge, Histogram } from 'prom-client'
import { Metrics } from '../../core/metrics.ts'

export class RuntimeMetrics {
  readonly live: Gauge<string>
  readonly mailboxDepth: Gauge<string>
  readonly turnDuration: Histogram<string>
  readonly batchTurns: Histogram<string>
  readonly shardMoves: Counter<string>
  readonly shardsOwned: Gauge<string>
  readonly fencedBatches: Counter<string>
  readonly remindersFired: Counter<string>

  constructor(metrics: Metrics = new Metrics({ defaultMetrics: false })) {
    this.live = metrics.gauge('actor_live', 'Live (activated) actors by kind', ['kind'])
    this.mailboxDepth = metrics.gauge('actor_mailbox_depth', 'Messages waiting in actor mailboxes, by kind', ['kind'])
    this.turnDuration = metrics.histogram(
      'actor_turn_duration_seconds',
      'Actor turn duration from start of handler to commit, by kind and outcome',
      ['kind', 'outcome'],
      [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5, 30],
    )
    this.batchTurns = metrics.histogram('actor_commit_batch_turns', 'Turns committed per transaction', [], [1, 2, 4, 8, 16, 32, 64, 128])
    this.shardMoves = metrics.counter('actor_shard_moves_total', 'Shards this node claimed, released or lost', ['direction'])
    this.shardsOwned = metrics.gauge('actor_shards_owned', 'Shards this node owns')
    this.fencedBatches = metrics.counter('actor_fenced_batches_total', 'Turn transactions refused by the shard epoch check')
    this.remindersFired = metrics.counter('actor_reminders_fired_total', 'Reminders delivered, by kind', ['kind'])
  }
}
