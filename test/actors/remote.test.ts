/**
 * Two nodes in this process on one PostgreSQL and one Redis: what crosses between nodes —
 * replies and errors through the shard queues, events to every node's subscribers, message
 * ids, reminders, cluster status — and a graceful leave with messages in flight.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { AppError, ConflictError } from '../../src/core/errors.ts'
import { createActorSystem, shardOf, type ActorEvent, type ActorSystem } from '../../src/actors/runtime/index.ts'
import { connect, type Sql } from '../../src/store/db.ts'
import { service } from '../support/services.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { counter, counterValue, ensureCounterTable } from './counter.ts'
import { dropRedisKeys, eventually, logger, range, splitShards } from './support.ts'

const redisUrl = service('redis', import.meta.file)
const SHARDS = 8
const prefix = `test-${crypto.randomUUID()}`

describe.skipIf(!redisUrl)('two nodes in one process', () => {
  let db: TestDatabase
  let sqlB: Sql
  let a: ActorSystem
  let b: ActorSystem
  const eventsOnA: ActorEvent[] = []
  /** Counter ids whose shard node b owns. */
  let onB: string[] = []

  const node = (id: string, sql: Sql) =>
    createActorSystem({ sql, redis: redisUrl, logger, queuePrefix: prefix, config: { nodeId: id, shards: SHARDS, leaseTtlMs: 1000, reminderPollMs: 100 } }).register(counter)

  beforeAll(async () => {
    db = await testDatabase()
    await ensureCounterTable(db.sql)
    sqlB = connect(db.url, { max: 5, name: 'node-b' })
    a = node('node-a', db.sql)
    b = node('node-b', sqlB)
    a.subscribe((e) => eventsOnA.push(e))
    await a.start()
    await b.start()
    const owned = await splitShards(a, 'node-b', SHARDS)
    onB = range(200).map((i) => `r${i}`).filter((id) => owned.has(shardOf('counter', id, SHARDS)))
  }, 30_000)

  afterAll(async () => {
    await a?.stop()
    await b?.stop()
    await sqlB?.end()
    await dropRedisKeys(redisUrl!, prefix)
    await db?.drop()
  }, 30_000)

  test('an ask through one node reaches the owner on the other, and its reply comes back', async () => {
    const id = onB[0]!
    expect(await a.ask('counter', id, { type: 'increment', by: 3 })).toBe(3)
    expect(a.liveActors()).toEqual({})
    expect(b.liveActors()).toEqual({ counter: 1 })
    expect(await b.ask('counter', id, { type: 'get' })).toBe(3)
  })

  test('a handler error crosses nodes with its code and status', async () => {
    const err = (await a.ask('counter', onB[1]!, { type: 'fail' }).catch((e: unknown) => e)) as AppError
    expect(err).toBeInstanceOf(AppError)
    expect([err.code, err.status, err.message]).toEqual([new ConflictError('x').code, 409, 'the counter refuses'])
  })

  test('events committed on one node reach the subscribers of the other', async () => {
    const id = onB[2]!
    await a.ask('counter', id, { type: 'increment' })
    const event = await eventually('the event to reach node a', () => eventsOnA.find((e) => e.topic === `counter:${id}`))
    expect([event.seq, event.type, event.data]).toEqual([1, 'incremented', { value: 1, node: 'node-b' }])
    expect(event.at).toBeInstanceOf(Date)
  })

  test('a message id applies once, whichever node it is sent through', async () => {
    const id = onB[3]!
    expect(await a.ask('counter', id, { type: 'increment' }, { messageId: 'once' })).toBe(1)
    expect(await b.ask('counter', id, { type: 'increment' }, { messageId: 'once' })).toBe(1)
    expect(await a.ask('counter', id, { type: 'increment' }, { messageId: 'once' })).toBe(1)
    expect(await counterValue(db.sql, id)).toBe(1)
  })

  test('a reminder scheduled on one node fires on the owner', async () => {
    const id = onB[4]!
    await a.schedule('counter', id, new Date(Date.now() + 100), { type: 'increment', by: 5 })
    await eventually('the reminder to fire', async () => (await counterValue(db.sql, id)) === 5)
    expect((await b.metrics.remindersFired.get()).values[0]!.value).toBe(1)
  })

  test('cluster status lists both nodes, every shard owner and the live actors', async () => {
    const status = await a.clusterStatus()
    expect(status.mode).toBe('cluster')
    expect(status.nodes.map((n) => [n.id, n.shards])).toEqual([
      ['node-a', SHARDS / 2],
      ['node-b', SHARDS / 2],
    ])
    expect(status.shards.map((s) => s.shard)).toEqual(range(SHARDS))
    expect(status.shards.every((s) => typeof s.epoch === 'number' && s.epoch > 0)).toBe(true)
    await eventually('node b\'s heartbeat to report its counters', async () => (await a.clusterStatus()).liveActors.counter === b.liveActors().counter)
  })

  test('a node that stops hands its shards over with messages in flight: none fails', async () => {
    const ids = onB.slice(10, 40)
    const before = await Promise.all(ids.map((id) => counterValue(db.sql, id)))
    let sent = 0
    let stopping: Promise<void> | undefined
    const results = await Promise.allSettled(
      range(600).map(async (i) => {
        const id = ids[i % ids.length]!
        if (++sent === 100) stopping = b.stop()
        // Half through the leaving node (until it stops taking asks), half through the other.
        const via = i % 2 === 0 && !stopping ? b : a
        return via.ask('counter', id, { type: 'increment' }, { timeout: 20_000 })
      }),
    )
    await stopping
    expect(results.filter((r) => r.status === 'rejected')).toEqual([])
    const after = await Promise.all(ids.map((id) => counterValue(db.sql, id)))
    expect(after.reduce((x, y) => x + y, 0) - before.reduce((x, y) => x + y, 0)).toBe(600)
    const status = await a.clusterStatus()
    expect(status.nodes.map((n) => n.id)).toEqual(['node-a'])
    await eventually('node a to own every shard', async () => (await a.clusterStatus()).shards.every((s) => s.owner === 'node-a'))
  }, 30_000)
})
