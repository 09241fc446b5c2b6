/**
 * The dataset engine as DataKits and training see it: profiling and Parquet conversion,
 * preview, sandboxed SQL and its export, whole-dataset export, and column reads, over files
 * named by the server. DuckDB implements it (duckdb.ts); callers depend on this module only.
 *
 * Every operation runs on behalf of a user (`user`: their id): slots are shared fairly
 * between users, at most a few per user, so one user's backlog never holds another's first
 * operation back by more than one slot's turnover.
 */
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import type { DatasetFormat } from './format.ts'
import type { DatasetProfile } from './profile.ts'
import type { JsonValue } from './values.ts'

/** What an uploaded dataset may be, checked at upload where possible and while profiling. */
export interface DatasetLimits {
  /** Bytes a gzip upload may decompress to (DATAKIT_MAX_DECOMPRESSED_BYTES). */
  maxDecompressedBytes: number
  /** Rows (DATAKIT_MAX_ROWS). */
  maxRows: number
  /** Columns (DATAKIT_MAX_COLUMNS). */
  maxColumns: number
}

export interface DatasetEngineOptions {
  /**
   * DuckDB worker threads per operation (interactive ones: at most cores / interactiveConcurrency,
   * so the interactive slots together never take more than the machine's cores).
   */
  threads: number
  /**
   * DuckDB's memory_limit per operation, e.g. "1GB": an upper bound. Each operation's DuckDB
   * gets the smaller of this and its process budget minus a reserve for the runtime (see
   * duckdbMemoryLimit in worker-process.ts); beyond it profiling spills to disk.
   */
  memoryLimit: string
  /** Profiling/conversion operations running at once; more wait their turn. */
  backgroundConcurrency: number
  /** Preview/query/export operations running at once; more wait their turn. */
  interactiveConcurrency: number
  /** Of those, at most this many for one user (DATAKIT_QUERY_CONCURRENCY_PER_USER). */
  interactivePerUser: number
  /** Profiling/conversion for one user at once (DATAKIT_PROFILE_CONCURRENCY_PER_USER). */
  backgroundPerUser: number
  /**
   * Interactive operations one user may have waiting beyond those running
   * (DATAKIT_QUERY_QUEUE_PER_USER); one more is a 429. Background work (profiling) always
   * queues: uploads are bounded by the storage quota.
   */
  interactiveQueuePerUser: number
  /** Resident memory of the process running one query, preview or export, in MiB (DATAKIT_QUERY_MEMORY_MB). */
  queryMemoryMb: number
  /** Resident memory of the process profiling or converting one dataset, in MiB (DATAKIT_PROFILE_MEMORY_MB). */
  profileMemoryMb: number
  /** Time one profile or conversion may take (DATAKIT_PROFILE_TIMEOUT_MS); a whole-dataset export too. */
  profileTimeoutMs: number
  /** Defaults of a query's bounds (DATAKIT_QUERY_TIMEOUT_MS, _MAX_ROWS, _MAX_BYTES; a preview's time too). */
  queryTimeoutMs: number
  queryMaxRows: number
  queryMaxBytes: number
  /** Bytes a query's export file may reach (DATAKIT_EXPORT_MAX_BYTES). */
  exportMaxBytes: number
  /**
   * Bytes of rows (JSON) one user's previews and queries may answer with a second, on average
   * (DATAKIT_QUERY_BYTES_PER_SECOND); queryMaxBytes of them at once. Past it, their next one waits.
   */
  queryBytesPerSecond: number
  /** Bounds of an uploaded dataset. */
  limits: DatasetLimits
  /** Where profiling and export may spill (a private subdirectory per operation). */
  tempDirectory: string
}

/**
 * Sized for the 2-core laptop the design targets: every operation may use both cores (DuckDB
 * parallelises a single scan well), one background job at a time so two uploads do not
 * thrash, two interactive slots, one of them per user. Worst case: the server plus
 * 2 × 512 MiB of queries and 1 GiB of profiling.
 */
export const DEFAULT_ENGINE_OPTIONS: Readonly<DatasetEngineOptions> = Object.freeze({
  threads: Math.max(1, Math.min(2, availableParallelism())),
  memoryLimit: '1GB',
  backgroundConcurrency: 1,
  interactiveConcurrency: 2,
  interactivePerUser: 1,
  backgroundPerUser: 1,
  interactiveQueuePerUser: 16,
  queryMemoryMb: 512,
  profileMemoryMb: 1024,
  profileTimeoutMs: 120_000,
  queryTimeoutMs: 10_000,
  queryMaxRows: 10_000,
  queryMaxBytes: 8 * 1024 * 1024,
  exportMaxBytes: 1024 ** 3,
  queryBytesPerSecond: 8 * 1024 * 1024,
  limits: Object.freeze({ maxDecompressedBytes: 1024 ** 3, maxRows: 20_000_000, maxColumns: 1_000 }),
  tempDirectory: join(tmpdir(), 'quadrax-duckdb'),
})

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
  /** Fewer rows than asked for because their JSON would pass DATAKIT_QUERY_MAX_BYTES. */
  truncated: boolean
}

