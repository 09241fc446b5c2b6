/**
 * A change an actor's turn commits for a request is recorded with it (src/store/audit.ts
 * `turnStamps`, the runtime's TurnStamps): on a real PostgreSQL and Redis, two nodes in this
 * process. The message a request sends carries the request's event, the turn inserts it into
 * audit_pending in its own transaction (a failed turn leaves nothing), across nodes too; what
 * the turn sets off runs outside the request; the request's outcome joins the chain under the
 * pending event's key, and the sweep then drops it; and a request never answered (its node
 * died between the commit and the answer) is recovered from its pending event, once, into a
 * chain that still verifies.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { Type as T } from '@sinclair/typebox'
import { Metrics } from '../../src/core/metrics.ts'
import { createActorSystem, defineActor, shardOf, type ActorSystem } from '../../src/actors/runtime/index.ts'
import type { AuditEvent } from '../../src/store/audit-chain.ts'
import { verifyChain } from '../../src/store/audit-read.ts'
import { insertPendingNow } from '../../src/store/audit-pending.ts'
import { AuditLog, type AuditScope } from '../../src/store/audit.ts'
import { connect, type Sql } from '../../src/store/db.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { service } from '../support/services.ts'
import { counter, counterValue, ensureCounterTable } from '../actors/counter.ts'
import { dropRedisKeys, eventually, logger, range } from '../actors/support.ts'

const redisUrl = service('redis', import.meta.file)
const SHARDS = 8
const prefix = `test-${crypto.randomUUID()}`

/** Sends a counter an increment from its turn, and asks itself from a task the turn starts. */
const relay = defineActor({
  kind: 'relay',
  messages: T.Union([T.Object({ type: T.Literal('relay'), to: T.String() }), T.Object({ type: T.Literal('mark') }), T.Object({ type: T.Literal('get') })]),
  initial: () => ({ marked: 0 }),
  handle(ctx, state: { marked: number }, msg) {
    switch (msg.type) {
      case 'relay':
        ctx.send('counter', msg.to, { type: 'increment' })
        ctx.background(async () => void (await ctx.self.ask({ type: 'mark' })))
        return { reply: null }
      case 'mark':
        return { state: { marked: state.marked + 1 }, reply: null }
      case 'get':
        return { reply: state.marked }
    }
  },
})

let db: TestDatabase
let sqlB: Sql
let audit: AuditLog
let a: ActorSystem
let b: ActorSystem
/** Counter ids whose shard node b owns, and those node a owns. */
let onB: string[] = []
let onA: string[] = []

beforeAll(async () => {
  db = await testDatabase()
  await ensureCounterTable(db.sql)
  sqlB = connect(db.url, { max: 5, name: 'node-b' })
  audit = new AuditLog(db.sql, { enabled: true, logger, metrics: new Metrics({ defaultMetrics: false }) })
  const node = (id: string, sql: Sql, log: AuditLog) =>
    createActorSystem({ sql, redis: redisUrl, logger, queuePrefix: prefix, stamps: log.turnStamps, config: { nodeId: id, shards: SHARDS, leaseTtlMs: 1000 } })
      .register(counter)
      .register(relay)
  a = node('node-a', db.sql, audit)
  // Node b writes pending events with a log of its own (its own pool), as another server would.
  b = node('node-b', sqlB, new AuditLog(sqlB, { enabled: true, logger, metrics: new Metrics({ defaultMetrics: false }) }))
  await a.start()
  await b.start()
  await eventually('the nodes to split the shards', async () => (await a.clusterStatus()).shards.filter((s) => s.owner === 'node-b').length === SHARDS / 2)
  const owned = new Set((await a.clusterStatus()).shards.filter((s) => s.owner === 'node-b').map((s) => s.shard))
  const ids = range(200).map((i) => `p${i}`)
  onB = ids.filter((id) => owned.has(shardOf('counter', id, SHARDS)))
  onA = ids.filter((id) => !owned.has(shardOf('counter', id, SHARDS)))
}, 30_000)

