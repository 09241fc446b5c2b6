import postgres from 'postgres'
import type { Metrics } from '../core/metrics.ts'

/** The pool. */
export type Sql = postgres.Sql<{}>
/** A pool or a transaction handle: every query function takes one as its first argument. */
export type Db = postgres.ISql<{}>

export interface ConnectOptions {
  max?: number
  /** Application name shown in pg_stat_activity. */
  name?: string
  /** Where the queries of table modules (see `instrument`) are timed. */
  metrics?: Metrics
}

export function connect(url: string, opts: ConnectOptions = {}): Sql {
  const sql: Sql = postgres(url, {
    max: opts.max ?? 20,
    idle_timeout: 30,
    connect_timeout: 10,
    onnotice: () => {},
    connection: { application_name: opts.name ?? 'quadrax' },
    // int8 comes back as a string by default; our int8 values (counters, sequence numbers,
    // byte sizes) stay far below 2^53, so numbers are safe and far easier to use.
    types: { bigint: { to: 20, from: [20], serialize: (v: number) => String(v), parse: (v: string) => Number(v) } },
    transform: { undefined: null },
  })
  if (opts.metrics) {
    observers.set(sql, opts.metrics.dbDuration)
    observePool(sql, opts.max ?? 20, opts.metrics)
  }
  return sql
}

/**
 * Pool metrics (docs/metrics.md). postgres.js exposes none (porsager/postgres#443 is open) and
 * keeps its connection queues private, so they are measured where a caller takes a connection
 * for itself: `sql.begin` (a transaction) and `sql.reserve` (an actor turn's batch). That is
 * where a pool runs dry: single queries are pipelined on busy connections instead of waiting
 * for a free one, and hold none between round trips.
 *
 * - `db_pool_wait_seconds`: from asking to holding the connection (for `begin`, until its
 *   callback runs, so one BEGIN round trip is included).
 * - `db_pool_waits_total`: acquisitions that found every connection held or promised to an
 *   earlier one (held + waiting ≥ max), so had to wait for one to be handed back.
 * - `db_pool_connections{state}`: `reserved` (held by a transaction or reservation),
 *   `waiting` (acquisitions not yet served), `max` (DATABASE_POOL_MAX).
 */
function observePool(sql: Sql, max: number, metrics: Metrics): void {
  const state = { reserved: 0, waiting: 0, max }
  let waits = 0
  const waited = metrics.histogram('db_pool_wait_seconds', 'Time a transaction or reservation waited for a pool connection', [], [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])
  metrics.sampled('counter', 'db_pool_waits_total', 'Transactions and reservations that found every pool connection held (DATABASE_POOL_MAX) and waited for one', () => waits)
  metrics.sampled('gauge', 'db_pool_connections', 'Pool connections by state (reserved: held by a transaction or reservation; waiting: acquisitions not yet served; max: DATABASE_POOL_MAX)', () => state, 'state')
  const ask = () => {
    if (state.reserved + state.waiting >= max) waits++
    state.waiting++
    return performance.now()
  }
  const got = (since: number) => {
    state.waiting--
    state.reserved++
    waited.observe((performance.now() - since) / 1000)
  }

  const reserve = sql.reserve
  sql.reserve = async () => {
    const since = ask()
    let conn: postgres.ReservedSql<{}>
    try {
      conn = await reserve()
    } catch (err) {
      state.waiting--
      throw err
    }
    got(since)
    const release = conn.release
    let held = true
    conn.release = () => {
      if (held) state.reserved--
      held = false
      release()
    }
    return conn
  }

  // begin(fn) or begin(options, fn): the callback is last.
  const begin = sql.begin as (...args: unknown[]) => Promise<unknown>
  sql.begin = ((...args: unknown[]) => {
    const fn = args.at(-1) as (tx: unknown) => unknown
    const since = ask()
    let holding = false
    args[args.length - 1] = (tx: unknown) => {
      holding = true
      got(since)
      return fn(tx)
    }
    return begin(...args).finally(() => (holding ? state.reserved-- : state.waiting--))
  }) as Sql['begin']
}

/** Where a handle's queries are observed: its server's db_query_duration_seconds. */
const observers = new WeakMap<object, Metrics['dbDuration']>()

/** A handle whose queries are observed like those of `pool` (an actor turn's transaction). */
export function observeLike(handle: object, pool: object): void {
  const o = observers.get(pool)
  if (o) observers.set(handle, o)
}

/**
 * A table module's query function, timed: each call's duration is observed in
 * `db_query_duration_seconds{query="<label>"}` of the server whose handle (the first argument:
 * a pool from `connect`, or an actor turn's transaction) it was called with; a handle with no
 * server (a script's pool) is not timed. postgres.js has no completion hook, so timing at the
 * repository boundary is the one place that sees every query with a name.
 */
export function timed<A extends unknown[], R>(label: string, fn: (...args: A) => Promise<R>): (...args: A) => Promise<R> {
  const labels = { query: label }
  return (...args: A) => {
    const histogram = typeof args[0] === 'function' ? observers.get(args[0]) : undefined
    if (!histogram) return fn(...args)
    const end = histogram.startTimer(labels)
    return fn(...args).finally(() => end())
  }
}
