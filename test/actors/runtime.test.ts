/**
 * The actor runtime on one node (no Redis), against a real PostgreSQL: mailbox ordering,
 * parallelism, turn transactions, passivation, reminders, redelivery, fencing, shutdown.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { Type as T } from '@sinclair/typebox'
import { ConflictError, ValidationError } from '../../src/core/errors.ts'
import { Metrics } from '../../src/core/metrics.ts'
import {
  ActorSystemStoppedError,
  ActorTimeoutError,
  createActorSystem,
  defineActor,
  FencedError,
  UnknownActorKindError,
  type ActorEvent,
  type ActorSystem,
  type RuntimeConfig,
} from '../../src/actors/runtime/index.ts'
import { claimShards } from '../../src/store/actor-shards.ts'
import { connect, type Db, type Sql } from '../../src/store/db.ts'
import { readOutbox } from '../../src/store/outbox.ts'
import { countReminders } from '../../src/store/reminders.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { counter, counterValue, ensureCounterTable, gate, overlap } from './counter.ts'
import { eventually, logger, range } from './support.ts'

let db: TestDatabase
const systems: ActorSystem[] = []

/** Meets N concurrent handlers: each waits until all N are inside at once. */
const rendezvous = { inside: 0, expected: 0, all: Promise.withResolvers<void>() }
const barrier = defineActor({
  kind: 'barrier',
  messages: T.Object({ type: T.Literal('meet') }),
  initial: () => ({ met: 0 }),
  async handle(_ctx, state) {
    if (++rendezvous.inside === rendezvous.expected) rendezvous.all.resolve()
    await rendezvous.all.promise
    return { state: { met: state.met + 1 }, reply: 'met' }
  },
})

/** State kept in a constrained table: a value of 100 or more fails its persist. */
const picky = defineActor({
  kind: 'picky',
  messages: T.Object({ type: T.Literal('set'), value: T.Integer() }),
  async load(sql, id) {
    const [row] = await sql<{ value: number }[]>`select value from test_picky where id = ${id}`
    return { value: row?.value ?? 0 }
  },
  persist: (tx, id, state: { value: number }) =>
    tx`insert into test_picky (id, value) values (${id}, ${state.value}) on conflict (id) do update set value = excluded.value`,
  handle(_ctx, _state, msg) {
    return { state: { value: msg.value }, reply: msg.value }
  },
})

/** Long work in the background, reported back with ctx.self.tell; state in actor_state. */
// The test decides when the background work finishes, so it can see the actor running first.
const jobWork = Promise.withResolvers<void>()
const job = defineActor({
  kind: 'job',
  messages: T.Union([
    T.Object({ type: T.Literal('start'), input: T.Integer() }),
    T.Object({ type: T.Literal('done'), result: T.Integer() }),
    T.Object({ type: T.Literal('get') }),
  ]),
  initial: (): { status: string; result?: number } => ({ status: 'idle' }),
  async handle(ctx, state, msg) {
    switch (msg.type) {
      case 'start':
        await ctx.tx`insert into test_ledger (actor, note) values (${ctx.id}, ${'started'})`
        ctx.background(async () => {
          await jobWork.promise // the stand-in for minutes of training
          ctx.self.tell({ type: 'done', result: msg.input * 2 })
        })
        return { state: { status: 'running' }, reply: 'started' }
      case 'done':
        return { state: { status: 'done', result: msg.result } }
      case 'get':
        return { reply: state }
      default: {
        const unhandled: never = msg
        throw new Error(`unhandled ${JSON.stringify(unhandled)}`)
      }
    }
  },
})

/**
 * Store functions as the table modules write them: statements built from fragments of the
 * same handle (`sql\`select ${COLUMNS(sql)} …\``). Inside a turn they run on ctx.tx.
 */
const LEDGER = (sql: Db) => sql`actor, note`
const byActor = (sql: Db, actor: string) => sql`actor = ${actor}`
async function appendNote(sql: Db, actor: string, note: string) {
  const [row] = await sql<{ actor: string; note: string }[]>`insert into test_ledger (${LEDGER(sql)}) values (${actor}, ${note}) returning ${LEDGER(sql)}`
  return row!
}
async function notesOf(sql: Db, actor: string) {
  return (await sql<{ note: string }[]>`select note from test_ledger where ${byActor(sql, actor)} order by note`).map((r) => r.note)
}

