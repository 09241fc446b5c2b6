/**
 * Cross-node asks between two nodes in this process, beyond what remote.test.ts covers: the
 * shard worker (src/actors/runtime/shard-worker.ts) keeps running a shard's other messages
 * while one turn is slow; replies that nobody waits for any more are dropped without harm; and
 * the runtime's metrics (ask durations, shard queue jobs) move with the asks.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { ActorSystemStoppedError, ActorTimeoutError, createActorSystem, shardOf, type ActorSystem } from '../../src/actors/runtime/index.ts'
import { Metrics } from '../../src/core/metrics.ts'
import { connect, type Sql } from '../../src/store/db.ts'
import { service } from '../support/services.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { counter, counterValue, ensureCounterTable, gate } from './counter.ts'
import { dropRedisKeys, eventually, logger, metricValue, range, splitShards } from './support.ts'

const redisUrl = service('redis', import.meta.file)
const SHARDS = 8
const prefix = `test-${crypto.randomUUID()}`

describe.skipIf(!redisUrl)('cross-node asks: shard worker, late replies, metrics', () => {
  let db: TestDatabase
  let sqlB: Sql
  let a: ActorSystem
  let b: ActorSystem
  const metricsA = new Metrics({ defaultMetrics: false })
  const metricsB = new Metrics({ defaultMetrics: false })
  /** Counter ids node b owns, by shard. */
  const onB = new Map<number, string[]>()
  const ask = (id: string, message: unknown, timeout = 20_000) => a.ask('counter', id, message, { timeout })
  const asksOf = (outcome: string) => metricValue(metricsA.registry, 'actor_ask_duration_seconds_count', { kind: 'counter', outcome })

  const node = (id: string, sql: Sql, metrics: Metrics) =>
    createActorSystem({ sql, redis: redisUrl, logger, metrics, queuePrefix: prefix, config: { nodeId: id, shards: SHARDS, leaseTtlMs: 1000 } }).register(counter)

  beforeAll(async () => {
    db = await testDatabase()
    await ensureCounterTable(db.sql)
    sqlB = connect(db.url, { max: 5, name: 'node-b' })
    a = node('node-a', db.sql, metricsA)
    b = node('node-b', sqlB, metricsB)
    await a.start()
    await b.start()
    const owned = await splitShards(a, 'node-b', SHARDS)
    for (const id of range(400).map((i) => `q${i}`)) {
      const shard = shardOf('counter', id, SHARDS)
      if (owned.has(shard)) onB.set(shard, [...(onB.get(shard) ?? []), id])
    }
  }, 30_000)

  afterAll(async () => {
    await a?.stop()
    await b?.stop()
    await sqlB?.end()
    await dropRedisKeys(redisUrl!, prefix)
    await db?.drop()
  }, 30_000)

  test('while one turn of a shard is held, the shard\'s other messages still run; metrics show the held job', async () => {
    const [x, y] = [...onB.values()][0]!
    const held = gate()
    const slow = ask(x!, { type: 'heldIncrement', gate: held.name })
    await eventually('the held turn to start on node b', () => b.activeTurns === 1)
    expect(await metricValue(metricsB.registry, 'actor_queue_jobs', { state: 'active' })).toBe(1)
    // Same shard queue, another actor: taken and answered while the first job is still active.
    expect(await ask(y!, { type: 'increment', by: 2 })).toBe(2)
    expect(b.activeTurns).toBe(1)
    held.open()
    expect(await slow).toBe(1)
    held.close()
    await eventually('the shard queue to have no active job', async () => (await metricValue(metricsB.registry, 'actor_queue_jobs', { state: 'active' })) === 0)
    for (const state of ['waiting', 'delayed', 'failed']) expect([state, await metricValue(metricsB.registry, 'actor_queue_jobs', { state })]).toEqual([state, 0])
    expect(await metricValue(metricsB.registry, 'actor_live', { kind: 'counter' })).toBe(2)
  })

  test('ask durations are counted by outcome on the asking node', async () => {
    const id = [...onB.values()][1]![0]!
    const [ok, error] = [await asksOf('ok'), await asksOf('error')]
    await ask(id, { type: 'increment' })
    await ask(id, { type: 'increment' })
    await ask(id, { type: 'fail' }).catch(() => {})
    expect([await asksOf('ok'), await asksOf('error')]).toEqual([ok + 2, error + 1])
    // The histogram's buckets hold them (a cross-node ask takes more than 0 s, less than 30 s).
    expect(await metricValue(metricsA.registry, 'actor_ask_duration_seconds_bucket', { kind: 'counter', outcome: 'ok', le: '30' })).toBe(ok + 2)
    expect(await metricValue(metricsA.registry, 'actor_ask_duration_seconds_sum', { kind: 'counter', outcome: 'ok' })).toBeGreaterThan(0)
  })

  test('a reply that arrives after its ask timed out is dropped: the ask stays a timeout, the turn counts once', async () => {
    const id = [...onB.values()][2]![0]!
    const held = gate()
    const [ok, timeouts] = [await asksOf('ok'), await asksOf('timeout')]
    const err = await ask(id, { type: 'heldIncrement', gate: held.name }, 200).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ActorTimeoutError)
    expect(await asksOf('timeout')).toBe(timeouts + 1)
    // The message was not withdrawn: it is applied once the turn goes on, and its reply crosses
    // back to a node that no longer waits for it.
    held.open()
    await eventually('the held turn to commit', async () => (await counterValue(db.sql, id)) === 1)
    held.close()
    expect(await ask(id, { type: 'get' })).toBe(1)
    expect(await asksOf('ok')).toBe(ok + 1) // the get, not the late reply
    expect(await asksOf('timeout')).toBe(timeouts + 1)
  })

  test('a reply for an ask whose node stopped goes nowhere: the turn commits once and the owner goes on', async () => {
    const id = [...onB.values()][3]![0]!
    const held = gate()
    const orphan = ask(id, { type: 'heldIncrement', gate: held.name }).catch((e: unknown) => e)
    await eventually('the held turn to start on node b', () => b.activeTurns === 1)
    await a.stop()
    expect(await orphan).toBeInstanceOf(ActorSystemStoppedError)
    held.open()
    await eventually('the held turn to commit', async () => (await counterValue(db.sql, id)) === 1)
    held.close()
    // Its job completed (not failed, not retried), and node b answers the next ask.
    await eventually('the job to complete', async () => (await metricValue(metricsB.registry, 'actor_queue_jobs', { state: 'active' })) === 0)
    expect(await metricValue(metricsB.registry, 'actor_queue_jobs', { state: 'failed' })).toBe(0)
    expect(await b.ask('counter', id, { type: 'increment' })).toBe(2)
    expect(await counterValue(db.sql, id)).toBe(2)
  }, 30_000)
})
