/**
 * What the pool asks of a dataset worker process (worker-pool.ts → sandbox-worker.ts →
 * duckdb-ops.ts): the settings a worker is started with, each operation it may be sent, and
 * what each answers with. Types and one error code only, so that the pool and the wire
 * protocol (sandbox-protocol.ts) name them without loading DuckDB.
 */
import type { DatasetLimits, DatasetPreview, ExportFormat, QueryResult, SqlInputs } from './engine.ts'
import type { DatasetFormat } from './format.ts'
import type { DatasetProfile } from './profile.ts'

/** What a worker process is started with (the same for every operation it runs). */
export interface WorkerSettings {
  /** DuckDB threads per operation. */
  threads: number
  /** DuckDB's memory_limit, e.g. "300MiB" (below the process budget: the runtime needs some). */
  duckdbMemoryLimit: string
  /** Keep a DuckDB instance made ahead for the next query (see prepareSpare, duckdb-instance.ts): interactive workers. */
  spareInstance: boolean
  /** The worker runs user SQL: it works out what the sandbox refuses before it says it is ready (prepareSandbox, duckdb-sandbox.ts). */
  sandbox: boolean
  /** Private writable memory the worker may map beyond what it holds once ready, bytes (the kernel's bound: rlimit.ts). */
  memoryGrowthBytes: number
}

/**
 * DuckDB's own memory_limit was reached (an aggregate or sort it could not spill). The pool
 * answers it as it answers the process outgrowing its budget (QueryMemoryError or
 * ProfileMemoryError, naming the setting): to the user it is the same bound.
 */
export const DUCKDB_OUT_OF_MEMORY = 'duckdb_out_of_memory'

/** One operation, as the pool sends it. `scratch` is a directory of its own that the pool removes afterwards. */
export type SandboxOp =
  | { kind: 'profile'; src: string; format: DatasetFormat; parquetPath: string; topValues: number; limits: DatasetLimits; scratch: string }
  | { kind: 'toParquet'; src: string; format: DatasetFormat; dest: string; limits: DatasetLimits; scratch: string }
  | { kind: 'preview'; parquetPath: string; limit: number; offset: number; maxBytes: number; scratch: string }
  | { kind: 'query'; parquetPath: string; sql: string; maxRows: number; maxBytes: number; scratch: string }
  | { kind: 'exportQuery'; inputs: SqlInputs; sql: string; format: ExportFormat; dest: string; scratch: string }
  | { kind: 'export'; parquetPath: string; format: 'csv' | 'json'; dest: string; neutraliseFormulas: boolean; scratch: string }

/**
 * What each operation answers with. A preview's and a query's `bytes`: those of their rows' JSON,
 * which the pool counts against the user's DATAKIT_QUERY_BYTES_PER_SECOND (worker-pool.ts).
 */
export interface SandboxResults {
  profile: DatasetProfile
  toParquet: null
  preview: DatasetPreview & { bytes: number }
  /** The rows only as JSON bytes (rowsJson): the server splices them into its answer rather than parse and serialise 8 MB again. */
  query: Omit<QueryResult, 'rows'> & { bytes: number }
  exportQuery: { bytes: number }
  export: { bytes: number }
}

/**
 * Whether an operation answers with rows (a preview, a query): those are counted against, and
 * wait for, their user's DATAKIT_QUERY_BYTES_PER_SECOND (worker-pool.ts). Exports are files,
 * streamed at DATAKIT_DOWNLOAD_BYTES_PER_SECOND instead; the rest answer the server itself.
 */
export function answersRows(kind: SandboxOp['kind']): kind is 'query' | 'preview' {
  return kind === 'query' || kind === 'preview'
}