afterAll(async () => {
  await a?.stop()
  await b?.stop()
  await audit?.close()
  await sqlB?.end()
  await dropRedisKeys(redisUrl!, prefix)
  await db?.drop()
}, 30_000)

let n = 0
/** A request's scope, as the HTTP frame makes it: recorded as counter.increment on the actor it asks. */
function request(actorId: string | null = crypto.randomUUID()): AuditScope {
  const requestId = `req-${++n}-${crypto.randomUUID().slice(0, 8)}`
  return {
    requestId,
    ip: '203.0.113.9',
    userAgent: 'pending-test/1.0',
    actor: () => actorId,
    expected: (id): AuditEvent => ({ action: 'counter.increment', outcome: 'success', targetType: 'counter', targetId: id }),
  }
}
/**
 * Run `work` as the request of `scope`, in an async context of its own, as the frame enters it
 * (a callback of its own: entering in an async function's first synchronous part would enter
 * the caller's context too).
 */
function within<T>(scope: AuditScope, work: () => Promise<T>): Promise<T> {
  return Promise.resolve().then(() => {
    audit.enter(scope)
    return work()
  })
}

interface PendingRow {
  key: string
  event: Record<string, unknown>
}
const pendingOf = async (scope: AuditScope) => [...(await db.sql<PendingRow[]>`select key, event from audit_pending where event->>'requestId' = ${scope.requestId} order by created_at, key`)]
const eventsOf = async (scope: AuditScope) => [
  ...(await db.sql<{ action: string; outcome: string; status: number | null; actorId: string | null; targetId: string | null; ip: string | null; detail: Record<string, unknown> | null }[]>`
    select action, outcome, status, actor_id as "actorId", target_id as "targetId", ip, detail from audit_events where request_id = ${scope.requestId} order by seq`),
]

