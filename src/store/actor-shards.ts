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

/** SQLSTATE raised by actor_fence() when a shard's epoch moved on (see sql/0002_actors.sql). */
export const FENCED_SQLSTATE = 'QXF01'

/**
 * Record `owner` as the new owner of `shards`, bumping each epoch by one (rows are created
 * on first claim). Returns the new epochs: the owner's fencing tokens.
 */
export async function claimShards(sql: Db, shards: readonly number[], owner: string): Promise<ShardEpoch[]> {
  if (shards.length === 0) return []
  // Sorted so two nodes claiming overlapping sets lock the rows in the same order.
  const sorted = [...shards].sort((a, b) => a - b)
  return sql<ShardEpoch[]>`
    insert into actor_shards as s (shard, epoch, owner, claimed_at)
    select x, 1, ${owner}, now() from unnest(${sorted}::int[]) as x order by x
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
  return sql`select actor_fence(${[...shards]}::int[], ${[...epochs]}::int8[])`
}

/** Current epochs of `shards`. */
export async function shardEpochs(sql: Db, shards: readonly number[]): Promise<ShardEpoch[]> {
  return sql<ShardEpoch[]>`select shard, epoch from actor_shards where shard = any(${[...shards]}::int[])`
}

export async function listShards(sql: Db): Promise<ShardRow[]> {
  return sql<ShardRow[]>`select shard, epoch, owner, claimed_at as "claimedAt" from actor_shards order by shard`
}
