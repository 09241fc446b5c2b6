/**
 * The dataset engine behind DataKits: profiling, Parquet conversion, preview, sandboxed SQL
 * and export, on DuckDB through @duckdb/node-api.
 *
 * Where the work runs: everything that reads what a user uploaded or runs what a user wrote
 * (profiling, conversion, preview, query, exports) runs in worker processes (worker-pool.ts,
 * duckdb-ops.ts), each held to a memory budget and a time limit by the operating system —
 * DuckDB's memory_limit alone does not hold. Two pools: `background` (profiling, conversion;
 * DATAKIT_PROFILE_*) and `interactive` (preview, query, exports; DATAKIT_QUERY_*), so a long
 * upload being profiled never makes a user's preview wait; in both, slots are shared fairly
 * between users. The two reads training does over our own Parquet copies (describe: the
 * footer; readColumns: at most TRAINING_MAX_ROWS rows, for a trainer that runs in this
 * process anyway) run here, in a slot of the same pools.
 *
 * Each operation gets a fresh in-memory DuckDBInstance (about 12 ms), which buys isolation a
 * shared instance cannot give: the sandbox for user SQL is a fresh database whose external
 * access is switched off and whose configuration is locked, with nothing in it but the view
 * `data`; nothing a query does outlives it.
 *
 * Paths handed to this module are server-generated (UUID names under UPLOAD_DIR); they are
 * still quoted as SQL literals, never spliced raw.
 */