describe('pending events', () => {
  test("a request's message carries its event into the turn's transaction; a failed turn, a message from no request, leave none", async () => {
    const id = onA[0]!
    const scope = request()
    expect(await within(scope, () => a.ask('counter', id, { type: 'increment' }))).toBe(1)
    const [row, ...more] = await pendingOf(scope)
    expect(more).toEqual([])
    expect(row!.key).toBe(scope.pendingKey!)
    expect(row!.event).toMatchObject({ action: 'counter.increment', outcome: 'success', targetType: 'counter', targetId: id, actorId: expect.any(String), ip: '203.0.113.9', userAgent: 'pending-test/1.0', requestId: scope.requestId })

    // A turn that throws rolls its pending event back with everything else.
    const failing = request()
    await expect(within(failing, () => a.ask('counter', onA[1]!, { type: 'fail' }))).rejects.toThrow('the counter refuses')
    expect(await pendingOf(failing)).toEqual([])
    expect(failing.pendingKey).toBeDefined() // it was stamped: the rollback took the row

    // Outside any request: nothing is carried.
    const before = (await db.sql<{ n: number }[]>`select count(*)::int as n from audit_pending`)[0]!.n
    await a.ask('counter', onA[2]!, { type: 'increment' })
    expect((await db.sql<{ n: number }[]>`select count(*)::int as n from audit_pending`)[0]!.n).toBe(before)
  })

  test('across nodes: a message to an actor on the other node carries it through the shard queue', async () => {
    const scope = request()
    expect(await within(scope, () => a.ask('counter', onB[0]!, { type: 'increment', by: 2 }))).toBe(2)
    const rows = await pendingOf(scope)
    expect(rows.map((r) => [r.key, r.event.targetId, r.event.requestId])).toEqual([[scope.pendingKey!, onB[0]!, scope.requestId]])
  })

  test('what a turn sets off (a message it sends, a task it starts) runs outside the request and carries nothing', async () => {
    const scope = request()
    const target = onA[3]!
    const relayId = `relay-${crypto.randomUUID()}`
    await within(scope, () => a.ask('relay', relayId, { type: 'relay', to: target }))
    await eventually('the sent increment and the task\'s own ask to be applied', async () => (await counterValue(db.sql, target)) === 1 && (await a.ask('relay', relayId, { type: 'get' })) === 1)
    // Only the relay's own turn carried the request's event.
    const rows = await pendingOf(scope)
    expect(rows.map((r) => r.event.targetId)).toEqual([relayId])
  })

  test("the request's outcome joins the chain under its pending events' key and drops them in the same statement; the sweep drops a straggler", async () => {
    const scope = request()
    await within(scope, async () => {
      await a.ask('counter', onA[4]!, { type: 'increment' })
      await a.ask('counter', onB[1]!, { type: 'increment' })
    })
    expect((await pendingOf(scope)).length).toBe(2)
    scope.finished = true
    await audit.record({ action: 'counter.increment', outcome: 'success', status: 200, targetType: 'counter', targetId: onA[4]! }, scope)
    expect(await eventsOf(scope)).toMatchObject([{ action: 'counter.increment', status: 200, detail: null }])
    const [chained] = await db.sql<{ id: string }[]>`select id from audit_events where request_id = ${scope.requestId}`
    expect(chained!.id).toBe(scope.pendingKey!)
    // Gone with the statement that chained the outcome: nothing is left for the sweep.
    expect(await pendingOf(scope)).toEqual([])

    // A turn the request only told commits after the answer: its pending event comes late. Young, it
    // stays; once old enough, the sweep finds its key in the chain, drops it and recovers nothing.
    await insertPendingNow(db.sql, [{ key: scope.pendingKey!, event: { action: 'counter.increment', requestId: scope.requestId, at: new Date().toISOString() } }])
    expect(await audit.recoverPending(60_000)).toBe(0)
    expect((await pendingOf(scope)).length).toBe(1)
    await audit.recoverPending(0) // (other tests' requests never answered are recovered too)
    expect(await pendingOf(scope)).toEqual([])
    expect((await eventsOf(scope)).length).toBe(1)

    // A request recorded in its own transaction (covered): its pending events are dropped, no second event.
    const covered = request()
    await within(covered, () => a.ask('counter', onA[5]!, { type: 'increment' }))
    covered.finished = true
    covered.covered = true
    await audit.settle(covered)
    expect(await pendingOf(covered)).toEqual([])
    expect(await eventsOf(covered)).toEqual([])
  })

  test('a request never answered: its pending event is recovered once — by whichever node sweeps first — as what committed, and the chain verifies', async () => {
    const user = (await db.sql<{ id: string }[]>`insert into users (email, first_name, last_name, password_hash) values (${`p-${crypto.randomUUID()}@example.com`}, 'P', 'Q', 'x') returning id`)[0]!
    const scope = request(user.id)
    await within(scope, async () => {
      await a.ask('counter', onA[6]!, { type: 'increment' })
      await a.ask('counter', onB[2]!, { type: 'increment' })
    })
    // The node "dies" here: the outcome is never recorded. Young events are left alone.
    expect(await audit.recoverPending(60_000)).toBe(0)
    expect((await pendingOf(scope)).length).toBe(2)
    const other = new AuditLog(sqlB, { enabled: true, logger, metrics: new Metrics({ defaultMetrics: false }) })
    const [mine, theirs] = await Promise.all([audit.recoverPending(0), other.recoverPending(0)])
    expect(mine + theirs).toBeGreaterThanOrEqual(1)
    expect(await pendingOf(scope)).toEqual([])
    const events = await eventsOf(scope)
    expect(events).toEqual([{ action: 'counter.increment', outcome: 'success', status: null, actorId: user.id, targetId: onA[6]!, ip: '203.0.113.9', detail: { recovered: true } }])
    const [email] = await db.sql<{ email: string }[]>`select actor_email as email from audit_events where request_id = ${scope.requestId}`
    expect(email!.email).toMatch(/^p-.*@example\.com$/)
    expect(await audit.recoverPending(0)).toBe(0)
    expect(await verifyChain(db.sql, 100)).toMatchObject({ valid: true, broken: null })
    await other.close()
  })
})
