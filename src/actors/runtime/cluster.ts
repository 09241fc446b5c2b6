/**
 * Cluster placement: nodes heartbeat in Redis, each shard is owned through a Redis lease with
 * a TTL, and shards are spread to a fair share (±1) of the live nodes.
 *
 * Every leaseTtl/4 a node runs one Lua script that records its heartbeat, forgets nodes whose
 * heartbeat expired, renews the leases it holds and returns the live nodes and every shard's
 * owner (one round trip, and Redis's clock for every node, so clock skew between nodes does
 * not matter). From that it computes its share: nodes sorted by id, the first
 * `shards % nodes` take one more. A node above its share, while another is below, hands
 * shards over: it stops the shard's queue worker (jobs in progress finish), waits for the
 * shard's actors to finish their queued turns, passivates them and deletes the lease; a node
 * below its share claims free leases (SET NX PX) and bumps each claimed shard's epoch in
 * PostgreSQL before running anything. Claims run beside the heartbeats, which renew the
 * leases a claim won while it waits: a claim waiting for PostgreSQL (or a connection of the
 * pool) must not let this node's other leases expire. Messages that arrive during a hand-over
 * wait in the shard's queue for the next owner: nothing is refused or lost.
 *
 * A node that stops heartbeating (kill -9, partition, long pause) loses its leases when the
 * TTL runs out; survivors claim them with a new epoch, and the epoch check in every turn
 * transaction keeps the old owner, should it come back, from committing anything.
 */
import { FailureStreak } from '../../core/failure-streak.ts'
import type { Logger } from '../../core/logger.ts'
import type { Sql } from '../../store/db.ts'
import { claimShards, listShards, releaseShards } from '../../store/actor-shards.ts'
import type { RuntimeConfig } from './config.ts'
import type { Envelope } from './instance.ts'
import type { RuntimeMetrics } from './metrics.ts'
import type { ClusterStatus, NodeStatus, Placement } from './placement.ts'
import type { ShardTransport } from './transport.ts'

export interface ClusterPlacementOptions {
  sql: Sql
  transport: ShardTransport
  config: RuntimeConfig
  logger: Logger
  metrics: RuntimeMetrics
  /** Wait for the shard's actors to be idle, then passivate them. */
  passivateShard(shard: number): Promise<void>
  liveActors(): Record<string, number>
}

interface Owned {
  epoch: number
  /**
   * 'draining': being handed over; the jobs already taken from its queue still run here.
   * 'lost': the lease expired or a turn was fenced; nothing new runs here (a job taken from
   * its queue is failed back to the queue for the next owner), turns in progress finish or
   * are refused by the epoch check.
   */
  status: 'active' | 'draining' | 'lost'
}

// KEYS: nodes (zset: node id → heartbeat expiry), node info (hash), shard count, then the lease
// key of every shard. ARGV: node id, ttl, info json, shard count, leaving (1/0), owned shards.
const HEARTBEAT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
local configured = redis.call('GET', KEYS[3])
if configured and configured ~= ARGV[4] then
  return redis.error_reply('SHARDS_MISMATCH ' .. configured)
