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
import { copyFile, mkdir, mkdtemp, open, rename, rm, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { DuckDBInstance, StatementType, type DuckDBConnection } from '@duckdb/node-api'
import { AppError, UnprocessableError } from '../../core/errors.ts'
import { Semaphore } from '../../core/semaphore.ts'
import { confirmNdjsonLine, detectDelimiter, readTextHead, splitDelimitedLine, splitFormat, type DatasetFormat } from './format.ts'
import { columnKind, type ColumnKind, type ColumnProfile, type DatasetProfile, type TopValue } from './profile.ts'
import { DatasetParseError, isCsvSniffFailure, isTypeGuessFailure, queryFailure, QueryTimeoutError, readFailure } from './errors.ts'
import { isoTimestamp, jsonSafeConverter, type JsonValue } from './values.ts'

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

/** SQL string literal. */
function lit(s: string): string {
  if (s.includes('\0')) throw new AppError('invalid_path', 'path contains a NUL byte')
  return `'${s.replaceAll("'", "''")}'`
}

/** SQL identifier. */
function ident(s: string): string {
  return `"${s.replaceAll('"', '""')}"`
}

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
   * The table function reading `src` in `format`. CSV/TSV get an explicit delimiter (ours,
   * from the head) and RFC 4180 double quotes: left to guess everything, DuckDB's sniffer
   * reads a file with one bad row as a single text column instead of reporting the row.
   */
  async #reader(src: string, format: DatasetFormat, sampleAll: boolean): Promise<string> {
    const { base, gzip } = splitFormat(format)
    // read_csv spells "no compression" 'none', read_json 'uncompressed'.
    const compression = `compression=${gzip ? "'gzip'" : base === 'json' || base === 'ndjson' ? "'uncompressed'" : "'none'"}`
    const sample = sampleAll ? ', sample_size=-1' : ''
    switch (base) {
      case 'parquet':
        return `read_parquet(${lit(src)})`
      case 'json':
        return `read_json(${lit(src)}, format='auto', ${compression}${sample})`
      case 'ndjson':
        return `read_json(${lit(src)}, format='newline_delimited', ${compression}${sample})`
      case 'csv':
      case 'tsv': {
        const delim = base === 'tsv' ? '\t' : await this.#csvDelimiter(src, gzip)
        const delimOpt = delim === undefined ? '' : `, delim=${lit(delim)}`
        return `read_csv(${lit(src)}${delimOpt}, quote='"', ${compression}${sample})`
      }
    }
  }

  async #csvDelimiter(src: string, gzip: boolean): Promise<string | undefined> {
    const head = await readTextHead(src, gzip)
    return head ? detectDelimiter(head.text, head.truncated) : undefined
  }

  /**
   * When DuckDB's sniffer gives up on a CSV it says so without a line number. Reading it
   * again with the dialect fixed (delimiter, RFC 4180 quotes, header, as many text columns
   * as the header has) makes the reader stop at the first row that breaks it, with its line.
   */
  async #locateCsvError(c: DuckDBConnection, src: string, format: DatasetFormat): Promise<unknown> {
    const { base, gzip } = splitFormat(format)
    const head = await readTextHead(src, gzip)
    if (!head) return undefined
    const delim = base === 'tsv' ? '\t' : (detectDelimiter(head.text, head.truncated) ?? ',')
    const header = head.text.split(/\r\n|\n|\r/, 1)[0] ?? ''
    const width = splitDelimitedLine(header, delim).length
    const columns = Array.from({ length: width }, (_, i) => `'c${i}': 'VARCHAR'`).join(', ')
    try {
      await c.run(
        `SELECT count(*) FROM (SELECT * FROM read_csv(${lit(src)}, auto_detect=false, header=true, delim=${lit(delim)}, quote='"', escape='"', ` +
          `compression=${gzip ? "'gzip'" : "'none'"}, columns={${columns}}))`,
      )
      return undefined
    } catch (err) {
      return err
    }
  }

  /** A malformed-NDJSON failure re-pointed at the line that is really broken (see confirmNdjsonLine). */
  async #ndjsonLineFixed(err: AppError, src: string, format: DatasetFormat): Promise<AppError> {
    const { base, gzip } = splitFormat(format)
    // 'json' too: read_json's auto mode reads one-object-per-line files the same way.
    if (!(err instanceof DatasetParseError) || err.line === undefined || (base !== 'ndjson' && base !== 'json') || !err.message.includes('Malformed JSON')) {
      return err
    }
    const line = await confirmNdjsonLine(src, gzip, err.line)
    return line === err.line ? err : new DatasetParseError(err.message.replace(`in line ${err.line}`, `in line ${line}`), line)
  }

  /** COPY the source to a temporary Parquet file next to `dest`, then rename it into place. */
  async #writeParquet(c: DuckDBConnection, src: string, dest: string, format: DatasetFormat): Promise<void> {
    const { base } = splitFormat(format)
    const label = base === 'ndjson' ? 'NDJSON' : base.toUpperCase()
    const tmp = `${dest}.tmp-${crypto.randomUUID()}`
    try {
      if (base === 'parquet') {
        // Already Parquet: a byte copy is the fast read copy. Its validity is checked by the
        // profile that reads it next.
        await copyFile(src, tmp)
      } else {
        // Snappy (DuckDB's default) rather than zstd: on the 1M-row benchmark CSV zstd made the
        // copy half the size (5.7 vs 10.9 MB) but cost ~15 % more CPU to write and ~5 % more to
        // read back, and profiling time is what the 1.5× budget is about.
        const copy = async (sampleAll: boolean) =>
          c.run(`COPY (SELECT * FROM ${await this.#reader(src, format, sampleAll)}) TO ${lit(tmp)} (FORMAT parquet, COMPRESSION snappy)`)
        try {
          await copy(false)
        } catch (err) {
          const message = err instanceof Error ? err.message : String(err)
          if (isTypeGuessFailure(message)) {
            await rm(tmp, { force: true })
            try {
              await copy(true)
            } catch (again) {
              throw readFailure(again, label, src)
            }
          } else if (isCsvSniffFailure(message) && (base === 'csv' || base === 'tsv')) {
            throw readFailure((await this.#locateCsvError(c, src, format)) ?? err, label, src)
          } else {
            throw await this.#ndjsonLineFixed(readFailure(err, label, src), src, format)
          }
        }
      }
      await rename(tmp, dest)
    } catch (err) {
      await rm(tmp, { force: true })
      throw err
    }
  }

  /**
   * Convert `src` (any DatasetFormat) to Parquet at `dest`, atomically (a reader of `dest`
   * never sees half a file). Malformed input rejects with a DatasetParseError (422) whose
   * message names the line where the file broke when DuckDB reports one.
   */
  async toParquet(src: string, dest: string, format: DatasetFormat, opts: { signal?: AbortSignal } = {}): Promise<void> {
    await this.#session(this.#background, { spill: true, signal: opts.signal }, (c) => this.#writeParquet(c, src, dest, format))
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
      await this.#writeParquet(c, src, parquetPath, format)
      try {
        return await this.#summarize(c, parquetPath, topN)
      } catch (err) {
        // An uploaded Parquet file is copied as is, so this is where a corrupt one shows; a
        // profile that failed leaves no copy behind.
        await rm(parquetPath, { force: true })
        throw readFailure(err, 'Parquet', parquetPath, { ioIsFileFault: splitFormat(format).base === 'parquet' })
      }
    })
  }

  /**
   * The statistics SUMMARIZE reports (min, max, approximate distinct count, mean, std,
   * approximate quartiles, null share), computed in one aggregate over the Parquet copy, then
   * one top-values query. SUMMARIZE itself runs a separate t-digest for each quartile of each
   * column; here one digest per column answers all three (approx_quantile with a list), which
   * makes the whole scan about 40 % cheaper. Statistics a type has no meaning for (the mean of
   * a boolean, the quartiles of an interval) are not asked for.
   */
  async #summarize(c: DuckDBConnection, parquetPath: string, topN: number): Promise<DatasetProfile> {
    const source = `read_parquet(${lit(parquetPath)})`
    const schema = (await c.runAndReadAll(`DESCRIBE SELECT * FROM ${source}`)).getRowObjectsJson()
    const select = ['count(*)']
    const at = (expr: string) => select.push(expr) - 1
    const plans = schema.map((r) => {
      const name = String(r.column_name)
      const type = String(r.column_type)
      const kind = columnKind(type)
      const x = ident(name)
      const moments = kind === 'number' || (kind === 'temporal' && type !== 'INTERVAL')
      return {
        name,
        type,
        kind,
        min: at(`min(${x})::VARCHAR`),
        max: at(`max(${x})::VARCHAR`),
        distinct: at(`approx_count_distinct(${x})`),
        count: at(`count(${x})`),
        mean: moments ? at(`avg(${x})::VARCHAR`) : -1,
        quartiles: moments ? at(`approx_quantile(${x}, [0.25, 0.5, 0.75])::VARCHAR[]`) : -1,
        std: kind === 'number' ? at(`stddev(${x})`) : -1,
      }
    })
    const row = (await c.runAndReadAll(`SELECT ${select.join(', ')} FROM ${source}`)).convertRows(jsonSafeConverter)[0] ?? []
    const value = (i: number): JsonValue => (i < 0 ? null : (row[i] ?? null))
    const rowCount = Number(value(0) ?? 0)
    const columns = plans.map((p) => {
      const quartiles = value(p.quartiles)
      const q = Array.isArray(quartiles) ? quartiles : []
      return toColumnProfile(
        { name: p.name, type: p.type, kind: p.kind, min: value(p.min), max: value(p.max), distinct: value(p.distinct), count: value(p.count), mean: value(p.mean), std: value(p.std), q25: q[0] ?? null, q50: q[1] ?? null, q75: q[2] ?? null },
        rowCount,
      )
    })
    const wanted = columns.map((col, i) => ({ col, i })).filter(({ col }) => col.kind === 'text' && !nearlyUnique(col, rowCount))
    if (topN > 0 && wanted.length > 0) {
      const parts = wanted.map(
        ({ col, i }) =>
          `(SELECT ${i} AS col, ${ident(col.name)}::VARCHAR AS value, count(*) AS n FROM ${source} ` +
          `WHERE ${ident(col.name)} IS NOT NULL GROUP BY 2 ORDER BY 3 DESC, 2 LIMIT ${topN})`,
      )
      const rows = (await c.runAndReadAll(`SELECT * FROM (${parts.join(' UNION ALL ')}) ORDER BY col, n DESC, value`)).convertRowObjects(jsonSafeConverter)
      const byCol = new Map<number, TopValue[]>()
      for (const r of rows) {
        const list = byCol.get(Number(r.col)) ?? []
        list.push({ value: String(r.value), count: Number(r.n) })
        byCol.set(Number(r.col), list)
      }
      for (const { col, i } of wanted) {
        const top = byCol.get(i) ?? []
        // A most frequent value seen once means every value is distinct (the estimate that
        // let the column through was off): the list would be arbitrary, so leave it out.
        if (top.length > 0 && top[0]!.count > 1) col.topValues = top
      }
    }
    return { rowCount, columns }
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