import { statSync } from 'node:fs'
import { availableParallelism } from 'node:os'
import { copyFile, readdir, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import type { DuckDBConnection } from '@duckdb/node-api'
import { AppError } from '../../core/errors.ts'
import { withDuckDB } from './duckdb-instance.ts'
import { countRows, ident, lit } from './duckdb-read.ts'
import {
  DEFAULT_ENGINE_OPTIONS,
  DEFAULT_TOP_VALUES,
  EXPORT_MEDIA_TYPES,
  MAX_PREVIEW_ROWS,
  type ColumnCast,
  type DatasetEngine,
  type DatasetEngineOptions,
  type DatasetPreview,
  type ExportFormat,
  type ExportOptions,
  type ExportResult,
  type OnBehalf,
  type ProfileOptions,
  type QueryExportOptions,
  type QueryOptions,
  type QueryResult,
  type ReadColumnsOptions,
  type ResultColumn,
  type SqlInputs,
} from './engine.ts'
import { ExportTooLargeError, ProfileMemoryError, ProfileTimeoutError, QueryMemoryError, QueryTimeoutError } from './errors.ts'
import type { DatasetFormat } from './format.ts'
import type { DatasetProfile } from './profile.ts'
import { checkInputs } from './sandbox-inputs.ts'
import { WorkerPool, type RunLimits } from './worker-pool.ts'

export class DuckDBDatasetEngine implements DatasetEngine {
  readonly options: Readonly<DatasetEngineOptions>
  readonly #background: WorkerPool
  readonly #interactive: WorkerPool

  constructor(options: Partial<DatasetEngineOptions> = {}) {
    this.options = Object.freeze({ ...DEFAULT_ENGINE_OPTIONS, ...options, limits: Object.freeze({ ...DEFAULT_ENGINE_OPTIONS.limits, ...options.limits }) })
    const o = this.options
    if (!Number.isInteger(o.threads) || o.threads < 1) throw new Error('threads must be an integer >= 1')
    const common = { threads: o.threads, duckdbMemoryLimit: o.memoryLimit, tempDirectory: o.tempDirectory }
    // The interactive slots together use at most the machine's cores: on the 2-core target,
    // one user's query with two DuckDB threads left another's `select 1` a third of a core and
    // its p99 several times its quiet one (bench/support/abuse-datakits.ts, item 3).
    const interactiveThreads = Math.max(1, Math.min(o.threads, Math.floor(availableParallelism() / o.interactiveConcurrency)))
    this.#background = new WorkerPool({
      ...common,
      size: o.backgroundConcurrency,
      perUser: o.backgroundPerUser,
      memoryMb: o.profileMemoryMb,
      // Profiling a 1,000-column CSV (DATAKIT_MAX_COLUMNS) maps ~1.0 GB more while its resident
      // set peaks at ~250 MB (measured: VmData within 24–50 MB of a 1 GiB allowance, and over it
      // in 2 runs of 8, refused as out of memory). The resident budget stays what it is.
      addressSpaceMb: 2 * o.profileMemoryMb,
      deadlineFromArrival: false,
      spareInstance: false,
      sandbox: false,
    })
    this.#interactive = new WorkerPool({
      ...common,
      threads: interactiveThreads,
      deadlineFromArrival: true,
      spareInstance: true,
      sandbox: true,
      size: o.interactiveConcurrency,
      perUser: o.interactivePerUser,
      queuePerUser: o.interactiveQueuePerUser,
      memoryMb: o.queryMemoryMb,
      // One answer of the largest size goes at once; past it, the rate.
      answerPace: { bytesPerSecond: o.queryBytesPerSecond, burstBytes: o.queryMaxBytes },
    })
    void removeStaleScratch(o.tempDirectory, Math.max(o.profileTimeoutMs, o.queryTimeoutMs) + 60_000)
  }

  /** Pids of the worker processes alive now (their memory is the engine's; for measurements). */
  workerPids(): number[] {
    return [...this.#background.pids(), ...this.#interactive.pids()]
  }

  async close(): Promise<void> {
    await Promise.all([this.#background.close(), this.#interactive.close()])
  }

  #profileLimits(signal: AbortSignal | undefined): RunLimits {
    const o = this.options
    return { timeoutMs: o.profileTimeoutMs, timeoutError: () => new ProfileTimeoutError(o.profileTimeoutMs), memoryError: (cause) => new ProfileMemoryError(o.profileMemoryMb, cause), signal }
  }

  #queryLimits(timeoutMs: number, signal: AbortSignal | undefined, opts: { watch?: () => AppError | undefined; exporting?: boolean } = {}): RunLimits {
    const memoryMb = this.options.queryMemoryMb
    return {
      timeoutMs,
      timeoutError: (queued) => new QueryTimeoutError(timeoutMs, queued, opts.exporting),
      memoryError: (cause) => new QueryMemoryError(memoryMb, cause),
      watch: opts.watch,
      signal,
    }
  }

  /**
   * Convert `src` (any DatasetFormat) to Parquet at `dest`, atomically (a reader of `dest`
   * never sees half a file), within the dataset limits. Malformed input rejects with a
   * DatasetParseError (422) whose message names the line where the file broke when DuckDB
   * reports one; a dataset past a limit with a DatasetLimitError (413/422) naming it.
   */
  async toParquet(src: string, dest: string, format: DatasetFormat, opts: OnBehalf): Promise<void> {
    try {
      await this.#background.run(opts.user, { kind: 'toParquet', src, format, dest, limits: this.options.limits }, this.#profileLimits(opts.signal))
    } catch (err) {
      await removeTemporaries(dest)
      throw err
    }
  }

  /**
   * Profile a dataset: write it as Parquet (`opts.parquetPath`, default `<src>.parquet`),
   * then compute the statistics DuckDB's SUMMARIZE reports, and the top values, over that
   * Parquet. The source is parsed once; everything after reads the columnar copy
   * (bench/datakits-engine.ts measures the whole next to a bare SUMMARIZE of the source).
   *
   * Bounded by the dataset limits (decompressed bytes, rows, columns: DatasetLimitError, checked
   * before more of the file is read), DATAKIT_PROFILE_TIMEOUT_MS (ProfileTimeoutError) and
   * DATAKIT_PROFILE_MEMORY_MB (ProfileMemoryError). Rejects with DatasetParseError (422, `line`
   * set when DuckDB reported one) for a file that cannot be read, with a message meant for the
   * uploader. A profile that failed leaves no Parquet copy behind.
   */
  async profile(src: string, format: DatasetFormat, opts: ProfileOptions): Promise<DatasetProfile> {
    const parquetPath = opts.parquetPath ?? `${src}.parquet`
    const op = { kind: 'profile' as const, src, format, parquetPath, topValues: opts.topValues ?? DEFAULT_TOP_VALUES, limits: this.options.limits }
    try {
      return await this.#background.run(opts.user, op, this.#profileLimits(opts.signal))
    } catch (err) {
      await Promise.all([rm(parquetPath, { force: true }), removeTemporaries(parquetPath)])
      throw err
    }
  }

  /**
   * Rows `offset … offset+limit` of the Parquet copy (limit clamped to 1…1000), in file order,
   * as JSON-safe values, with the total row count from the Parquet footer; no more rows than
   * fit DATAKIT_QUERY_MAX_BYTES (`truncated` then says so).
   */
  async preview(parquetPath: string, limit: number, offset: number, opts: OnBehalf): Promise<DatasetPreview> {
    const lim = Math.max(1, Math.min(MAX_PREVIEW_ROWS, Math.floor(limit) || 1))
    const off = Math.max(0, Math.floor(offset) || 0)
    const o = this.options
    const { bytes: _, ...preview } = await this.#interactive.run(opts.user, { kind: 'preview', parquetPath, limit: lim, offset: off, maxBytes: o.queryMaxBytes }, this.#queryLimits(o.queryTimeoutMs, opts.signal))
    return preview
  }

  /**
   * Run one read-only statement over the dataset, exposed as the view `data`, in a worker
   * process (see duckdb-sandbox.ts for the sandbox: external access off, configuration locked,
   * exactly one SELECT). Reading stops after `maxRows` rows or `maxBytes` bytes of JSON
   * (`truncated`, `truncatedBy`). Past `timeoutMs` the worker is killed and a
   * QueryTimeoutError (422) thrown; past DATAKIT_QUERY_MEMORY_MB, a QueryMemoryError (422).
   * Every other refusal or failure is an UnprocessableError (422) carrying DuckDB's message.
   */
  async query(parquetPath: string, sql: string, opts: QueryOptions): Promise<QueryResult> {
    const o = this.options
    const timeoutMs = opts.timeoutMs ?? o.queryTimeoutMs
    const maxRows = opts.maxRows ?? o.queryMaxRows
    const maxBytes = opts.maxBytes ?? o.queryMaxBytes
    if (!(timeoutMs > 0) || !Number.isInteger(maxRows) || maxRows < 1 || !(maxBytes > 0)) throw new Error('timeoutMs and maxBytes must be > 0 and maxRows an integer >= 1')
    const { bytes: _, ...r } = await this.#interactive.run(opts.user, { kind: 'query', parquetPath, sql, maxRows, maxBytes }, this.#queryLimits(timeoutMs, opts.signal))
    let rows: QueryResult['rows'] | undefined
    return {
      ...r,
      get rows() {
        return (rows ??= JSON.parse(new TextDecoder().decode(r.rowsJson)) as QueryResult['rows'])
      },
    }
  }

  /**
   * The whole result of one sandboxed statement (the same sandbox and checks as query) written
   * to `dest` by DuckDB as CSV (formula cells neutralised, as exportTo does), Parquet or a JSON
   * array; the caller streams the file and removes it (consumeFile). Bounded by the query time
   * limit and by `maxBytes` of file (default DATAKIT_EXPORT_MAX_BYTES): the worker is killed
   * once the file outgrows it (ExportTooLargeError, 413) and the partial file removed.
   * `source` is the Parquet file read as the view `data`, or several read as views by name
   * (a 422 for a name that is not an SQL identifier, see sandbox-inputs.ts).
   */
  async exportQuery(source: string | SqlInputs, sql: string, format: ExportFormat, dest: string, opts: QueryExportOptions): Promise<ExportResult> {
    const inputs = typeof source === 'string' ? { data: source } : checkInputs(source)
    const timeoutMs = opts.timeoutMs ?? this.options.queryTimeoutMs
    const maxBytes = opts.maxBytes ?? this.options.exportMaxBytes
    const tooLarge = () => (fileSize(dest) > maxBytes ? new ExportTooLargeError(maxBytes) : undefined)
    try {
      const { bytes } = await this.#interactive.run(opts.user, { kind: 'exportQuery', inputs, sql, format, dest }, this.#queryLimits(timeoutMs, opts.signal, { watch: tooLarge }))
      // Finished between two checks.
      if (bytes > maxBytes) throw new ExportTooLargeError(maxBytes)
      return { path: dest, bytes, contentType: EXPORT_MEDIA_TYPES[format] }
    } catch (err) {
      await rm(dest, { force: true })
      throw err
    }
  }

  /**
   * Write the dataset to `dest` as CSV (with header), a JSON array of objects, or Parquet,
   * atomically; the caller streams the file and removes it — `consumeFile(dest)` does both
   * (`new Response(await consumeFile(res.path), { headers: { 'content-length': … } })`). In
   * CSV, every cell of a non-numeric column that begins with = + - @ TAB or CR gets a leading
   * single quote, so a spreadsheet shows it as text instead of evaluating it (OWASP "CSV
   * Injection"); header names are treated the same. Numeric columns are left alone: a number
   * like -5 is data, not a formula. CSV and JSON are written by a worker (interactive slot,
   * DATAKIT_QUERY_MEMORY_MB, DATAKIT_PROFILE_TIMEOUT_MS: it is as big as the dataset; or, with
   * `slot: 'background'`, a profiling slot with its memory and time limits).
   */
  async exportTo(parquetPath: string, format: ExportFormat, dest: string, opts: ExportOptions): Promise<ExportResult> {
    const neutraliseFormulas = opts.neutraliseFormulas ?? true
    try {
      if (format === 'parquet') {
        const tmp = `${dest}.tmp-${crypto.randomUUID()}`
        await copyFile(parquetPath, tmp)
        await rename(tmp, dest)
      } else {
        const o = this.options
        const op = { kind: 'export', parquetPath, format, dest, neutraliseFormulas } as const
        if (opts.slot === 'background') await this.#background.run(opts.user, op, this.#profileLimits(opts.signal))
        else await this.#interactive.run(opts.user, op, this.#queryLimits(o.profileTimeoutMs, opts.signal, { exporting: true }))
      }
    } catch (err) {
      await removeTemporaries(dest)
      if (err instanceof AppError || opts.signal?.aborted) throw err
      throw new AppError('dataset_export_failed', `Export failed: ${err instanceof Error ? err.message : String(err)}`, { status: 500, cause: err })
    }
    return { path: dest, bytes: (await stat(dest)).size, contentType: EXPORT_MEDIA_TYPES[format] }
  }

  /** The columns of a Parquet file with DuckDB's type names (from the footer: no data is read). */
  async describe(parquetPath: string, opts: OnBehalf): Promise<ResultColumn[]> {
    return this.#interactive.hold(
      opts.user,
      () =>
        this.#inProcess(false, async (c) => {
          const rows = (await c.runAndReadAll(`DESCRIBE SELECT * FROM read_parquet(${lit(parquetPath)})`)).getRowObjectsJson()
          return rows.map((r) => ({ name: String(r.column_name), type: String(r.column_type) }))
        }),
      opts.signal,
    )
  }

  /**
   * The named columns as arrays, cast as asked (see ColumnCast), in a background slot with
   * the engine's threads and memory limit. The row count comes from the footer first: a file
   * over `maxRows` is refused before anything is read.
   */
  async readColumns(parquetPath: string, columns: readonly { name: string; as: ColumnCast }[], opts: ReadColumnsOptions): Promise<Record<string, unknown[]>> {
    return this.#background.hold(
      opts.user,
      () =>
        this.#inProcess(true, async (c) => {
          const source = `read_parquet(${lit(parquetPath)})`
          const count = await countRows(c, source)
          if (count > opts.maxRows) throw opts.tooMany(count)
          const select = columns.map((col, i) => `${castExpression(ident(col.name), col.as)} AS c${i}`)
          const arrays = (await c.runAndReadAll(`SELECT ${select.join(', ') || '1'} FROM ${source}`)).getColumnsJS()
          const out: Record<string, unknown[]> = {}
          columns.forEach((col, i) => (out[col.name] = arrays[i] as unknown[]))
          return out
        }),
      opts.signal,
    )
  }

  /** A DuckDB in this process (trusted SQL over our own Parquet copies), with a private spill directory when `spill`. */
  async #inProcess<T>(spill: boolean, fn: (c: DuckDBConnection) => Promise<T>): Promise<T> {
    const spillDir = spill ? join(this.options.tempDirectory, `op-${crypto.randomUUID()}`) : undefined
    try {
      return await withDuckDB({ threads: this.options.threads, memoryLimit: this.options.memoryLimit, spillDir }, fn)
    } finally {
      if (spillDir) await rm(spillDir, { recursive: true, force: true })
    }
  }
}

