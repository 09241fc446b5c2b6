/**
 * The counter: the test actor kind of the runtime, and the example in docs/actors.md.
 * Its state lives in a table of its own (test_counters), loaded and persisted with raw SQL.
 */
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Type as T, type Static } from '@sinclair/typebox'
import { ConflictError } from '../../src/core/errors.ts'
import type { Db } from '../../src/store/db.ts'
import { defineActor } from '../../src/actors/runtime/index.ts'
import { until } from '../support/until.ts'

const CounterMessage = T.Union([
  /** Emits `incremented` on the counter's topic, unless `quiet` (then the turn writes the state alone). */
  T.Object({ type: T.Literal('increment'), by: T.Optional(T.Integer({ minimum: 1, maximum: 1000 })), quiet: T.Optional(T.Boolean()) }),
  T.Object({ type: T.Literal('get') }),
  /** Holds its turn until `gate` is opened (a stand-in for a slow side effect), then increments. */
  T.Object({ type: T.Literal('heldIncrement'), gate: T.String({ pattern: '^[0-9a-f-]{36}$' }) }),
  /** Writes through ctx.tx, emits, then throws: nothing of it may survive. */
  T.Object({ type: T.Literal('fail') }),
  /** Schedules an increment at `at` (ISO time), in the turn's transaction. */
  T.Object({ type: T.Literal('remindIncrement'), at: T.String({ minLength: 1 }) }),
])
type CounterMessage = Static<typeof CounterMessage>

// Gates live in files, so a test can open one for a turn held in another process (a node).
const GATES = join(tmpdir(), 'quadrax-test-gates')

/** A gate for `heldIncrement`: its turns wait until `open()` (from any process); `close()` removes it. */
export function gate(): { name: string; open(): void; close(): void } {
  const name = crypto.randomUUID()
  const path = join(GATES, name)
  return {
    name,
    open: () => {
      mkdirSync(GATES, { recursive: true })
      writeFileSync(path, '')
    },
    close: () => rmSync(path, { force: true }),
  }
}

export interface CounterState {
  value: number
}

/** Create the counter's table (tests and the node script call it; it is not a migration). */
export async function ensureCounterTable(sql: Db): Promise<void> {
  await sql`create table if not exists test_counters (id text primary key, value bigint not null)`
}

export async function counterValue(sql: Db, id: string): Promise<number> {
  const [row] = await sql<{ value: number }[]>`select value from test_counters where id = ${id}`
  return row?.value ?? 0
}

/** Handlers of one counter in progress, and how often two were seen at once (must stay 0). */
export const overlap = { inTurn: new Set<string>(), detected: 0 }

export const counter = defineActor({
  kind: 'counter',
  messages: CounterMessage,
  async load(sql, id): Promise<CounterState> {
    return { value: await counterValue(sql, id) }
  },
  // Returning the query itself (rather than awaiting it in an async function) lets the
  // runtime pipeline COMMIT right behind it.
  persist: (tx, id, state: CounterState) =>
    tx`insert into test_counters (id, value) values (${id}, ${state.value})
       on conflict (id) do update set value = excluded.value`,
  // A group commit writes all its counters in one statement.
  persistMany: (tx, entries) =>
    tx`insert into test_counters (id, value)
       select * from unnest(${entries.map((e) => e.id)}::text[], ${entries.map((e) => e.state.value)}::int8[])
       on conflict (id) do update set value = excluded.value`,
  async handle(ctx, state, msg) {
    if (overlap.inTurn.has(ctx.id)) overlap.detected++
    overlap.inTurn.add(ctx.id)
    try {
      // Yield once, so an overlapping turn (if the runtime allowed one) would interleave here.
      await Promise.resolve()
      switch (msg.type) {
        case 'increment':
        case 'heldIncrement': {
          if (msg.type === 'heldIncrement') await until(() => existsSync(join(GATES, msg.gate)), `gate ${msg.gate} to open`, 120_000, 5)
          const value = state.value + (msg.type === 'increment' ? (msg.by ?? 1) : 1)
          if (msg.type === 'heldIncrement' || !msg.quiet) ctx.emit(`counter:${ctx.id}`, 'incremented', { value, node: ctx.nodeId })
          return { state: { value }, reply: value }
        }
        case 'get':
          return { reply: state.value }
        case 'fail':
          await ctx.tx`update test_counters set value = value + 1000 where id = ${ctx.id}`
          ctx.emit(`counter:${ctx.id}`, 'incremented', { value: -1 })
          throw new ConflictError('the counter refuses')
        case 'remindIncrement':
          ctx.schedule(new Date(msg.at), { type: 'increment' })
          return { reply: null }
        default: {
          const unhandled: never = msg
          throw new Error(`unhandled counter message ${JSON.stringify(unhandled)}`)
        }
      }
    } finally {
      overlap.inTurn.delete(ctx.id)
    }
  },
})
