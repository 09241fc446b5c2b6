/**
 * Options of the actor runtime, apart from behaviour (BullMQ keeps its option shapes in
 * their own files the same way). Defaults are applied once, in resolveConfig, and checked
 * there with a message that names the option.
 */
import type { RedisOptions } from 'ioredis'
import type postgres from 'postgres'
import type { Logger } from '../../core/logger.ts'
import type { Metrics } from '../../core/metrics.ts'
import type { Db, Sql } from '../../store/db.ts'

export interface RuntimeConfig {
  /** This node's id (NODE_ID); generated when absent. */
  nodeId: string
  /** Number of shards actor keys hash into (CLUSTER_SHARDS). Must be equal on every node. */
  shards: number
  /** Shard lease and node heartbeat time-to-live (CLUSTER_LEASE_TTL_MS). Bounds failover. */
  leaseTtlMs: number
  /** An actor with nothing to do for this long is passivated. */
  idleTimeoutMs: number
  /** Live actors above this count are passivated, least recently used first. */
  maxLiveActors: number
  /** Default `ask` timeout. */
  askTimeoutMs: number
  /** Most turns committed in one transaction. */
  maxBatchTurns: number
  /**
   * Group-commit transactions in flight at most (each holds one pooled connection). While
   * one commits, the next waits and grows, unless a quarter of maxBatchTurns is already
   * waiting: then another goes out in parallel.
   */
  commitConcurrency: number
  /** How often due reminders are looked for (a local `schedule` also wakes the poller). */
  reminderPollMs: number
  /** Inbox rows are kept this long: a message redelivered later than this is applied again. */
  inboxRetentionMs: number
  /** Outbox events are kept this long: subscribers cannot resume from further back. */
  outboxRetentionMs: number
  /** Messages of one shard queue processed at once by its owner (BullMQ worker concurrency). */
  queueConcurrency: number
  /** How long `stop()` waits for turns in progress before giving up on them. */
  shutdownTimeoutMs: number
}

export interface ActorSystemOptions {
  /** The pool: actor state loads, turn transactions (one connection per batch in flight). */
  sql: Sql
  /** Cluster mode when set: heartbeats, shard leases, BullMQ shard queues, event fan-out. */
  redis?: string | RedisOptions
  logger: Logger
  metrics?: Metrics
  config?: Partial<RuntimeConfig>
  /** Prefix of every Redis key and BullMQ queue of this runtime (tests use a unique one). */
  queuePrefix?: string
  /**
   * A record a message sent from outside any turn carries into the turn that applies it,
   * written in that turn's transaction: the audit log's event of the HTTP request that sent
   * it (src/store/audit.ts AuditLog.turnStamps).
   */
  stamps?: TurnStamps
}

/**
 * Stamps (ActorSystemOptions.stamps). `take` is called as `ask` or `tell` sends a message
 * (never inside a turn: handlers and the tasks they start run outside the async context of
 * whoever sent the message that woke their actor); what it returns is JSON, travels with the
 * message (to another node too), and is inserted in the transaction of the turn that applies
 * it. A turn that fails or was applied before writes nothing.
 */
export interface TurnStamps {
  /** What a message to actor (kind, id) carries (undefined: nothing). */
  take(kind: string, id: string): unknown
  /**
   * The insert of the stamps of turns about to commit on `conn`, as a postgres.js fragment
   * holding one data-modifying common table expression (`name as (insert …)`): the runtime
   * adds it to the statement that writes the turns' inbox rows and events.
   */
  insert(conn: Db, stamps: unknown[]): postgres.PendingQuery<postgres.Row[]>
}

const DEFAULTS: Omit<RuntimeConfig, 'nodeId'> = {
  shards: 64,
  leaseTtlMs: 5_000,
  idleTimeoutMs: 5 * 60_000,
  maxLiveActors: 10_000,
  askTimeoutMs: 30_000,
  maxBatchTurns: 64,
  commitConcurrency: 4,
  reminderPollMs: 1_000,
  inboxRetentionMs: 7 * 24 * 3600_000,
  outboxRetentionMs: 7 * 24 * 3600_000,
  queueConcurrency: 256,
  shutdownTimeoutMs: 10_000,
}

export function resolveConfig(partial: Partial<RuntimeConfig> = {}): RuntimeConfig {
  const defined = Object.fromEntries(Object.entries(partial).filter(([, v]) => v !== undefined))
  const c: RuntimeConfig = { ...DEFAULTS, nodeId: `node-${crypto.randomUUID().slice(0, 8)}`, ...defined }
  const positive = (name: keyof RuntimeConfig) => {
    const v = c[name]
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new Error(`actor runtime: ${name} must be > 0 (got ${String(v)})`)
  }
  for (const key of Object.keys(DEFAULTS) as (keyof RuntimeConfig)[]) positive(key)
  if (!Number.isInteger(c.shards) || c.shards > 4096) throw new Error(`actor runtime: shards must be an integer from 1 to 4096 (got ${c.shards})`)
  // A lease renewed every ttl/4 must survive a missed renewal or two; below ~300 ms a GC pause
  // or a busy event loop would make shards flap between nodes.
  if (c.leaseTtlMs < 300) throw new Error(`actor runtime: leaseTtlMs must be >= 300 (got ${c.leaseTtlMs})`)
  if (!/^[A-Za-z0-9_.:-]{1,100}$/.test(c.nodeId)) throw new Error(`actor runtime: nodeId must be 1-100 characters of A-Z a-z 0-9 _ . : - (got ${JSON.stringify(c.nodeId)})`)
  return c
}