function fileSize(path: string): number {
  try {
    return statSync(path).size
  } catch {
    return 0
  }
}

/**
 * Remove the operations' scratch directories (`op-*`) that a server which died mid-operation left
 * in `dir`; only those older than any operation may run (`maxAgeMs`), so that a second server
 * started on the same data directory by mistake takes nothing from a live one.
 */
async function removeStaleScratch(dir: string, maxAgeMs: number): Promise<void> {
  const names = await readdir(dir).catch(() => [] as string[])
  const now = Date.now()
  for (const name of names.filter((n) => n.startsWith('op-'))) {
    const path = join(dir, name)
    const age = await stat(path).then((s) => now - s.mtimeMs, () => 0)
    if (age > maxAgeMs) await rm(path, { recursive: true, force: true }).catch(() => {})
  }
}

/** Remove `<path>.tmp-*`: what a conversion or export killed midway left next to its destination. */
async function removeTemporaries(path: string): Promise<void> {
  const prefix = `${basename(path)}.tmp-`
  const names = await readdir(dirname(path)).catch(() => [] as string[])
  await Promise.all(names.filter((n) => n.startsWith(prefix)).map((n) => rm(join(dirname(path), n), { force: true })))
}

function castExpression(column: string, as: ColumnCast): string {
  switch (as) {
    case 'number':
      return `CAST(${column} AS DOUBLE)`
    case 'string':
      return `CAST(${column} AS VARCHAR)`
    case 'boolean':
      return column
    case 'time':
      return `CAST(epoch(${column}) AS DOUBLE)`
    default: {
      const never: never = as
      throw new Error(`unknown cast ${String(never)}`)
    }
  }
}
