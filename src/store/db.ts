import postgres from 'postgres'
import type { Metrics } from '../core/metrics.ts'

/** The pool. */
export type Sql = postgres.Sql<{}>
/** A pool or a transaction handle: every query function takes one as its first argument. */
export type Db = postgres.ISql<{}>
export type TxSql = postgres.TransactionSql<{}>

export interface ConnectOptions {
  max?: number
  /** Application name shown in pg_stat_activity. */
  name?: string
}

export function connect(url: string, opts: ConnectOptions = {}): Sql {
  return postgres(url, {
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
}

type AnyFn = (...args: any[]) => Promise<unknown>

/**
 * Wrap every function of a repository module so its duration is observed in
 * `db_query_duration_seconds{query="<repo>.<fn>"}`. postgres.js has no completion hook,
 * so timing at the repository boundary is the one place that sees every query.
 */
export function instrument<T extends Record<string, unknown>>(name: string, repo: T, metrics: Metrics | undefined): T {
  if (!metrics) return repo
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(repo)) {
    if (typeof value !== 'function') {
      out[key] = value
      continue
    }
    const fn = value as AnyFn
    const labels = { query: `${name}.${key}` }
    out[key] = async (...args: unknown[]) => {
      const end = metrics.dbDuration.startTimer(labels)
      try {
        return await fn(...args)
      } finally {
        end()
      }
    }
  }
  return out as T
}
