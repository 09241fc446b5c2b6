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
  if (opts.metrics) observers.set(sql, opts.metrics.dbDuration)
  return sql
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