end
redis.call('SET', KEYS[3], ARGV[4], 'PX', ttl * 3)
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for _, id in ipairs(dead) do redis.call('HDEL', KEYS[2], id) end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[5] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
local mine = {}
for i = 6, #ARGV do mine[tonumber(ARGV[i])] = true end
local owners = {}
for i = 4, #KEYS do
  local owner = redis.call('GET', KEYS[i])
  if mine[i - 4] then
    if owner == ARGV[1] then
      redis.call('PEXPIRE', KEYS[i], ttl)
    elseif not owner then
      -- Expired while this node was slow, and nobody took it: nobody can have bumped the
      -- epoch either (a claim bumps only after winning the lease), so keep it.
      redis.call('SET', KEYS[i], ARGV[1], 'PX', ttl)
      owner = ARGV[1]
    end
  end
  owners[#owners + 1] = owner or ''
end
return { now, redis.call('ZRANGE', KEYS[1], 0, -1), owners }
`

const RELEASE = `
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`

/**
 * What a background task of the placement (the heartbeat tick, a claim) is waiting for, and
 * since when: a task stuck longer than the lease TTL is named in one warning.
 */
class Stage {
  #name: string | undefined
  #since = 0
  #warned = false

  constructor(readonly task: string) {}

  enter(name: string | undefined): void {
    this.#name = name
    this.#since = performance.now()
    this.#warned = false
  }

  watch(now: number, limitMs: number, logger: Logger): void {
    if (this.#name === undefined || this.#warned || now - this.#since <= limitMs) return
    this.#warned = true
    logger.warn({ task: this.task, stage: this.#name, ms: Math.round(now - this.#since) }, `${this.task} stuck`)
  }
}

export class ClusterPlacement implements Placement {
  readonly #o: ClusterPlacementOptions
  readonly #owned = new Map<number, Owned>()
  #timer: ReturnType<typeof setInterval> | undefined
  #ticking: Promise<void> | undefined
  #again = false
  /** Heartbeats failing in a row (Redis down): warned at the 1st, 2nd, 4th… (every tick otherwise). */
  readonly #heartbeatFailures = new FailureStreak()
  /** Shard claims whose epochs could not be recorded in a row (PostgreSQL down). */
  readonly #claimFailures = new FailureStreak()
  #leaving = false
  #stopped = false
  /** When the last heartbeat that renewed this node's leases was sent (performance.now()). */
  #renewedAt = performance.now()
  /** The heartbeat in progress, and the claim in progress (which runs beside the heartbeats). */
  readonly #tickStage = new Stage('cluster tick')
  readonly #claimStage = new Stage('shard claim')
  #claiming: Promise<void> | undefined
  /**
   * Shards whose leases the claim in progress won and whose epochs it has not recorded yet:
   * renewed by the heartbeat like those held.
   */
  readonly #claimingShards = new Set<number>()
  readonly #startedAt = new Date().toISOString()

  constructor(opts: ClusterPlacementOptions) {
    this.#o = opts
  }

  get #redis() {
    return this.#o.transport.redis
  }

  #lease(shard: number): string {
    return this.#o.transport.key(`lease:${shard}`)
  }

  async start(): Promise<void> {
    this.#o.transport.onRebalance = () => void this.tick()
    await this.tick()
    // A node starts with its share (when it is the first, every shard).
    await this.#claiming
    this.#timer = setInterval(() => {
      this.#watchRenewals()
      void this.tick()
    }, Math.max(75, Math.floor(this.#o.config.leaseTtlMs / 4)))
  }

  /** Shards whose leases this node renews (held, or being handed over). */
  #held(): number[] {
    return [...this.#owned].filter(([, o]) => o.status !== 'lost').map(([s]) => s)
  }

  /**
   * actor_lease_renew_failures_total: every heartbeat interval in which the leases this node
   * holds were last renewed more than half a TTL ago counts one failure — whether the heartbeat
   * failed, hangs (the connection waits for Redis rather than failing: BullMQ needs
   * maxRetriesPerRequest null) or is held up behind the rest of a tick. What an operator alerts
   * on before the leases expire and the shards move.
   */
  #watchRenewals(): void {
    const now = performance.now()
    this.#tickStage.watch(now, this.#o.config.leaseTtlMs, this.#o.logger)
    this.#claimStage.watch(now, this.#o.config.leaseTtlMs, this.#o.logger)
    if (this.#held().length === 0) this.#renewedAt = now
    else if (now - this.#renewedAt > this.#o.config.leaseTtlMs / 2) this.#o.metrics.leaseRenewFailures.inc()
  }

  localEpoch(shard: number, origin: Envelope['origin']): number | undefined {
    const o = this.#owned.get(shard)
    if (!o) return undefined
    if (o.status === 'active' || (o.status === 'draining' && origin === 'queue')) return o.epoch
    return undefined
  }

  ownedShards(): number[] {
    return [...this.#owned].filter(([, o]) => o.status === 'active').map(([s]) => s)
  }

  fenced(shard: number): void {
    this.#drop(shard)
  }

  /** One heartbeat and rebalancing step (runs every leaseTtl/4, and when another node asks). */
  tick(): Promise<void> {
    if (this.#stopped) return Promise.resolve()
    if (this.#ticking) {
      this.#again = true
      return this.#ticking
    }
    this.#ticking = (async () => {
      try {
        do {
          this.#again = false
          await this.#step()
        } while (this.#again && !this.#leaving)
        const failures = this.#heartbeatFailures.succeed()
        if (failures > 0) this.#o.logger.info({ failures }, 'cluster heartbeat recovered')
      } catch (err) {
        const loud = this.#heartbeatFailures.fail()
        this.#o.logger[loud ? 'warn' : 'debug']({ err, failures: this.#heartbeatFailures.count }, 'cluster heartbeat failed')
      } finally {
        this.#tickStage.enter(undefined)
        this.#ticking = undefined
      }
    })()
    return this.#ticking
  }

  async #heartbeat(): Promise<{ nodes: string[]; owners: string[] }> {
    const { config, transport } = this.#o
    const keys = [transport.key('nodes'), transport.key('node-info'), transport.key('shard-count')]
    for (let s = 0; s < config.shards; s++) keys.push(this.#lease(s))
    const info = JSON.stringify({ startedAt: this.#startedAt, pid: process.pid, liveActors: this.#o.liveActors() })
    const held = [...this.#held(), ...this.#claimingShards]
    const args = [config.nodeId, String(config.leaseTtlMs), info, String(config.shards), this.#leaving ? '1' : '0', ...held.map(String)]
    const started = performance.now()
    this.#tickStage.enter('heartbeat')
    let res: [number, string[], string[]]
    try {
      res = (await this.#redis.eval(HEARTBEAT, keys.length, ...keys, ...args)) as [number, string[], string[]]
    } catch (err) {
      const m = /SHARDS_MISMATCH (\d+)/.exec(String(err))
      if (m) throw new Error(`CLUSTER_SHARDS is ${config.shards} on node ${config.nodeId} but ${m[1]} on the running nodes: every node must use the same value`)
      throw err
    }
    this.#renewedAt = started
    return { nodes: res[1], owners: res[2] }
  }

  async #step(): Promise<void> {
    const { config } = this.#o
    const me = config.nodeId
    const { nodes, owners } = await this.#heartbeat()
    for (const [shard, o] of this.#owned) {
      if (owners[shard] !== me && o.status !== 'lost') this.#drop(shard)
    }
    if (this.#leaving) return

    const live = [...nodes].sort()
    const n = Math.max(1, live.length)
    const share = (i: number) => Math.floor(config.shards / n) + (i < config.shards % n ? 1 : 0)
    const mineIndex = live.indexOf(me)
    if (mineIndex < 0) return // our heartbeat is not visible yet
    const target = share(mineIndex)
    const active = this.ownedShards()

    if (active.length > target) {
      const counts = new Map<string, number>()
      for (const owner of owners) if (owner) counts.set(owner, (counts.get(owner) ?? 0) + 1)
      // Hand over only to someone who is short, so nodes that momentarily see different
      // node lists do not pass shards back and forth.
      const someoneShort = live.some((id, i) => id !== me && (counts.get(id) ?? 0) < share(i))
      if (someoneShort) {
        for (const shard of active.sort((a, b) => b - a).slice(0, active.length - target)) void this.#release(shard)
      }
    } else if (active.length < target && !this.#claiming) {
      // Start looking at a different place on every node, so joining nodes rarely race for
      // the same free lease.
      const offset = Math.floor((mineIndex * config.shards) / n)
      const free: number[] = []
      for (let k = 0; k < config.shards; k++) {
        const s = (offset + k) % config.shards
        if (!owners[s] && !this.#owned.has(s)) free.push(s)
      }
      // In the background: a claim waits for PostgreSQL (the turns in flight on the shards
      // commit first) and for the queue workers, and the heartbeat must not wait with it, or
      // every lease of this node would expire behind one slow claim.
      const shards = free.slice(0, target - active.length)
      if (shards.length > 0) {
        this.#claiming = this.#claim(shards)
          .catch((err: unknown) => this.#o.logger.error({ err, shards }, 'shard claim failed'))
          .finally(() => {
            this.#claimingShards.clear()
            this.#claimStage.enter(undefined)
            this.#claiming = undefined
          })
      }
    }
  }

  async #claim(shards: number[]): Promise<void> {
    const { config, sql, transport, logger, metrics } = this.#o
    this.#claimStage.enter('leases')
    const pipe = this.#redis.pipeline()
    for (const s of shards) pipe.set(this.#lease(s), config.nodeId, 'PX', config.leaseTtlMs, 'NX')
    const results = (await pipe.exec()) ?? []
    const won = shards.filter((_, i) => results[i]?.[1] === 'OK')
    if (won.length === 0) return
    for (const s of won) this.#claimingShards.add(s)
    let epochs
    try {
      this.#claimStage.enter('epochs')
      epochs = await claimShards(sql, won, config.nodeId)
      this.#claimFailures.succeed()
    } catch (err) {
      const loud = this.#claimFailures.fail()
      logger[loud ? 'error' : 'debug']({ err, shards: won, failures: this.#claimFailures.count }, 'could not record shard epochs; giving the leases back')
      // Not renewed any more before they are deleted (a heartbeat in between would take them back).
      this.#claimingShards.clear()
      await Promise.all(won.map((s) => this.#redis.eval(RELEASE, 1, this.#lease(s), config.nodeId).catch(() => {})))
      return
    }
    for (const { shard, epoch } of epochs) {
      this.#owned.set(shard, { epoch, status: 'active' })
      this.#claimingShards.delete(shard)
    }
    metrics.shardMoves.inc({ direction: 'claimed' }, won.length)
    metrics.shardsOwned.set(this.ownedShards().length)
    logger.info({ shards: won }, 'claimed shards')
    this.#claimStage.enter('workers')
    await Promise.all(won.map((s) => transport.startWorker(s).catch((err) => logger.error({ err, shard: s }, 'could not start shard worker'))))
  }

  /** Hand `shard` over: finish its work here, passivate its actors, delete the lease. */
  async #release(shard: number): Promise<void> {
    const o = this.#owned.get(shard)
    if (!o || o.status !== 'active') return
    o.status = 'draining'
    const { config, sql, transport, logger, metrics } = this.#o
    try {
      await transport.stopWorker(shard)
      await this.#o.passivateShard(shard)
    } catch (err) {
      logger.error({ err, shard }, 'error while handing a shard over')
    }
    // Forgotten before the lease is deleted: a heartbeat in between must not renew (or take
    // back) a lease this node is giving up.
    this.#owned.delete(shard)
    try {
      await this.#redis.eval(RELEASE, 1, this.#lease(shard), config.nodeId)
      await releaseShards(sql, [shard], config.nodeId)
    } catch (err) {
      logger.warn({ err, shard }, 'could not release shard lease (it will expire)')
    }
    metrics.shardMoves.inc({ direction: 'released' })
    metrics.shardsOwned.set(this.ownedShards().length)
    logger.info({ shard }, 'released shard')
    transport.notifyRebalance()
  }

  /**
   * The lease is gone (expired, or taken over: a turn was fenced): stop running the shard,
   * without releasing it. A hand-over in progress goes on; it finishes sooner, since queued
   * jobs are no longer taken here.
   */
  #drop(shard: number): void {
    const o = this.#owned.get(shard)
    if (!o || o.status === 'lost') return
    const wasActive = o.status === 'active'
    o.status = 'lost'
    const { transport, logger, metrics } = this.#o
    logger.warn({ shard }, 'lost shard lease')
    metrics.shardMoves.inc({ direction: 'lost' })
    metrics.shardsOwned.set(this.ownedShards().length)
    if (!wasActive) return
    void (async () => {
      try {
        await transport.stopWorker(shard)
        await this.#o.passivateShard(shard)
      } catch (err) {
        logger.error({ err, shard }, 'error while dropping a lost shard')
      }
      if (this.#owned.get(shard) === o) this.#owned.delete(shard)
    })()
  }

  async stop(): Promise<void> {
    // Leave the node list first, so the others count without this node while it drains;
    // the heartbeat keeps renewing the leases of the shards still draining.
    this.#leaving = true
    await this.#ticking
    await this.#claiming
    await this.tick()
    this.#o.transport.notifyRebalance()
    await Promise.all(this.ownedShards().map((s) => this.#release(s)))
    clearInterval(this.#timer)
    await this.#ticking
    this.#stopped = true
  }

  async status(liveActors: Record<string, number>): Promise<ClusterStatus> {
    const { config, transport, sql } = this.#o
    const leaseKeys = Array.from({ length: config.shards }, (_, s) => this.#lease(s))
    const [[, scored], [, info], [, owners]] = ((await this.#redis
      .multi()
      .zrange(transport.key('nodes'), '0', '-1', 'WITHSCORES')
      .hgetall(transport.key('node-info'))
      .mget(...leaseKeys)
      .exec()) ?? []) as [unknown, unknown][] as [[unknown, string[]], [unknown, Record<string, string>], [unknown, (string | null)[]]]
    const epochs = new Map((await listShards(sql)).map((r) => [r.shard, r.epoch]))
    const nodes: NodeStatus[] = []
    const totals: Record<string, number> = {}
    for (let i = 0; i < scored.length; i += 2) {
      const id = scored[i]!
      const expires = Number(scored[i + 1])
      let live: Record<string, number> = {}
      if (id === config.nodeId) live = liveActors
      else {
        try {
          live = (JSON.parse(info[id] ?? '{}') as { liveActors?: Record<string, number> }).liveActors ?? {}
        } catch {
          live = {}
        }
      }
      for (const [kind, count] of Object.entries(live)) totals[kind] = (totals[kind] ?? 0) + count
      nodes.push({
        id,
        lastHeartbeat: new Date(expires - config.leaseTtlMs).toISOString(),
        shards: owners.filter((o) => o === id).length,
        liveActors: live,
      })
    }
    nodes.sort((a, b) => a.id.localeCompare(b.id))
    return {
      mode: 'cluster',
      nodeId: config.nodeId,
      nodes,
      shards: owners.map((owner, shard) => ({ shard, owner: owner ?? null, epoch: epochs.get(shard) ?? null })),
      liveActors: totals,
    }
  }
}