/** Writes and reads through those functions in its turn; `fail` throws after the write. */
const notes = defineActor({
  kind: 'notes',
  messages: T.Union([
    T.Object({ type: T.Literal('add'), note: T.String(), fail: T.Optional(T.Boolean()) }),
    T.Object({ type: T.Literal('begin') }),
    T.Object({ type: T.Literal('write'), notes: T.Array(T.String()), bad: T.Optional(T.Boolean()) }),
  ]),
  initial: () => ({}),
  async handle(ctx, _state, msg) {
    if (msg.type === 'begin') {
      // Db has no begin(); code that reaches for one (a cast to Sql) is refused at run time too.
      await (ctx.tx as unknown as { begin(fn: () => Promise<void>): Promise<void> }).begin(async () => {})
      return
    }
    if (msg.type === 'write') {
      // Unawaited writes (ctx.write): committed with the turn, or failing it.
      for (const note of msg.notes) ctx.write(appendNote(ctx.tx, ctx.id, note))
      if (msg.bad) ctx.write(ctx.tx`insert into test_ledger (actor, note) values (${ctx.id}, null)`)
      ctx.emit(`notes:${ctx.id}`, 'written', { notes: msg.notes })
      return { reply: msg.notes.length }
    }
    const added = await appendNote(ctx.tx, ctx.id, msg.note)
    const all = await notesOf(ctx.tx, ctx.id)
    // A fragment never awaited is never run on its own (before the fix it ran as a statement).
    void byActor(ctx.tx, 'never-run')
    const values = await ctx.tx`select ${LEDGER(ctx.tx)} from test_ledger where ${byActor(ctx.tx, ctx.id)} order by note`.values()
    if (msg.fail) throw new ConflictError('refused after writing')
    return { reply: { added, all, values } }
  },
})

/**
 * `fn` with a system of its own on a pool of two connections to a database of its own (so its
 * shard claims fence nobody else's), all three gone afterwards.
 */
async function onSmallPool(config: Partial<RuntimeConfig>, fn: (sys: ActorSystem, own: TestDatabase, small: Sql) => Promise<void>): Promise<void> {
  const own = await testDatabase()
  const small = connect(own.url, { max: 2 })
  const sys = createActorSystem({ sql: small, logger, config: { nodeId: 'small-pool', shards: 8, ...config } })
  try {
    await fn(sys, own, small)
  } finally {
    await sys.stop()
    await small.end()
    await own.drop()
  }
}

function makeSystem(config: Partial<RuntimeConfig> = {}): ActorSystem {
  const system = createActorSystem({ sql: db.sql, logger, config: { nodeId: 'single', shards: 8, ...config } })
  system.register(counter).register(barrier).register(picky).register(job).register(notes)
  systems.push(system)
  return system
}

beforeAll(async () => {
  db = await testDatabase()
  await ensureCounterTable(db.sql)
  await db.sql`create table test_picky (id text primary key, value integer not null check (value < 100))`
  await db.sql`create table test_ledger (actor text not null, note text not null)`
})

afterAll(async () => {
  for (const s of systems) await s.stop()
  await db.drop()
})

