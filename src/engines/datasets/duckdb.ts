/**
 * The dataset engine behind DataKits: profiling, Parquet conversion, preview, sandboxed SQL
 * and export, on DuckDB through @duckdb/node-api.
 *
 * Instances: one in-memory DuckDBInstance per operation, closed when it ends. Creating one
 * costs about 12 ms here, which is nothing next to reading a dataset, and buys isolation
 * that a shared instance cannot give: the sandbox for user SQL is a fresh database whose
 * external access is switched off and whose configuration is locked, with nothing in it but
 * the view `data`; nothing a query does (temp objects, settings, memory) outlives it, and an
 * error or interrupt in one operation leaves the others untouched. Concurrency is bounded by two
 * small slot pools instead of a pool of live instances: `background` (profiling, conversion)
 * and `interactive` (preview, query, export), so a long upload being profiled never makes a
 * user's preview wait. All DuckDB calls are asynchronous (they run on DuckDB's own threads),
 * so the event loop stays free; only result conversion — bounded by preview and query row
 * caps — runs on it.
 *
 * Paths handed to this module are server-generated (UUID names under UPLOAD_DIR); they are
 * still quoted as SQL literals, never spliced raw.
 */
import { copyFile, mkdir, mkdtemp, rename, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { DuckDBInstance, StatementType, type DuckDBConnection } from '@duckdb/node-api'
import { AppError, UnprocessableError } from '../../core/errors.ts'
import { Semaphore } from '../../core/semaphore.ts'
import { splitFormat, type DatasetFormat } from './format.ts'
import { columnKind, type DatasetProfile } from './profile.ts'
import { queryFailure, QueryTimeoutError, readFailure } from './errors.ts'
import { jsonSafeConverter, type JsonValue } from './values.ts'
import { countRows, ident, lit, writeParquet } from './duckdb-read.ts'
import { summarize } from './duckdb-profile.ts'

import {
  DEFAULT_ENGINE_OPTIONS,
  DEFAULT_QUERY_MAX_ROWS,
  DEFAULT_QUERY_TIMEOUT_MS,
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
  type ProfileOptions,
  type QueryOptions,
  type QueryResult,
  type ReadColumnsOptions,
  type ResultColumn,
} from './engine.ts'

interface SessionSettings {
  /**
   * Give DuckDB a private spill directory. Without one (temp_directory='') an operation that
   * outgrows memory_limit fails instead of writing to disk: the SQL sandbox writes nothing.
   */
  spill: boolean
  signal?: AbortSignal
}

export class DuckDBDatasetEngine implements DatasetEngine {
  readonly options: Readonly<DatasetEngineOptions>
  readonly #background: Semaphore
  readonly #interactive: Semaphore

  constructor(options: Partial<DatasetEngineOptions> = {}) {
    this.options = Object.freeze({ ...DEFAULT_ENGINE_OPTIONS, ...options })
    if (!Number.isInteger(this.options.threads) || this.options.threads < 1) throw new Error('threads must be an integer >= 1')
    this.#background = new Semaphore(this.options.backgroundConcurrency)
    this.#interactive = new Semaphore(this.options.interactiveConcurrency)
  }

  /**
   * Run `fn` on a connection to a fresh in-memory DuckDB, closed afterwards. Extension
   * auto-install/auto-load are off everywhere: the engine only needs what is built in
   * (CSV, JSON, Parquet), and nothing should ever be fetched from the network.
   */
  async #session<T>(slots: Semaphore, settings: SessionSettings, fn: (c: DuckDBConnection) => Promise<T>): Promise<T> {
    return slots.run(async () => {
      settings.signal?.throwIfAborted()
      let spillDir: string | undefined
      if (settings.spill) {
        await mkdir(this.options.tempDirectory, { recursive: true })
        spillDir = await mkdtemp(join(this.options.tempDirectory, 'op-'))
      }
      let instance: DuckDBInstance | undefined
      let conn: DuckDBConnection | undefined
      const onAbort = () => conn?.interrupt()
      try {
        instance = await DuckDBInstance.create(':memory:', {
          threads: String(this.options.threads),
          memory_limit: this.options.memoryLimit,
          temp_directory: spillDir ?? '',
          autoinstall_known_extensions: 'false',
          autoload_known_extensions: 'false',
          allow_community_extensions: 'false',
        })
        conn = await instance.connect()
        settings.signal?.addEventListener('abort', onAbort, { once: true })
        try {
          return await fn(conn)
        } catch (err) {
          if (settings.signal?.aborted) throw settings.signal.reason
          throw err
        }
      } finally {
        settings.signal?.removeEventListener('abort', onAbort)
        conn?.closeSync()
        instance?.closeSync()
        if (spillDir) await rm(spillDir, { recursive: true, force: true })
      }
    }, settings.signal)
  }

  /**
   * Convert `src` (any DatasetFormat) to Parquet at `dest`, atomically (a reader of `dest`
   * never sees half a file). Malformed input rejects with a DatasetParseError (422) whose
   * message names the line where the file broke when DuckDB reports one.
   */
  async toParquet(src: string, dest: string, format: DatasetFormat, opts: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#session(this.#background, { spill: true, signal: opts.signal }, (c) => writeParquet(c, src, dest, format))
  }

  /**
   * Profile a dataset: write it as Parquet (`opts.parquetPath`, default `<src>.parquet`),
   * then compute the statistics DuckDB's SUMMARIZE reports, and the top values, over that
   * Parquet. The source is parsed once; everything after reads the columnar copy
   * (bench/datakits-engine.ts measures the whole next to a bare SUMMARIZE of the source).
   *
   * Rejects with DatasetParseError (422, `line` set when DuckDB reported one) for a file
   * that cannot be read, with a message meant for the uploader.
   */
  async profile(src: string, format: DatasetFormat, opts: ProfileOptions = {}): Promise<DatasetProfile> {
    const parquetPath = opts.parquetPath ?? `${src}.parquet`
    const topN = opts.topValues ?? DEFAULT_TOP_VALUES
    return this.#session(this.#background, { spill: true, signal: opts.signal }, async (c) => {
      await writeParquet(c, src, parquetPath, format)
      try {
        return await summarize(c, parquetPath, topN)
      } catch (err) {
        // An uploaded Parquet file is copied as is, so this is where a corrupt one shows; a
        // profile that failed leaves no copy behind.
        await rm(parquetPath, { force: true })
        throw readFailure(err, 'Parquet', parquetPath, { ioIsFileFault: splitFormat(format).base === 'parquet' })
      }
    })
  }

  /**
   * Rows `offset … offset+limit` of the Parquet copy (limit clamped to 1…1000), in file
   * order, as JSON-safe values, with the total row count from the Parquet footer.
   */
  async preview(parquetPath: string, limit: number, offset: number): Promise<DatasetPreview> {
    const lim = Math.max(1, Math.min(MAX_PREVIEW_ROWS, Math.floor(limit) || 1))
    const off = Math.max(0, Math.floor(offset) || 0)
    return this.#session(this.#interactive, { spill: false }, async (c) => {
      const source = `read_parquet(${lit(parquetPath)})`
      const reader = await c.runAndReadAll(`SELECT * FROM ${source} LIMIT ${lim} OFFSET ${off}`)
      const names = reader.deduplicatedColumnNames()
      const types = reader.columnTypes().map(String)
      return {
        columns: names.map((name, i) => ({ name, type: types[i]! })),
        rows: reader.convertRowObjects(jsonSafeConverter) as Record<string, JsonValue>[],
        offset: off,
        limit: lim,
        totalRows: await countRows(c, source),
      }
    })
  }

  /**
   * Run one read-only statement over the dataset, exposed as the view `data`.
   *
   * The sandbox is a fresh database in which the view is created first, then
   * `allowed_paths` is narrowed to this one Parquet file, `enable_external_access` switched
   * off (no other file, no URL, no ATTACH, no extension install/load) and the configuration
   * locked so the query cannot switch anything back. The statement is parsed by DuckDB
   * (extractStatements): exactly one, and its prepared statement type must be SELECT (which
   * covers WITH, VALUES, FROM-first, SUMMARIZE, DESCRIBE). Results are streamed and reading
   * stops after `maxRows` (default 10,000; `truncated` says so). After `timeoutMs` (default
   * 10 s) the connection is interrupted and a QueryTimeoutError (422) is thrown; every other
   * refusal or failure is an UnprocessableError (422) carrying DuckDB's message.
   */
  async query(parquetPath: string, sql: string, opts: QueryOptions = {}): Promise<QueryResult> {
    const timeoutMs = opts.timeoutMs ?? DEFAULT_QUERY_TIMEOUT_MS
    const maxRows = opts.maxRows ?? DEFAULT_QUERY_MAX_ROWS
    if (!(timeoutMs > 0) || !Number.isInteger(maxRows) || maxRows < 1) throw new Error('timeoutMs must be > 0 and maxRows an integer >= 1')
    return this.#session(this.#interactive, { spill: false }, async (c) => {
      await c.run(`CREATE VIEW data AS SELECT * FROM read_parquet(${lit(parquetPath)})`)
      await c.run(`SET allowed_paths = [${lit(parquetPath)}]`)
      await c.run(`SET enable_external_access = false`)
      await c.run(`SET lock_configuration = true`)

      const started = performance.now()
      let timedOut = false
      const timer = setTimeout(() => {
        timedOut = true
        c.interrupt()
      }, timeoutMs)
      try {
        const statements = await c.extractStatements(sql).catch((err: unknown) => {
          // @duckdb/node-api 1.5 rejects text with no statement at all (blank, only `;` or
          // comments) with this generic message instead of returning a count of 0; syntax
          // errors come back with DuckDB's own "Parser Error: …".
          if (err instanceof Error && err.message === 'Error in native callback') throw new UnprocessableError('The query is empty')
          throw err
        })
        if (statements.count !== 1) {
          throw new UnprocessableError(
            statements.count === 0 ? 'The query is empty' : `Exactly one statement is allowed; this query has ${statements.count}`,
          )
        }
        const prepared = await statements.prepare(0)
        if (prepared.statementType !== StatementType.SELECT) {
          throw new UnprocessableError(
            `Only read-only queries (SELECT, WITH …) are allowed; this is a ${StatementType[prepared.statementType] ?? 'different'} statement`,
          )
        }
        const result = await prepared.stream()
        const names = result.deduplicatedColumnNames()
        const types = result.columnTypes().map(String)
        const rows: Record<string, JsonValue>[] = []
        let truncated = false
        for (;;) {
          const chunk = await result.fetchChunk()
          if (!chunk || chunk.rowCount === 0) break
          for (const values of chunk.convertRows(jsonSafeConverter)) {
            if (rows.length === maxRows) {
              truncated = true
              break
            }
            const row: Record<string, JsonValue> = {}
            names.forEach((n, i) => (row[n] = redact(values[i] ?? null, parquetPath)))
            rows.push(row)
          }
          if (truncated) break
        }
        return {
          columns: names.map((name, i) => ({ name, type: types[i]! })),
          rows,
          rowCount: rows.length,
          truncated,
          elapsedMs: Math.round(performance.now() - started),
        }
      } catch (err) {
        if (timedOut) throw new QueryTimeoutError(timeoutMs)
        if (err instanceof AppError) throw err
        throw queryFailure(err, parquetPath)
      } finally {
        clearTimeout(timer)
      }
    })
  }

  /**
   * Write the dataset to `dest` as CSV (with header), a JSON array of objects, or Parquet,
   * atomically; the caller streams the file and removes it — `consumeFile(dest)` does both
   * (`new Response(await consumeFile(res.path), { headers: { 'content-length': … } })`). In CSV, every cell of a non-numeric column that begins with = + - @ TAB or CR gets a
   * leading single quote, so a spreadsheet shows it as text instead of evaluating it (OWASP
   * "CSV Injection"); header names are treated the same. Numeric columns are left alone: a
   * number like -5 is data, not a formula.
   */
  async exportTo(parquetPath: string, format: ExportFormat, dest: string, opts: ExportOptions = {}): Promise<ExportResult> {
    const neutraliseFormulas = opts.neutraliseFormulas ?? true
    const tmp = `${dest}.tmp-${crypto.randomUUID()}`
    try {
      if (format === 'parquet') {
        await copyFile(parquetPath, tmp)
      } else {
        await this.#session(this.#interactive, { spill: true, signal: opts.signal }, async (c) => {
          const source = `read_parquet(${lit(parquetPath)})`
          if (format === 'csv' && !neutraliseFormulas) {
            await c.run(`COPY (SELECT * FROM ${source}) TO ${lit(tmp)} (FORMAT csv, HEADER true)`)
            return
          }
          if (format === 'json') {
            await c.run(`COPY (SELECT * FROM ${source}) TO ${lit(tmp)} (FORMAT json, ARRAY true)`)
            return
          }
          const described = (await c.runAndReadAll(`DESCRIBE SELECT * FROM ${source}`)).getRowObjectsJson()
          const projection = described.map((d) => {
            const name = String(d.column_name)
            const kind = columnKind(String(d.column_type))
            const expr = kind === 'number' || kind === 'boolean' ? ident(name) : neutralise(`CAST(${ident(name)} AS VARCHAR)`)
            return `${expr} AS ${ident(neutraliseText(name))}`
          })
          const select = projection.length > 0 ? projection.join(', ') : '*'
          await c.run(`COPY (SELECT ${select} FROM ${source}) TO ${lit(tmp)} (FORMAT csv, HEADER true)`)
        })
      }
      await rename(tmp, dest)
    } catch (err) {
      await rm(tmp, { force: true })
      if (err instanceof AppError) throw err
      throw new AppError('dataset_export_failed', `Export failed: ${err instanceof Error ? err.message : String(err)}`, { status: 500, cause: err })
    }
    return { path: dest, bytes: (await stat(dest)).size, contentType: EXPORT_MEDIA_TYPES[format] }
  }

  /** The columns of a Parquet file with DuckDB's type names (from the footer: no data is read). */
  async describe(parquetPath: string): Promise<ResultColumn[]> {
    return this.#session(this.#interactive, { spill: false }, async (c) => {
      const rows = (await c.runAndReadAll(`DESCRIBE SELECT * FROM read_parquet(${lit(parquetPath)})`)).getRowObjectsJson()
      return rows.map((r) => ({ name: String(r.column_name), type: String(r.column_type) }))
    })
  }

  /**
   * The named columns as arrays, cast as asked (see ColumnCast), in a background slot with
   * the engine's threads and memory limit. The row count comes from the footer first: a file
   * over `maxRows` is refused before anything is read.
   */
  async readColumns(parquetPath: string, columns: readonly { name: string; as: ColumnCast }[], opts: ReadColumnsOptions): Promise<Record<string, unknown[]>> {
    return this.#session(this.#background, { spill: true, signal: opts.signal }, async (c) => {
      const source = `read_parquet(${lit(parquetPath)})`
      const count = await countRows(c, source)
      if (count > opts.maxRows) throw opts.tooMany(count)
      const select = columns.map((col, i) => `${castExpression(ident(col.name), col.as)} AS c${i}`)
      const arrays = (await c.runAndReadAll(`SELECT ${select.join(', ') || '1'} FROM ${source}`)).getColumnsJS()
      const out: Record<string, unknown[]> = {}
      columns.forEach((col, i) => (out[col.name] = arrays[i] as unknown[]))
      return out
    })
  }
}

/** Characters that make a spreadsheet treat a cell as a formula (OWASP CSV injection). */
const FORMULA_START = ['=', '+', '-', '@', '\t', '\r']

function neutralise(expr: string): string {
  const starts = `left(${expr}, 1) IN ('=', '+', '-', '@', chr(9), chr(13))`
  return `CASE WHEN ${starts} THEN '''' || ${expr} ELSE ${expr} END`
}

function neutraliseText(s: string): string {
  return FORMULA_START.some((c) => s.startsWith(c)) ? `'${s}` : s
}


/**
 * `v` with the dataset's server path replaced by `data` in every string. The sandbox cannot
 * hide the path from catalog functions (duckdb_views() shows the view's definition,
 * duckdb_settings() shows allowed_paths), so results are scrubbed instead, like errors.
 */
function redact(v: JsonValue, path: string): JsonValue {
  if (typeof v === 'string') return v.includes(path) ? v.split(path).join('data') : v
  if (Array.isArray(v)) return v.map((x) => redact(x, path))
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, redact(x, path)]))
  return v
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
