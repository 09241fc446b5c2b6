/**
 * A node cut off from Redis while it carries out a cross-node ask, induced for real: node b
 * reaches Redis through a proxy that stops forwarding (test/actors/support.ts redisProxy), so
 * its lease renewals do not get through, its leases expire and node a takes its shards over;
 * BullMQ's stalled-job check on node a puts the job node b had taken back in the queue, and
 * the inbox answers the redelivered message with the reply its first application stored.
 * What an operator sees: actor_lease_renew_failures_total on b, actor_stalled_jobs_total on a.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { createActorSystem, shardOf, type ActorSystem } from '../../src/actors/runtime/index.ts'
import { Metrics } from '../../src/core/metrics.ts'
import { readOutbox } from '../../src/store/outbox.ts'
import { connect, type Sql } from '../../src/store/db.ts'
import { service } from '../support/services.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { counter, counterValue, ensureCounterTable, gate } from './counter.ts'
import { dropRedisKeys, eventually, logger, metricValue, range, redisProxy, splitShards, type RedisProxy } from './support.ts'

const redisUrl = service('redis', import.meta.file)
const SHARDS = 4
const TTL = 1000
const prefix = `test-${crypto.randomUUID()}`

describe.skipIf(!redisUrl)('a node cut off from Redis mid-turn', () => {
  let db: TestDatabase
  let sqlB: Sql
  let proxy: RedisProxy
  let a: ActorSystem
  let b: ActorSystem
  const metricsA = new Metrics({ defaultMetrics: false })
  const metricsB = new Metrics({ defaultMetrics: false })

  const node = (id: string, sql: Sql, redis: string, metrics: Metrics) =>
    createActorSystem({ sql, redis, logger, metrics, queuePrefix: prefix, config: { nodeId: id, shards: SHARDS, leaseTtlMs: TTL } }).register(counter)

  beforeAll(async () => {
    db = await testDatabase()
    await ensureCounterTable(db.sql)
    sqlB = connect(db.url, { max: 5, name: 'node-b' })
    proxy = await redisProxy(redisUrl!)
    a = node('node-a', db.sql, redisUrl!, metricsA)
    b = node('node-b', sqlB, proxy.url, metricsB)
    await a.start()
    await b.start()
    await splitShards(a, 'node-b', SHARDS)
  }, 30_000)

  afterAll(async () => {
    proxy?.resume()
    await a?.stop()
    await b?.stop()
    proxy?.close()
    await sqlB?.end()
    await dropRedisKeys(redisUrl!, prefix)
    await db?.drop()
  }, 30_000)

  test('its leases fail to renew and move; the job it held is redelivered and answered with the stored reply, applied once', async () => {
    const owned = new Set((await a.clusterStatus()).shards.filter((s) => s.owner === 'node-b').map((s) => s.shard))
    const id = range(100).map((i) => `f${i}`).find((c) => owned.has(shardOf('counter', c, SHARDS)))!
    expect(await metricValue(metricsB.registry, 'actor_lease_renew_failures_total')).toBe(0)
    expect(await metricValue(metricsA.registry, 'actor_stalled_jobs_total')).toBe(0)

    // Asked through node a, taken by node b from the shard queue, held in its handler.
    const held = gate()
    const asked = a.ask('counter', id, { type: 'heldIncrement', gate: held.name }, { timeout: 30_000 })
    await eventually('the held turn to start on node b', () => b.activeTurns === 1)

    // Node b loses Redis, then its turn goes on: PostgreSQL is still there, so the turn commits
    // (its lease has not expired yet, the epoch is still b's) — but its reply and the job's
    // completion wait behind the cut.
    proxy.pause()
    held.open()
    await eventually('node b\'s turn to commit', async () => (await counterValue(db.sql, id)) === 1)

    // Its heartbeat does not get through: counted as a failed renewal, then its leases expire
    // and node a claims its shards. The job's lock is not renewed either: node a's stalled-job
    // check puts the job back, node a takes it, and the inbox recognises the message.
    await eventually('node b to count a failed lease renewal', async () => (await metricValue(metricsB.registry, 'actor_lease_renew_failures_total')) >= 1, 5_000)
    await eventually('node a to own every shard', async () => (await a.clusterStatus()).shards.every((s) => s.owner === 'node-a'), 10_000, 100)
    // (The redelivered message's handler runs again — through the open gate — and its turn is
    // refused by the inbox.)
    expect(await asked).toBe(1) // the reply stored by node b's turn, not a second increment
    held.close()
    expect(await metricValue(metricsA.registry, 'actor_stalled_jobs_total')).toBeGreaterThanOrEqual(1)
    expect(await counterValue(db.sql, id)).toBe(1)
    expect((await readOutbox(db.sql, `counter:${id}`, 0)).map((e) => (e.data as { value: number }).value)).toEqual([1])

    // Back on Redis, node b learns it lost its shards; its late reply is dropped by node a.
    proxy.resume()
    await eventually('node b to give its lost shards up', () => b.clusterStatus().then(() => b.activeTurns === 0))
    expect(await a.ask('counter', id, { type: 'increment' })).toBe(2)
  }, 40_000)
})
