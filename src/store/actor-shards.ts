/**
 * Shard epochs (table actor_shards): the fencing tokens of the actor runtime. A node that
 * takes a shard over bumps its epoch; every turn transaction checks it with actor_fence().
 */
import type { Db } from './db.ts'

export interface ShardEpoch {
  shard: number
  epoch: number
}

export interface ShardRow extends ShardEpoch {
  owner: string | null
  claimedAt: Date | null
}

/** Advisory lock class of shard fencing ('QACT'); the shard number is the second key. */
const SHARD_LOCK_CLASS = 1363231572

/** SQLSTATE raised by actor_fence() when a shard's epoch moved on (see sql/0002_actors.sql). */
export const FENCED_SQLSTATE = 'QXF01'

/**
 * Record `owner` as the new owner of `shards`, bumping each epoch by one (rows are created
 * on first claim). Returns the new epochs: the owner's fencing tokens.
 *
 * One statement, so it is one transaction even on the pool: it first takes the exclusive
 * side of actor_fence's advisory locks (which waits for the turns in flight on these shards to
 * commit, and holds new ones back until this commits), then bumps. ON CONFLICT DO UPDATE works
 * on the latest row version, so the bump sees every epoch committed before it.
 */
export async function claimShards(sql: Db, shards: readonly number[], owner: string): Promise<ShardEpoch[]> {
  if (shards.length === 0) return []
  // In shard order, as actor_fence locks them, so the two cannot deadlock.
  const sorted = [...new Set(shards)].sort((a, b) => a - b)
  return sql<ShardEpoch[]>`
    with locked as (
      -- unnest keeps the array's (sorted) order; the filter runs the lock call for each shard.
      select count(*) as n from unnest(${sorted}::int[]) as x
      where pg_advisory_xact_lock(${SHARD_LOCK_CLASS}, x)::text = ''
    )
    insert into actor_shards as s (shard, epoch, owner, claimed_at)
    select x, 1, ${owner}, now() from unnest(${sorted}::int[]) as x
    where (select n from locked) = ${sorted.length}
    order by x
    on conflict (shard) do update
      set epoch = s.epoch + 1, owner = excluded.owner, claimed_at = excluded.claimed_at
    returning shard, epoch`
}

/** Clear the owner column of shards `owner` gave up (informational; the epoch stays). */
export async function releaseShards(sql: Db, shards: readonly number[], owner: string): Promise<void> {
  if (shards.length === 0) return
  await sql`update actor_shards set owner = null where shard = any(${[...shards]}::int[]) and owner = ${owner}`
}

/**
 * The fencing statement of a turn transaction. Not awaited here: the runtime pipelines it
 * right after BEGIN, and a stale epoch fails it (SQLSTATE QXF01), which aborts the transaction.
 */
export function fence(sql: Db, shards: readonly number[], epochs: readonly number[]) {
  return sql`select ${fenceCall(sql, shards, epochs)}`
}

/**
 * The fencing check as a call, for a statement of the turn that makes it in its FROM list
 * before it writes (actor-turns.ts): one statement fewer in the turn's transaction.
 */
export function fenceCall(sql: Db, shards: readonly number[], epochs: readonly number[]) {
  // Each (shard, epoch) pair once, in shard order: the order claims take the locks in.
  const pairs = [...new Map(shards.map((s, i) => [`${s}:${epochs[i]}`, [s, epochs[i]!] as const])).values()].sort((x, y) => x[0] - y[0])
  return sql`actor_fence(${pairs.map((p) => p[0])}::int[], ${pairs.map((p) => p[1])}::int8[])`
}

/** Current epochs of `shards`. */
export async function shardEpochs(sql: Db, shards: readonly number[]): Promise<ShardEpoch[]> {
  return sql<ShardEpoch[]>`select shard, epoch from actor_shards where shard = any(${[...shards]}::int[])`
}

export async function listShards(sql: Db): Promise<ShardRow[]> {
  return sql<ShardRow[]>`select shard, epoch, owner, claimed_at as "claimedAt" from actor_shards order by shard`
}