/** On whose behalf an operation runs: the user whose share of the slots it takes. */
export interface OnBehalf {
  user: string
  /** Aborting stops the operation (or its wait for a slot); it rejects with the signal's reason. */
  signal?: AbortSignal
}

export interface QueryOptions extends OnBehalf {
  timeoutMs?: number
  maxRows?: number
  /** JSON bytes of the rows answered (the row that would cross it is not sent). */
  maxBytes?: number
}

/** Why a result was cut short: too many rows, or too many bytes. */
export type TruncatedBy = 'rows' | 'bytes'

export interface QueryResult {
  columns: ResultColumn[]
  rows: Record<string, JsonValue>[]
  /** `rows` as JSON text in UTF-8, as the worker wrote it (an HTTP answer splices it in; `rows` parses it on first use). */
  rowsJson: Uint8Array
  /** Rows returned (at most maxRows, and at most maxBytes of them). */
  rowCount: number
  /** True when the query produced more than was returned and the rest were not read. */
  truncated: boolean
  /** What cut it short, when truncated. */
  truncatedBy: TruncatedBy | null
  elapsedMs: number
}

export interface QueryExportOptions extends OnBehalf {
  timeoutMs?: number
  /** Bytes the export file may reach; past them the export is stopped (413). */
  maxBytes?: number
}

/** Parquet files one statement reads, by the view name its SQL uses (an SQL identifier; not `result`). */
export type SqlInputs = Readonly<Record<string, string>>

export interface ExportResult {
  path: string
  bytes: number
  contentType: string
}

export interface ProfileOptions extends OnBehalf {
  /** Where the Parquet copy goes; default: next to the source, `<src>.parquet`. */
  parquetPath?: string
  topValues?: number
}

/**
 * What DataKits need from a dataset engine. DuckDB implements it here; the interface keeps
 * the actor and routes independent of it.
 */
export interface DatasetEngine {
  /** Write `src` as Parquet at `parquetPath`, then profile it. See DuckDBDatasetEngine.profile. */
  profile(src: string, format: DatasetFormat, opts: ProfileOptions): Promise<DatasetProfile>
  toParquet(src: string, dest: string, format: DatasetFormat, opts: OnBehalf): Promise<void>
  preview(parquetPath: string, limit: number, offset: number, opts: OnBehalf): Promise<DatasetPreview>
  query(parquetPath: string, sql: string, opts: QueryOptions): Promise<QueryResult>
  /**
   * The whole result of one sandboxed query written to `dest` (see DuckDBDatasetEngine.exportQuery).
   * `source`: one Parquet file, read as the view `data`, or several by view name (sandbox-inputs.ts).
   */
  exportQuery(source: string | SqlInputs, sql: string, format: ExportFormat, dest: string, opts: QueryExportOptions): Promise<ExportResult>
  exportTo(parquetPath: string, format: ExportFormat, dest: string, opts: ExportOptions): Promise<ExportResult>
  /** The columns of a Parquet file with their types (read from its footer). */
  describe(parquetPath: string, opts: OnBehalf): Promise<ResultColumn[]>
  /**
   * Named columns of a Parquet file as arrays of plain values, for work that needs the data
   * in memory (training): each column cast as asked. Runs in a background slot; rejects with
   * `opts.tooMany(rows)` when the file has more than `maxRows` rows, before reading any.
   */
  readColumns(parquetPath: string, columns: readonly { name: string; as: ColumnCast }[], opts: ReadColumnsOptions): Promise<Record<string, unknown[]>>
  /** Stop the engine's worker processes (operations in flight fail). */
  close(): Promise<void>
}

/**
 * How readColumns hands a column over: numbers as doubles, text as strings, booleans as
 * they are, dates and times as seconds since the epoch (doubles).
 */
export type ColumnCast = 'number' | 'string' | 'boolean' | 'time'

export interface ReadColumnsOptions extends OnBehalf {
  maxRows: number
  /** The error for a file with more rows than maxRows. */
  tooMany(rows: number): Error
}

export interface ExportOptions extends OnBehalf {
  /**
   * CSV only: prefix cells that a spreadsheet would evaluate as a formula (default true, for
   * files people open). Off for files programs read (a training job's input): the data as it is.
   */
  neutraliseFormulas?: boolean
  /**
   * Which of the engine's slots writes it: `interactive` (default; someone waits for the file,
   * it shares the slots of queries) or `background` (a job's input, beside profiling and
   * training data, so a burst of jobs never holds the slots users' queries need).
   */
  slot?: 'interactive' | 'background'
}
