/**
 * Placement: which node runs an actor. Actor keys hash into a fixed number of shards and a
 * shard is run by one node at a time, under an epoch recorded in PostgreSQL (the fencing
 * token its turns carry). A single node owns every shard (LocalPlacement); a cluster spreads
 * them with Redis leases (ClusterPlacement, cluster.ts).
 */
import type { Sql } from '../../store/db.ts'
import { claimShards, listShards } from '../../store/actor-shards.ts'
import type { Envelope } from './instance.ts'

/**
 * FNV-1a over the UTF-8 bytes of `kind:id`. Every node must map a key to the same shard
 * forever (two nodes disagreeing would both run the actor), so the hash is spelled out here
 * rather than borrowed from a runtime whose hash may change between versions.
 */
export function shardOf(kind: string, id: string, shards: number): number {
  let h = 0x811c9dc5
  for (const byte of new TextEncoder().encode(`${kind}:${id}`)) {
    h ^= byte
    h = Math.imul(h, 0x01000193)
  }
  return (h >>> 0) % shards
}

export interface NodeStatus {
  id: string
  /** Last heartbeat (ISO time). */
  lastHeartbeat: string
  shards: number
  liveActors: Record<string, number>
}

export interface ClusterStatus {
  mode: 'single' | 'cluster'
  nodeId: string
  nodes: NodeStatus[]
  shards: { shard: number; owner: string | null; epoch: number | null }[]
  /** Live actors per kind, summed over the nodes. */
  liveActors: Record<string, number>
}

export interface Placement {
  start(): Promise<void>
  /**
   * The epoch under which this node runs `shard`'s actors now, or undefined when it does not
   * (another node owns it, or it is being handed over: then only messages of the shard's
   * queue, already taken by this node, are still run here).
   */
  localEpoch(shard: number, origin: Envelope['origin']): number | undefined
  /** Shards this node runs now. */
  ownedShards(): number[]
  /** A turn of `shard` was refused by the fencing check: stop running it here. */
  fenced(shard: number): void
  /** Give every shard up (cluster: drain, passivate, release the leases). */
  stop(): Promise<void>
  status(liveActors: Record<string, number>): Promise<ClusterStatus>
}

/** Without Redis: this node owns every shard. */
export class LocalPlacement implements Placement {
  #epochs = new Map<number, number>()
  #stopping = false

  constructor(
    private readonly sql: Sql,
    private readonly nodeId: string,
    private readonly shards: number,
    private readonly onFenced: (shard: number) => void,
  ) {}

  async start(): Promise<void> {
    // Bumping every epoch makes a second single node started by mistake on the same database
    // fence the first one out instead of both writing.
    const all = Array.from({ length: this.shards }, (_, i) => i)
    for (const row of await claimShards(this.sql, all, this.nodeId)) this.#epochs.set(row.shard, row.epoch)
  }

  localEpoch(shard: number): number | undefined {
    return this.#stopping ? undefined : this.#epochs.get(shard)
  }

  ownedShards(): number[] {
    return this.#stopping ? [] : [...this.#epochs.keys()]
  }

  fenced(shard: number): void {
    if (this.#epochs.delete(shard)) this.onFenced(shard)
  }

  async stop(): Promise<void> {
    this.#stopping = true
  }

  async status(liveActors: Record<string, number>): Promise<ClusterStatus> {
    const rows = await listShards(this.sql)
    return {
      mode: 'single',
      nodeId: this.nodeId,
      nodes: [{ id: this.nodeId, lastHeartbeat: new Date().toISOString(), shards: this.#epochs.size, liveActors }],
      shards: rows.map((r) => ({ shard: r.shard, owner: this.#epochs.has(r.shard) ? this.nodeId : null, epoch: r.epoch })),
      liveActors,
    }
  }
}
