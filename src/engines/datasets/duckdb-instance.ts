/**
 * The DuckDB instances of a dataset worker: each operation gets a fresh in-memory
 * DuckDBInstance with the hardened settings below, closed when the operation ends (withDuckDB),
 * so nothing one operation does (temp objects, settings, memory) outlives it. An interactive
 * worker makes the next one ahead of time while it is idle (the spare).
 */
import { mkdir } from 'node:fs/promises'
import { DuckDBInstance, type DuckDBConnection } from '@duckdb/node-api'
import type { WorkerSettings } from './sandbox-ops.ts'

/**
 * DuckDB settings every instance gets. No extension is installed or loaded automatically (the
 * engine needs only what is built in: CSV, JSON, Parquet; nothing is ever fetched from the
 * network). The directories DuckDB would derive from $HOME (extensions, persistent secrets)
 * point at a path that does not exist: with external access off, a catalog function that
 * touches them (duckdb_extensions(), duckdb_secrets()) fails naming that path rather than the
 * server's home, and no secret stored on the server is ever loaded.
 */
const HARDENED = {
  autoinstall_known_extensions: 'false',
  autoload_known_extensions: 'false',
  allow_community_extensions: 'false',
  allow_persistent_secrets: 'false',
  home_directory: '/nonexistent',
  extension_directory: '/nonexistent/extensions',
  secret_directory: '/nonexistent/secrets',
} as const

interface DuckDBSettings {
  threads: number
  memoryLimit: string
  spillDir?: string
}

function createInstance(opts: DuckDBSettings): Promise<DuckDBInstance> {
  return DuckDBInstance.create(':memory:', { threads: String(opts.threads), memory_limit: opts.memoryLimit, temp_directory: opts.spillDir ?? '', ...HARDENED })
}

/**
 * An instance made ahead of time, never used, for the next operation without a spill
 * directory (queries, previews): creating one costs 8–35 ms here, most of a `select 1`'s time
 * in the worker, and made while the worker is idle it is off the request's path. Unused until
 * taken, it is as fresh as one made on the spot.
 */
let spare: { key: string; instance: Promise<DuckDBInstance> } | undefined

const spareKey = (opts: DuckDBSettings) => `${opts.threads}/${opts.memoryLimit}`

async function takeSpare(opts: DuckDBSettings): Promise<DuckDBInstance | undefined> {
  if (opts.spillDir || spare?.key !== spareKey(opts)) return undefined
  const taken = spare
  spare = undefined
  return taken.instance.catch(() => undefined)
}

/** Make the spare instance for operations with these settings (a worker calls it when idle). */
export function prepareSpare(settings: WorkerSettings): void {
  if (!settings.spareInstance) return
  const opts = { threads: settings.threads, memoryLimit: settings.duckdbMemoryLimit }
  if (spare?.key === spareKey(opts)) return
  const instance = createInstance(opts)
  spare = { key: spareKey(opts), instance }
  instance.catch(() => {
    if (spare?.instance === instance) spare = undefined
  })
}

/**
 * The part of a new worker's warm-up (warmUp, duckdb-ops.ts) that loads DuckDB: an instance of
 * the operations' shape, the spare or one made and closed.
 */
export async function warmInstance(settings: WorkerSettings): Promise<void> {
  if (settings.spareInstance) {
    prepareSpare(settings)
    await spare?.instance
  } else {
    const instance = await createInstance({ threads: settings.threads, memoryLimit: settings.duckdbMemoryLimit })
    instance.closeSync()
  }
}

/**
 * Run `fn` on a connection to a fresh in-memory DuckDB, closed afterwards. `spillDir`: where
 * DuckDB may spill past its memory limit; none (the SQL sandbox) means such an operation fails
 * instead of writing to disk.
 */
export async function withDuckDB<T>(opts: DuckDBSettings, fn: (c: DuckDBConnection) => Promise<T>): Promise<T> {
  if (opts.spillDir) await mkdir(opts.spillDir, { recursive: true })
  const instance = (await takeSpare(opts)) ?? (await createInstance(opts))
  let conn: DuckDBConnection | undefined
  try {
    conn = await instance.connect()
    return await fn(conn)
  } finally {
    conn?.closeSync()
    instance.closeSync()
  }
}