async function countRows(c: DuckDBConnection, source: string): Promise<number> {
  const r = await c.runAndReadAll(`SELECT count(*) AS n FROM ${source}`)
  return Number(r.getRowsJson()[0]?.[0] ?? 0)
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

/** A number when the text is one a double holds exactly; the text otherwise. */
function numeric(v: JsonValue): number | string | null {
  if (v === null || v === undefined) return null
  const s = String(v)
  const n = Number(s)
  if (!Number.isFinite(n)) return s
  if (/^-?\d+$/.test(s) && !Number.isSafeInteger(n)) return s
  return n
}

function temporal(v: JsonValue): string | null {
  return v === null || v === undefined ? null : isoTimestamp(String(v))
}

/** One column's aggregates, as #summarize reads them (text casts, like SUMMARIZE's). */
interface ColumnAggregates {
  name: string
  type: string
  kind: ColumnKind
  min: JsonValue
  max: JsonValue
  distinct: JsonValue
  /** Non-null cells. */
  count: JsonValue
  mean: JsonValue
  std: JsonValue
  q25: JsonValue
  q50: JsonValue
  q75: JsonValue
}

function toColumnProfile(a: ColumnAggregates, rowCount: number): ColumnProfile {
  const { kind } = a
  const stat = kind === 'number' ? numeric : kind === 'temporal' ? temporal : (v: JsonValue) => (v === null ? null : String(v))
  const std = a.std === null ? null : Number(a.std)
  const nonNull = Number(a.count ?? 0)
  return {
    name: a.name,
    type: a.type,
    kind,
    nullPercent: rowCount > 0 ? Math.round((1 - nonNull / rowCount) * 10_000) / 100 : 0,
    // HyperLogLog can overshoot on small columns (1,249 "distinct" in 1,000 rows); a count
    // above the number of rows is never right.
    approxDistinct: Math.min(Number(a.distinct ?? 0), rowCount),
    min: stat(a.min),
    max: stat(a.max),
    mean: stat(a.mean),
    std: std !== null && Number.isFinite(std) ? std : null,
    q25: stat(a.q25),
    q50: stat(a.q50),
    q75: stat(a.q75),
  }
}

/**
 * Skip top values where at least 95 % of the non-null values look distinct: an id or free-text
 * column, whose "top" values would all have a count of 1 — and grouping a million distinct
 * strings is the most expensive part of a profile.
 */
function nearlyUnique(col: ColumnProfile, rowCount: number): boolean {
  const nonNull = rowCount * (1 - col.nullPercent / 100)
  return nonNull > 20 && col.approxDistinct >= 0.95 * nonNull
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