describe('mailbox', () => {
  test('500 concurrent asks to one actor run one at a time, in arrival order', async () => {
    const system = makeSystem()
    await system.start()
    overlap.detected = 0
    const replies = await Promise.all(range(500).map(() => system.ask('counter', 'hot', { type: 'increment' })))
    // Each ask saw exactly the increments that arrived before it.
    expect(replies).toEqual(range(500).map((i) => i + 1))
    expect(overlap.detected).toBe(0)
    expect(await counterValue(db.sql, 'hot')).toBe(500)
    await system.stop()
  })

  test('different actors run their turns at the same time', async () => {
    const system = makeSystem()
    await system.start()
    // 20 handlers that each wait until all 20 are inside: only true concurrency gets out.
    rendezvous.expected = 20
    const replies = await Promise.all(range(20).map((i) => system.ask('barrier', `b${i}`, { type: 'meet' }, { timeout: 5000 })))
    expect(replies).toEqual(range(20).map(() => 'met'))
    await system.stop()
  })

  test('in a group commit, a turn whose writes fail is rolled back alone', async () => {
    const one = makeSystem({ nodeId: 'grouped', commitConcurrency: 1 })
    await one.start()
    // Asked in the same tick with one commit connection: the turns share transactions.
    const results = await Promise.allSettled(range(10).map((i) => one.ask('picky', `p${i}`, { type: 'set', value: i === 4 ? 500 : i })))
    expect(results.map((r) => r.status)).toEqual(range(10).map((i) => (i === 4 ? 'rejected' : 'fulfilled')))
    expect((results[4] as PromiseRejectedResult).reason.code).toBe('23514') // check_violation
    const rows = await db.sql<{ id: string; value: number }[]>`select id, value from test_picky order by id`
    expect([...rows]).toEqual(range(10).filter((i) => i !== 4).map((i) => ({ id: `p${i}`, value: i })))
    // They did share: fewer transactions than turns (the failed group's retries included).
    const batches = (await one.metrics.batchTurns.get()).values
    const sum = batches.find((v) => v.metricName?.endsWith('_sum'))!.value
    const count = batches.find((v) => v.metricName?.endsWith('_count'))!.value
    expect(count).toBeLessThan(sum)
    // The actor whose turn failed serves on, from its committed state.
    expect(await one.ask('picky', 'p4', { type: 'set', value: 44 })).toBe(44)
    await one.stop()
  })
})

