/**
 * The dataset engine as DataKits and training see it: profiling and Parquet conversion,
 * preview, sandboxed SQL, export, and column reads, over files named by the server. DuckDB
 * implements it (duckdb.ts); callers depend on this module only.
 */
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import type { DatasetFormat } from './format.ts'
import type { DatasetProfile } from './profile.ts'
import type { JsonValue } from './values.ts'

export interface DatasetEngineOptions {
  /** DuckDB worker threads per operation. */
  threads: number
  /** DuckDB memory_limit per operation, e.g. "1GB"; beyond it profiling spills to disk. */
  memoryLimit: string
  /** Profiling/conversion operations running at once; more wait their turn. */
  backgroundConcurrency: number
  /** Preview/query/export operations running at once; more wait their turn. */
  interactiveConcurrency: number
  /** Where profiling and export may spill (a private subdirectory per operation). */
  tempDirectory: string
}

/**
 * Sized for the 2-core laptop the design targets: every operation may use both cores (DuckDB
 * parallelises a single scan well), one background job at a time so two uploads do not
 * thrash, two interactive slots. Worst case 3 × 1 GB of DuckDB memory.
 */
export const DEFAULT_ENGINE_OPTIONS: Readonly<DatasetEngineOptions> = Object.freeze({
  threads: Math.max(1, Math.min(2, availableParallelism())),
  memoryLimit: '1GB',
  backgroundConcurrency: 1,
  interactiveConcurrency: 2,
  tempDirectory: join(tmpdir(), 'quadrax-duckdb'),
})

export const DEFAULT_QUERY_TIMEOUT_MS = 10_000
export const DEFAULT_QUERY_MAX_ROWS = 10_000
export const MAX_PREVIEW_ROWS = 1_000
/** Top values kept per text column. */
export const DEFAULT_TOP_VALUES = 5

export type ExportFormat = 'csv' | 'parquet' | 'json'

export const EXPORT_MEDIA_TYPES: Readonly<Record<ExportFormat, string>> = {
  csv: 'text/csv; charset=utf-8',
  parquet: 'application/vnd.apache.parquet',
  json: 'application/json',
}

export interface ResultColumn {
  name: string
  type: string
}

export interface DatasetPreview {
  columns: ResultColumn[]
  rows: Record<string, JsonValue>[]
  offset: number
  limit: number
  totalRows: number
}

export interface QueryOptions {
  timeoutMs?: number
  maxRows?: number
}

export interface QueryResult {
  columns: ResultColumn[]
  rows: Record<string, JsonValue>[]
  /** Rows returned (at most maxRows). */
  rowCount: number
  /** True when the query produced more than maxRows rows and the rest were not read. */
  truncated: boolean
  elapsedMs: number
}

export interface ExportResult {
  path: string
  bytes: number
  contentType: string
}

export interface ProfileOptions {
  /** Where the Parquet copy goes; default: next to the source, `<src>.parquet`. */
  parquetPath?: string
  topValues?: number
  /** Aborting interrupts DuckDB; the promise rejects with the signal's reason. */
  signal?: AbortSignal
}

/**
 * What DataKits need from a dataset engine. DuckDB implements it here; the interface keeps
 * the actor and routes independent of it.
 */
export interface DatasetEngine {
  /** Write `src` as Parquet at `parquetPath`, then profile it. See DuckDBDatasetEngine.profile. */
  profile(src: string, format: DatasetFormat, opts?: ProfileOptions): Promise<DatasetProfile>
  toParquet(src: string, dest: string, format: DatasetFormat, opts?: { signal?: AbortSignal }): Promise<void>
  preview(parquetPath: string, limit: number, offset: number): Promise<DatasetPreview>
  query(parquetPath: string, sql: string, opts?: QueryOptions): Promise<QueryResult>
  exportTo(parquetPath: string, format: ExportFormat, dest: string, opts?: ExportOptions): Promise<ExportResult>
  /** The columns of a Parquet file with their types (read from its footer). */
  describe(parquetPath: string): Promise<ResultColumn[]>
  /**
   * Named columns of a Parquet file as arrays of plain values, for work that needs the data
   * in memory (training): each column cast as asked. Runs in a background slot; rejects with
   * `opts.tooMany(rows)` when the file has more than `maxRows` rows, before reading any.
   */
  readColumns(parquetPath: string, columns: readonly { name: string; as: ColumnCast }[], opts: ReadColumnsOptions): Promise<Record<string, unknown[]>>
}

/**
 * How readColumns hands a column over: numbers as doubles, text as strings, booleans as
 * they are, dates and times as seconds since the epoch (doubles).
 */
export type ColumnCast = 'number' | 'string' | 'boolean' | 'time'

export interface ReadColumnsOptions {
  maxRows: number
  /** The error for a file with more rows than maxRows. */
  tooMany(rows: number): Error
  signal?: AbortSignal
}

export interface ExportOptions {
  /**
   * CSV only: prefix cells that a spreadsheet would evaluate as a formula (default true, for
   * files people open). Off for files programs read (a training job's input): the data as it is.
   */
  neutraliseFormulas?: boolean
  signal?: AbortSignal
}