describe('turns', () => {
  let system: ActorSystem
  const events: ActorEvent[] = []
  beforeAll(async () => {
    system = makeSystem()
    system.subscribe((e) => events.push(e))
    await system.start()
  })
  afterAll(() => system.stop())

  test('a turn commits state and numbered outbox events, published after commit', async () => {
    expect(await system.ask('counter', 'e1', { type: 'increment' })).toBe(1)
    expect(await system.ask('counter', 'e1', { type: 'increment', by: 5 })).toBe(6)
    const stored = await readOutbox(db.sql, 'counter:e1', 0)
    expect(stored.map((e) => [e.seq, e.type, e.data])).toEqual([
      [1, 'incremented', { value: 1, node: 'single' }],
      [2, 'incremented', { value: 6, node: 'single' }],
    ])
    expect(events.filter((e) => e.topic === 'counter:e1').map((e) => [e.seq, e.data])).toEqual(stored.map((e) => [e.seq, e.data]))
    expect(await readOutbox(db.sql, 'counter:e1', 1)).toHaveLength(1)
  })

  test('a failing turn leaves state and outbox unchanged, and the actor keeps serving', async () => {
    expect(await system.ask('counter', 'f1', { type: 'increment' })).toBe(1)
    const before = events.length
    const err = await system.ask('counter', 'f1', { type: 'fail' }).catch((e) => e)
    expect(err).toBeInstanceOf(ConflictError)
    expect(await counterValue(db.sql, 'f1')).toBe(1) // the ctx.tx update was rolled back
    expect((await readOutbox(db.sql, 'counter:f1', 0)).map((e) => e.seq)).toEqual([1])
    expect(events.length).toBe(before)
    expect(await system.ask('counter', 'f1', { type: 'increment' })).toBe(2)
    expect((await readOutbox(db.sql, 'counter:f1', 0)).map((e) => e.seq)).toEqual([1, 2])
  })

  test('ctx.tx writes commit with the turn; background work reports back with self.tell', async () => {
    expect(await system.ask('job', 'j1', { type: 'start', input: 21 })).toBe('started')
    expect([...(await db.sql`select note from test_ledger where actor = 'j1'`)]).toEqual([{ note: 'started' }])
    // The turn committed and answered without waiting for its background work.
    expect(await system.ask('job', 'j1', { type: 'get' })).toEqual({ status: 'running' })
    jobWork.resolve()
    await eventually('the background task to report back', async () => {
      const state = (await system.ask('job', 'j1', { type: 'get' })) as { status: string; result?: number }
      return state.status === 'done' && state.result === 42
    })
    const [row] = await db.sql`select state from actor_state where kind = 'job' and actor_id = 'j1'`
    expect(row!.state).toEqual({ status: 'done', result: 42 })
  })

  test('ctx.tx runs statements built from fragments as postgres.js does, in the turn: committed with it, rolled back with it', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      expect(await system.ask('notes', 'n1', { type: 'add', note: 'a' })).toEqual({ added: { actor: 'n1', note: 'a' }, all: ['a'], values: [['n1', 'a']] })
      expect(await system.ask('notes', 'n1', { type: 'add', note: 'b' })).toEqual({ added: { actor: 'n1', note: 'b' }, all: ['a', 'b'], values: [['n1', 'a'], ['n1', 'b']] })
      // A turn that throws after its nested-fragment write leaves nothing behind.
      expect(await system.ask('notes', 'n1', { type: 'add', note: 'c', fail: true }).catch((e) => e)).toBeInstanceOf(ConflictError)
      expect(await notesOf(db.sql, 'n1')).toEqual(['a', 'b'])
      expect(await notesOf(db.sql, 'never-run')).toEqual([])
      expect(unhandled).toEqual([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })

  test('ctx.write: unawaited writes commit with the turn; one that fails fails the turn and nothing of it is committed', async () => {
    expect(await system.ask('notes', 'w1', { type: 'write', notes: ['x', 'y'] })).toBe(2)
    expect(await notesOf(db.sql, 'w1')).toEqual(['x', 'y'])
    const err = await system.ask('notes', 'w1', { type: 'write', notes: ['z'], bad: true }).catch((e) => e)
    expect((err as { code?: string }).code).toBe('23502') // not_null_violation, the failing write's own error
    expect(await notesOf(db.sql, 'w1')).toEqual(['x', 'y'])
    // The actor goes on.
    expect(await system.ask('notes', 'w1', { type: 'write', notes: ['z'] })).toBe(1)
    expect(await notesOf(db.sql, 'w1')).toEqual(['x', 'y', 'z'])
  })

  test('ctx.tx refuses transaction control: the turn is the transaction', async () => {
    const err = await system.ask('notes', 'n2', { type: 'begin' }).catch((e) => e)
    expect(String(err)).toContain('ctx.tx.begin is not available in an actor turn')
  })

  test('a redelivered message id is applied once and answered with the first reply', async () => {
    expect(await system.ask('counter', 'd1', { type: 'increment' }, { messageId: 'm-1' })).toBe(1)
    expect(await system.ask('counter', 'd1', { type: 'increment' }, { messageId: 'm-1' })).toBe(1)
    const burst = await Promise.all(range(5).map(() => system.ask('counter', 'd1', { type: 'increment' }, { messageId: 'm-2' })))
    expect(burst).toEqual([2, 2, 2, 2, 2])
    expect(await counterValue(db.sql, 'd1')).toBe(2)
    expect((await readOutbox(db.sql, 'counter:d1', 0)).map((e) => e.seq)).toEqual([1, 2])
  })

  test('a burst of redelivered messages is answered on a pool of two connections (no commit waits for the pool while it holds a connection)', async () => {
    // 40 duplicates at once: their group fails on its inbox rows, each turn is committed again
    // alone and looks its first reply up. Done on the pool while holding a connection, two such
    // commits would each wait for the other's connection, and every ask for ever.
    await onSmallPool({ commitConcurrency: 2 }, async (sys, own) => {
      await ensureCounterTable(own.sql)
      sys.register(counter)
      await sys.start()
      const ids = range(40).map((i) => `burst-${i}`)
      const ask = (id: string) => sys.ask('counter', id, { type: 'increment' }, { messageId: `${id}:once`, timeout: 20_000 })
      expect(await Promise.all(ids.map(ask))).toEqual(ids.map(() => 1))
      expect(await Promise.all(ids.map(ask))).toEqual(ids.map(() => 1))
      expect(await Promise.all(ids.map((id) => counterValue(own.sql, id)))).toEqual(ids.map(() => 1))
      // The actors go on.
      expect(await sys.ask('counter', 'burst-0', { type: 'increment' })).toBe(2)
    })
  })

  test('turns that read through the pool after their first ctx.tx statement all finish on a pool of two connections', async () => {
    // Each handler holds its transaction's connection while it waits for another from the pool.
    // Were turns allowed every connection, two of them would wait for each other for ever.
    await onSmallPool({}, async (sys, _own, small) => {
      sys.register(
        defineActor({
          kind: 'reader',
          messages: T.Object({ type: T.Literal('read') }),
          initial: () => ({}),
          async handle(ctx) {
            const [inTx] = await ctx.tx<{ n: number }[]>`select 1 as n`
            const [onPool] = await small<{ n: number }[]>`select 2 as n`
            return { reply: inTx!.n + onPool!.n }
          },
        }),
      )
      await sys.start()
      const ids = range(20).map((i) => `reader-${i}`)
      expect(await Promise.all(ids.map((id) => sys.ask('reader', id, { type: 'read' }, { timeout: 20_000 })))).toEqual(ids.map(() => 3))
    })
  })

  test('bad messages are refused at ask time without touching the actor', async () => {
    await expect(system.ask('counter', 'v1', { type: 'increment', by: -3 })).rejects.toBeInstanceOf(ValidationError)
    await expect(system.ask('counter', 'v1', { type: 'nope' })).rejects.toBeInstanceOf(ValidationError)
    await expect(system.ask('ghost', 'v1', {})).rejects.toBeInstanceOf(UnknownActorKindError)
    expect(() => system.tell('ghost', 'v1', {})).toThrow(UnknownActorKindError)
    expect(await system.ask('counter', 'v1', { type: 'get' })).toBe(0)
  })

  test('an ask that is not answered in time fails with a timeout', async () => {
    const held = gate()
    try {
      const err = await system.ask('counter', 't1', { type: 'heldIncrement', gate: held.name }, { timeout: 50 }).catch((e) => e)
      expect(err).toBeInstanceOf(ActorTimeoutError)
      held.open()
      // The message was not withdrawn: it is applied, and the actor goes on.
      expect(await system.ask('counter', 't1', { type: 'increment' })).toBe(2)
    } finally {
      held.close()
    }
  })
})

describe('lifecycle', () => {
  test('passivation after the idle timeout and re-activation keep the state', async () => {
    const system = makeSystem({ nodeId: 'idle', idleTimeoutMs: 200 })
    await system.start()
    for (const _ of range(3)) await system.ask('counter', 'sleepy', { type: 'increment' })
    expect(system.liveActors()).toEqual({ counter: 1 })
    await eventually('the idle actor to be passivated', () => system.liveActors().counter === undefined)
    expect(await system.ask('counter', 'sleepy', { type: 'get' })).toBe(3)
    expect(system.liveActors()).toEqual({ counter: 1 })
    await system.stop()
  })

  test('the live-actor cap passivates the least recently used', async () => {
    const system = makeSystem({ nodeId: 'capped', maxLiveActors: 5 })
    await system.start()
    for (const i of range(12)) await system.ask('counter', `lru${i}`, { type: 'increment', by: i + 1 })
    expect(system.liveActors().counter).toBe(5)
    for (const i of range(12)) expect(await system.ask('counter', `lru${i}`, { type: 'get' })).toBe(i + 1)
    expect(system.liveActors().counter).toBe(5)
    await system.stop()
  })

  test('a reminder scheduled before a restart fires after it, once', async () => {
    const first = makeSystem({ nodeId: 'before', reminderPollMs: 50 })
    await first.start()
    const at = new Date(Date.now() + 400)
    await first.ask('counter', 'r1', { type: 'remindIncrement', at: at.toISOString() })
    await first.schedule('counter', 'r2', at, { type: 'increment', by: 7 })
    expect(await countReminders(db.sql, 'counter', 'r1')).toBe(1)
    await first.stop()
    expect(await counterValue(db.sql, 'r1')).toBe(0)

    const second = makeSystem({ nodeId: 'after', reminderPollMs: 50 })
    await second.start()
    await eventually('both reminders to fire', async () => (await counterValue(db.sql, 'r1')) === 1 && (await counterValue(db.sql, 'r2')) === 7)
    expect(await countReminders(db.sql, 'counter', 'r1')).toBe(0)
    expect(await countReminders(db.sql, 'counter', 'r2')).toBe(0)
    expect(await second.ask('counter', 'r1', { type: 'get' })).toBe(1)
    await second.stop()
  })

  test('graceful stop finishes the turns in progress, then refuses', async () => {
    const system = makeSystem({ nodeId: 'stopping' })
    await system.start()
    const held = gate()
    const inFlight = range(5).map((i) => system.ask('counter', `s${i}`, { type: 'heldIncrement', gate: held.name }))
    await eventually('the turns to start', () => system.activeTurns === 5)
    let stopped = false
    const stopping = system.stop().then(() => (stopped = true))
    // A turn of the event loop: the stop has gone as far as it can without the turns.
    await new Promise((resolve) => setImmediate(resolve))
    expect(stopped).toBe(false)
    expect(system.activeTurns).toBe(5)
    held.open()
    await stopping
    held.close()
    expect(await Promise.all(inFlight)).toEqual([1, 1, 1, 1, 1])
    for (const i of range(5)) expect(await counterValue(db.sql, `s${i}`)).toBe(1)
    expect(system.liveActors()).toEqual({})
    await expect(system.ask('counter', 's0', { type: 'get' })).rejects.toBeInstanceOf(ActorSystemStoppedError)
  })

  test('metrics: live actors and mailbox depth by kind, turn durations, batch sizes', async () => {
    const metrics = new Metrics({ defaultMetrics: false })
    const system = createActorSystem({ sql: db.sql, logger, metrics, config: { nodeId: 'metered', shards: 8 } }).register(counter)
    systems.push(system)
    await system.start()
    const held = gate()
    const slow = system.ask('counter', 'm1', { type: 'heldIncrement', gate: held.name })
    const queued = system.ask('counter', 'm1', { type: 'increment' })
    await eventually('the held turn to start', () => system.activeTurns === 1)
    const during = await metrics.registry.metrics()
    expect(during).toContain('actor_live{kind="counter"} 1')
    expect(during).toContain('actor_mailbox_depth{kind="counter"} 1')
    held.open()
    await Promise.all([slow, queued])
    held.close()
    await system.ask('counter', 'm1', { type: 'fail' }).catch(() => {})
    const after = await metrics.registry.metrics()
    expect(after).toContain('actor_turn_duration_seconds_count{kind="counter",outcome="applied"} 2')
    expect(after).toContain('actor_turn_duration_seconds_count{kind="counter",outcome="failed"} 1')
    expect(after).toContain('actor_ask_duration_seconds_count{kind="counter",outcome="ok"} 2')
    expect(after).toContain('actor_ask_duration_seconds_count{kind="counter",outcome="error"} 1')
    // Alone (no Redis) there are no shard queues: the family is there, without samples.
    expect(after).toContain('# TYPE actor_queue_jobs gauge')
    expect(after).not.toContain('actor_queue_jobs{')
    expect(after).toContain('actor_mailbox_depth{kind="counter"} 0')
    expect(after).toMatch(/actor_commit_batch_turns_count \d+/)
    await system.stop()
  })

  test('a node whose shards were taken over cannot commit (fencing)', async () => {
    const system = makeSystem({ nodeId: 'fenced' })
    await system.start()
    expect(await system.ask('counter', 'x1', { type: 'increment' })).toBe(1)
    // Another owner bumps every epoch, as a node claiming the shards would.
    await claimShards(db.sql, range(8), 'intruder')
    const err = await system.ask('counter', 'x1', { type: 'increment' }).catch((e) => e)
    expect(err).toBeInstanceOf(FencedError)
    expect(await counterValue(db.sql, 'x1')).toBe(1)
    expect((await readOutbox(db.sql, 'counter:x1', 0)).map((e) => e.seq)).toEqual([1])
    expect((await system.metrics.fencedBatches.get()).values[0]!.value).toBe(1)
    await system.stop()
  })
})
