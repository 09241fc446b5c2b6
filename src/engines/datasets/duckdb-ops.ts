/**
 * The DuckDB work of the dataset engine, as one worker process (sandbox-worker.ts) runs it:
 * profiling and Parquet conversion of an upload, preview, sandboxed SQL and its export, and
 * whole-dataset export. Each operation gets a fresh in-memory DuckDBInstance, closed when it
 * ends: nothing one operation does (temp objects, settings, memory) outlives it. What bounds
 * it from outside — the process's memory, its time, the size of what it writes — is the
 * pool's job (worker-pool.ts), which kills the process past a bound; here the limits that
 * DuckDB itself can check (rows, columns, result bytes) are applied.
 *
 * Paths handed to this module are server-generated (UUID names under UPLOAD_DIR); they are
 * still quoted as SQL literals, never spliced raw.
 */
import { mkdir, rename, rm, stat, symlink } from 'node:fs/promises'
import { createReadStream, createWriteStream } from 'node:fs'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { createGunzip } from 'node:zlib'
import { DuckDBBlobVector, DuckDBInstance, DuckDBVarCharVector, StatementType, type DuckDBConnection, type DuckDBDataChunk, type DuckDBVector } from '@duckdb/node-api'
import { AppError, UnprocessableError } from '../../core/errors.ts'
import { countRows, ident, lit, reader, writeParquet } from './duckdb-read.ts'
import { summarize } from './duckdb-profile.ts'
import type { DatasetLimits, DatasetPreview, ExportFormat, QueryResult, ResultColumn, TruncatedBy } from './engine.ts'
import { DatasetLimitError, DatasetParseError, isOutOfMemory, queryFailure, readFailure } from './errors.ts'
import { splitFormat, type DatasetFormat } from './format.ts'
import { columnKind, type DatasetProfile } from './profile.ts'
import { jsonSafeConverter, type JsonValue } from './values.ts'

/** What a worker process is started with (the same for every operation it runs). */
export interface WorkerSettings {
  /** DuckDB threads per operation. */
  threads: number
  /** DuckDB's memory_limit, e.g. "300MiB" (below the process budget: the runtime needs some). */
  duckdbMemoryLimit: string
  /** Keep a DuckDB instance made ahead for the next query (see prepareSpare): interactive workers. */
  spareInstance: boolean
  /** The worker runs user SQL: it works out what the sandbox refuses before it says it is ready (prepareSandbox). */
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
  | { kind: 'exportQuery'; parquetPath: string; sql: string; format: ExportFormat; dest: string; scratch: string }
  | { kind: 'export'; parquetPath: string; format: 'csv' | 'json'; dest: string; neutraliseFormulas: boolean; scratch: string }

/** What each operation answers with. */
export interface SandboxResults {
  profile: DatasetProfile
  toParquet: null
  preview: DatasetPreview
  /** The rows only as JSON text (rowsJson): the server splices it into its answer rather than parse and serialise 8 MB again. */
  query: Omit<QueryResult, 'rows'>
  exportQuery: { bytes: number }
  export: { bytes: number }
}

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
 * Everything a new worker does before its first operation, so that what it then holds is its
 * baseline (see rlimit.ts): DuckDB loaded with an instance of the operations' shape (the spare,
 * or one made and closed), and the sandbox's refusals worked out.
 */
export async function warmUp(settings: WorkerSettings): Promise<void> {
  if (settings.sandbox) await prepareSandbox()
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

/** Run one operation; errors are AppErrors meant for the user (or a 500 for what is not theirs). */
export async function runOp(settings: WorkerSettings, op: SandboxOp): Promise<SandboxResults[SandboxOp['kind']]> {
  const duck = (spill: boolean) => ({ threads: settings.threads, memoryLimit: settings.duckdbMemoryLimit, spillDir: spill ? join(op.scratch, 'spill') : undefined })
  try {
    switch (op.kind) {
      case 'profile':
        return await profile(duck(true), op)
      case 'toParquet': {
        const plain = await decompressed(op.src, op.format, op.scratch, op.limits)
        await withDuckDB(duck(true), (c) => convert(c, plain.path, op.dest, plain.format, op.limits))
        return null
      }
      case 'preview':
        return await withDuckDB(duck(false), (c) => preview(c, op))
      case 'query':
        return await inScratch(op.scratch, { [SANDBOX_DATA]: op.parquetPath }, () => withDuckDB(duck(false), (c) => query(c, op)))
      case 'exportQuery': {
        const links = { [SANDBOX_DATA]: op.parquetPath, [sandboxResult(op.format)]: op.dest }
        return await inScratch(op.scratch, links, () => withDuckDB(duck(false), (c) => exportQuery(c, op)))
      }
      case 'export':
        return await withDuckDB(duck(true), (c) => exportDataset(c, op))
      default: {
        const unknown: never = op
        throw new Error(`unknown operation ${JSON.stringify(unknown)}`)
      }
    }
  } catch (err) {
    if (isOutOfMemory(err) || (err instanceof AppError && isOutOfMemory(err.cause))) {
      throw new AppError(DUCKDB_OUT_OF_MEMORY, err instanceof Error ? err.message : String(err), { status: 500 })
    }
    throw err
  }
}

/**
 * The file DuckDB should read: `src` itself, or for a gzip upload its content decompressed
 * into `scratch`, counted as it is written and stopped past `limits.maxDecompressedBytes`
 * (a 1.4 MB gzip bomb inflates to 1.5 GB of rows). Reading the plain copy is also faster:
 * DuckDB reads a gzip stream on one thread, plain CSV on all of them (1M rows, 40 MB:
 * 0.72 s from gzip, 0.21 s to decompress here + 0.32 s to read).
 */
async function decompressed(src: string, format: DatasetFormat, scratch: string, limits: DatasetLimits): Promise<{ path: string; format: DatasetFormat }> {
  const { base, gzip } = splitFormat(format)
  if (!gzip) return { path: src, format }
  await mkdir(scratch, { recursive: true })
  const path = join(scratch, `plain.${base}`)
  let bytes = 0
  const gunzip = createGunzip()
  try {
    await pipeline(
      createReadStream(src),
      gunzip,
      async function* (chunks: AsyncIterable<Buffer>) {
        for await (const chunk of chunks) {
          bytes += chunk.length
          if (bytes > limits.maxDecompressedBytes) throw DatasetLimitError.decompressed(limits.maxDecompressedBytes)
          yield chunk
        }
      },
      createWriteStream(path),
    )
  } catch (err) {
    await rm(path, { force: true })
    if (err instanceof AppError) throw err
    // zlib: a truncated or corrupt stream (its head was fine, or detectFormat would have refused it).
    throw new DatasetParseError(`The gzip file could not be read: it is corrupt or cut short after ${bytes} decompressed bytes`)
  }
  return { path, format: base }
}

/**
 * Check the source's width (DuckDB's sniffer reads a sample only), then convert it to Parquet
 * at `dest`, refused past DATAKIT_MAX_ROWS without reading further (see writeParquet).
 */
async function convert(c: DuckDBConnection, src: string, dest: string, format: DatasetFormat, limits: DatasetLimits): Promise<void> {
  // A file the reader cannot even sniff is reported by the conversion, with its line.
  const columns = await c
    .runAndReadAll(`DESCRIBE SELECT * FROM ${await reader(src, format, false)}`)
    .then((r) => r.currentRowCount)
    .catch(() => 0)
  if (columns > limits.maxColumns) throw DatasetLimitError.columns(limits.maxColumns, columns)
  await writeParquet(c, src, dest, format, { maxRows: limits.maxRows })
}

async function profile(duck: { threads: number; memoryLimit: string; spillDir?: string }, op: Extract<SandboxOp, { kind: 'profile' }>): Promise<DatasetProfile> {
  const plain = await decompressed(op.src, op.format, op.scratch, op.limits)
  return withDuckDB(duck, async (c) => {
    await convert(c, plain.path, op.parquetPath, plain.format, op.limits)
    try {
      return await summarize(c, op.parquetPath, op.topValues)
    } catch (err) {
      // An uploaded Parquet file is copied as is, so this is where a corrupt one shows; a
      // profile that failed leaves no copy behind.
      await rm(op.parquetPath, { force: true })
      throw readFailure(err, 'Parquet', op.parquetPath, { ioIsFileFault: splitFormat(op.format).base === 'parquet' })
    }
  })
}

/**
 * How far DuckDB computes a streamed result ahead of what is fetched. It counts the fixed-size
 * part of each chunk only, not the strings, so its default (976 KiB: about twenty chunks of an
 * (id, text) result) let `SELECT i, repeat('x', 10000) FROM range(1000000)` hold 414 MB before
 * the first chunk was fetched, and a result that should come back truncated at
 * DATAKIT_QUERY_MAX_BYTES ended over the memory budget. At 100 KB: 59 MB, one or two chunks.
 */
const STREAMING_BUFFER = '100KB'

/**
 * Rows `offset … offset+limit` of the Parquet copy, in file order, as JSON-safe values, with the
 * total row count from the Parquet footer; at most `maxBytes` of them.
 */
async function preview(c: DuckDBConnection, op: Extract<SandboxOp, { kind: 'preview' }>): Promise<DatasetPreview> {
  const source = `read_parquet(${lit(op.parquetPath)})`
  await c.run(`SET streaming_buffer_size = ${lit(STREAMING_BUFFER)}`)
  const result = await c.stream(`SELECT * FROM ${source} LIMIT ${op.limit} OFFSET ${op.offset}`)
  const names = result.deduplicatedColumnNames()
  const types = result.columnTypes()
  const read = await readRows(() => result.fetchChunk(), names, { maxRows: op.limit, maxBytes: op.maxBytes, redact: [] })
  return {
    columns: names.map((name, i) => ({ name, type: String(types[i]!) })),
    rows: read.rows,
    offset: op.offset,
    limit: op.limit,
    totalRows: await countRows(c, source),
    truncated: read.truncatedBy !== null,
  }
}

/**
 * The names the sandbox gives the files it may touch: symbolic links in the operation's scratch
 * directory, which is the worker's working directory while the operation runs (inScratch). The
 * view's definition (duckdb_views()), the statement that writes an export (current_query()) and
 * a `filename` column then say `data.parquet` and `result.csv`, never a server path.
 */
const SANDBOX_DATA = 'data.parquet'
const sandboxResult = (format: ExportFormat) => `result.${format}`

/**
 * Run `fn` with the process's working directory in `scratch`, where each of `links` (name →
 * target) is a symbolic link. A worker runs one operation at a time, so the working directory is
 * this operation's alone; the pool removes `scratch` (the links, not their targets) afterwards.
 */
async function inScratch<T>(scratch: string, links: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  await mkdir(scratch, { recursive: true })
  await Promise.all(Object.entries(links).map(([name, target]) => symlink(target, join(scratch, name))))
  const home = process.cwd()
  process.chdir(scratch)
  try {
    return await fn()
  } finally {
    process.chdir(home)
  }
}

/** What a name in SQL is: a scalar (or aggregate) function, a table function, or a table or view. */
type NameKind = 'scalar' | 'table' | 'view'
type Names = Record<NameKind, Set<string>>

/**
 * What user SQL may not name: DuckDB's settings, because `allowed_paths` holds the real paths of
 * the files the sandbox may use (DuckDB canonicalises them with realpath(3), through the links
 * above), and SQL built while the query runs (query(), query_table(),
 * json_execute_serialized_sql()), which a check of the statement's text cannot see into.
 * Replacing paths in the answer is not enough: `reverse(value)` or `replace(sql, '/', '|')` carry
 * a path out in disguise. Built-in macros and views that use any of these are refused with them
 * (refusedNames).
 */
const REFUSED_ROOTS: Readonly<Record<NameKind, readonly string[]>> = {
  scalar: ['current_setting'],
  table: ['duckdb_settings', 'query', 'query_table', 'json_execute_serialized_sql'],
  view: [],
}

/** REFUSED_ROOTS and the built-in macros and views that use one; the same for every instance of this DuckDB. */
let refused: Promise<Names> | undefined

/**
 * The closure of REFUSED_ROOTS over DuckDB's built-in macros and views (pg_settings reads
 * duckdb_settings(), histogram_values() runs query_table(), the table macro histogram() calls
 * histogram_values()…), each definition judged by its parse tree as a query is (60 ms, once per
 * worker: see prepareSandbox). By kind, so the table macro histogram() is refused and the
 * aggregate histogram(x) is not.
 */
async function refusedNames(c: DuckDBConnection): Promise<Names> {
  const rows = (
    await c.runAndReadAll(`
      SELECT CASE function_type WHEN 'table_macro' THEN 'table' ELSE 'scalar' END, function_name,
             json_serialize_sql(CASE function_type WHEN 'table_macro' THEN macro_definition ELSE 'SELECT ' || macro_definition END)
      FROM duckdb_functions() WHERE macro_definition IS NOT NULL
      UNION ALL
      SELECT 'view', view_name, json_serialize_sql(regexp_replace(sql, '^CREATE (TEMP |TEMPORARY )?VIEW .+? AS ', ''))
      FROM duckdb_views() WHERE internal`)
  ).getRows()
  const defs = rows.map(([kind, name, tree]) => ({ kind: kind as NameKind, name: String(name).toLowerCase(), tree: JSON.parse(String(tree)) as unknown }))
  const names: Names = { scalar: new Set(REFUSED_ROOTS.scalar), table: new Set(REFUSED_ROOTS.table), view: new Set(REFUSED_ROOTS.view) }
  for (let grew = true; grew; ) {
    grew = false
    for (const d of defs) {
      if (names[d.kind].has(d.name) || namedIn(d.tree, names) === undefined) continue
      names[d.kind].add(d.name)
      grew = true
    }
  }
  return names
}

/** Work out refusedNames in an idle worker, so no query waits for it. */
async function prepareSandbox(): Promise<void> {
  await withDuckDB({ threads: 1, memoryLimit: '64MiB' }, sandboxNames)
}

function sandboxNames(c: DuckDBConnection): Promise<Names> {
  return (refused ??= refusedNames(c).catch((err: unknown) => {
    refused = undefined
    throw err
  }))
}

/**
 * Refuse `sql` (one SELECT) when its parse tree names a function, table function, view or macro
 * of refusedNames: DuckDB's own parser decides (json_serialize_sql), so quoting, case and
 * qualified names (`system.main.current_setting`) change nothing.
 */
async function refuseHidden(c: DuckDBConnection, sql: string): Promise<void> {
  const names = await sandboxNames(c)
  const [[text]] = (await c.runAndReadAll('SELECT json_serialize_sql($1::VARCHAR)', [sql])).getRows() as [[string]]
  const tree = JSON.parse(text) as { error?: boolean }
  if (tree.error) throw new UnprocessableError('This query cannot be checked by the DataKit sandbox; write it as a plain SELECT')
  const found = namedIn(tree, names)
  if (found) {
    throw new UnprocessableError(
      `${found} is not available in the DataKit sandbox: it shows the server's settings or runs SQL built while the query runs`,
      [{ field: 'sql', message: found }],
    )
  }
}

/**
 * The first name in a json_serialize_sql tree that `names` refuses: a table function
 * (`TABLE_FUNCTION` refs), a table or view (`table_name`: base tables, SUMMARIZE/DESCRIBE), or a
 * scalar, aggregate or window function (`function_name` anywhere else).
 */
function namedIn(node: unknown, names: Names): string | undefined {
  if (Array.isArray(node)) {
    for (const x of node) {
      const found = namedIn(x, names)
      if (found) return found
    }
    return undefined
  }
  if (node === null || typeof node !== 'object') return undefined
  const o = node as Record<string, unknown>
  const is = (kind: NameKind, name: unknown) => typeof name === 'string' && names[kind].has(name.toLowerCase())
  if (o.type === 'TABLE_FUNCTION' && is('table', (o.function as { function_name?: unknown } | undefined)?.function_name)) {
    return String((o.function as { function_name: string }).function_name).toLowerCase()
  }
  if (is('view', o.table_name)) return String(o.table_name).toLowerCase()
  if (is('scalar', o.function_name)) return String(o.function_name).toLowerCase()
  for (const value of Object.values(o)) {
    const found = namedIn(value, names)
    if (found) return found
  }
  return undefined
}

/**
 * The sandbox for user SQL: a fresh database in which the view `data` is created over
 * `data.parquet` (see SANDBOX_DATA), then `allowed_paths` is narrowed to that file (and the
 * export's, when there is one), `enable_external_access` switched off (no other file, no URL, no
 * ATTACH, no extension install/load) and the configuration locked so the statement cannot switch
 * anything back. The statement is parsed by DuckDB (extractStatements): exactly one, its prepared
 * statement type must be SELECT (which covers WITH, VALUES, FROM-first, SUMMARIZE, DESCRIBE), and
 * it may not name what would show the server's paths (refuseHidden).
 */
async function sandboxed(c: DuckDBConnection, sql: string, writable: string[] = []) {
  await c.run(`CREATE VIEW data AS SELECT * FROM read_parquet(${lit(SANDBOX_DATA)})`)
  await c.run(`SET streaming_buffer_size = ${lit(STREAMING_BUFFER)}`)
  await c.run(`SET allowed_paths = [${[SANDBOX_DATA, ...writable].map(lit).join(', ')}]`)
  await c.run(`SET enable_external_access = false`)
  await c.run(`SET lock_configuration = true`)
  const statements = await c.extractStatements(sql).catch((err: unknown) => {
    // @duckdb/node-api 1.5 rejects text with no statement at all (blank, only `;` or
    // comments) with this generic message instead of returning a count of 0; syntax
    // errors come back with DuckDB's own "Parser Error: …".
    if (err instanceof Error && err.message === 'Error in native callback') throw new UnprocessableError('The query is empty')
    throw err
  })
  if (statements.count !== 1) {
    throw new UnprocessableError(statements.count === 0 ? 'The query is empty' : `Exactly one statement is allowed; this query has ${statements.count}`)
  }
  const prepared = await statements.prepare(0)
  if (prepared.statementType !== StatementType.SELECT) {
    throw new UnprocessableError(`Only read-only queries (SELECT, WITH …) are allowed; this is a ${StatementType[prepared.statementType] ?? 'different'} statement`)
  }
  await refuseHidden(c, sql)
  return prepared
}

/**
 * Run one read-only statement over the dataset, exposed as the view `data` (see sandboxed).
 * Results are streamed and reading stops at `maxRows` rows or `maxBytes` bytes of JSON,
 * whichever comes first (`truncatedBy` says which). Every refusal or failure is an
 * UnprocessableError (422) carrying DuckDB's message with the server's paths replaced.
 */
async function query(c: DuckDBConnection, op: Extract<SandboxOp, { kind: 'query' }>): Promise<SandboxResults['query']> {
  const started = performance.now()
  try {
    const prepared = await sandboxed(c, op.sql)
    const result = await prepared.stream()
    const names = result.deduplicatedColumnNames()
    const types = result.columnTypes()
    const read = await readRows(() => result.fetchChunk(), names, { maxRows: op.maxRows, maxBytes: op.maxBytes, redact: [op.parquetPath, op.scratch] })
    return {
      columns: names.map((name, i) => ({ name, type: String(types[i]!) })),
      rowsJson: `[${read.json.join(',')}]`,
      rowCount: read.rows.length,
      truncated: read.truncatedBy !== null,
      truncatedBy: read.truncatedBy,
      elapsedMs: Math.round(performance.now() - started),
    }
  } catch (err) {
    if (err instanceof AppError || isOutOfMemory(err)) throw err
    throw queryFailure(err, [op.parquetPath, op.scratch])
  }
}

/**
 * The whole result of one sandboxed statement written to `dest` by DuckDB's COPY, through the
 * link `result.<format>` (see SANDBOX_DATA): the statement is checked as for a query, then run
 * through `query()` (which takes exactly one SELECT) inside our own COPY, so it is never spliced
 * into SQL text. CSV cells of text columns
 * are neutralised as for exportDataset. The pool stops the process when `dest` outgrows its
 * byte limit or the time limit passes.
 */
async function exportQuery(c: DuckDBConnection, op: Extract<SandboxOp, { kind: 'exportQuery' }>): Promise<{ bytes: number }> {
  try {
    const result = sandboxResult(op.format)
    const prepared = await sandboxed(c, op.sql, [result])
    const columns: ResultColumn[] = Array.from({ length: prepared.columnCount }, (_, i) => ({ name: prepared.columnName(i), type: String(prepared.columnType(i)) }))
    const aliases = columns.map((_, i) => `c${i}`)
    const source = `query(${lit(op.sql)}) AS q(${aliases.join(', ')})`
    // No path is spliced in here to scrub the values with (replace(c0, '/srv/…', 'data')): the
    // statement would then hold it, and current_query() shows the statement.
    const select = columns.map((col, i) =>
      op.format === 'csv' ? `${neutralisedColumn(aliases[i]!, col.type)} AS ${ident(neutraliseText(col.name))}` : `${aliases[i]} AS ${ident(col.name)}`,
    )
    // Straight into the link's target: a file that exists already would otherwise be written as
    // tmp_result.<format> first, a name the sandbox does not allow.
    await c.run(`COPY (SELECT ${select.join(', ')} FROM ${source}) TO ${lit(result)} (${copyFormat(op.format)}, USE_TMP_FILE false)`)
    return { bytes: (await stat(op.dest)).size }
  } catch (err) {
    if (err instanceof AppError || isOutOfMemory(err)) throw err
    throw queryFailure(err, [op.parquetPath, op.dest, op.scratch])
  }
}

/**
 * The dataset written to `dest` as CSV (with header) or a JSON array of objects, atomically
 * (a temporary name next to it first; Parquet is a byte copy the engine makes itself). In CSV, every cell of a non-numeric column
 * that begins with = + - @ TAB or CR gets a leading single quote, so a spreadsheet shows it as
 * text instead of evaluating it (OWASP "CSV Injection"); header names are treated the same.
 * Numeric columns are left alone: a number like -5 is data, not a formula.
 */
async function exportDataset(c: DuckDBConnection, op: Extract<SandboxOp, { kind: 'export' }>): Promise<{ bytes: number }> {
  // Next to `dest` (a rename across file systems fails); the engine removes it if this process is killed.
  const tmp = `${op.dest}.tmp-${crypto.randomUUID()}`
  const source = `read_parquet(${lit(op.parquetPath)})`
  try {
    if (op.format === 'json' || (op.format === 'csv' && !op.neutraliseFormulas)) {
      await c.run(`COPY (SELECT * FROM ${source}) TO ${lit(tmp)} (${copyFormat(op.format)})`)
    } else {
      const described = (await c.runAndReadAll(`DESCRIBE SELECT * FROM ${source}`)).getRowObjectsJson()
      const projection = described.map((d) => `${neutralisedColumn(ident(String(d.column_name)), String(d.column_type))} AS ${ident(neutraliseText(String(d.column_name)))}`)
      const select = projection.length > 0 ? projection.join(', ') : '*'
      await c.run(`COPY (SELECT ${select} FROM ${source}) TO ${lit(tmp)} (${copyFormat('csv')})`)
    }
    await rename(tmp, op.dest)
  } catch (err) {
    await rm(tmp, { force: true })
    throw err
  }
  return { bytes: (await stat(op.dest)).size }
}

function copyFormat(format: ExportFormat): string {
  switch (format) {
    case 'csv':
      return 'FORMAT csv, HEADER true'
    case 'json':
      return 'FORMAT json, ARRAY true'
    case 'parquet':
      return 'FORMAT parquet'
  }
}

/** Characters that make a spreadsheet treat a cell as a formula (OWASP CSV injection). */
const FORMULA_START = ['=', '+', '-', '@', '\t', '\r']

/** `column` as CSV should hold it: numbers and booleans as they are, anything else as neutralised text. */
function neutralisedColumn(column: string, type: string): string {
  const kind = columnKind(type)
  if (kind === 'number' || kind === 'boolean') return column
  const text = `CAST(${column} AS VARCHAR)`
  return `CASE WHEN left(${text}, 1) IN ('=', '+', '-', '@', chr(9), chr(13)) THEN '''' || ${text} ELSE ${text} END`
}

function neutraliseText(s: string): string {
  return FORMULA_START.some((c) => s.startsWith(c)) ? `'${s}` : s
}

/**
 * Rows of a streamed result as JSON-safe objects, converted one at a time so that reading
 * stops at `maxRows` rows or before the row whose JSON would take the total past `maxBytes`
 * (a row count alone does not bound the answer: one row can hold a 400 MB string). Strings
 * have the paths in `redact` replaced by `data`.
 */
async function readRows(
  next: () => Promise<DuckDBDataChunk | null>,
  names: string[],
  opts: { maxRows: number; maxBytes: number; redact: string[] },
): Promise<{ rows: Record<string, JsonValue>[]; json: string[]; truncatedBy: TruncatedBy | null }> {
  const rows: Record<string, JsonValue>[] = []
  const json: string[] = []
  let bytes = 2 // []
  const stop = (truncatedBy: TruncatedBy | null) => ({ rows, json, truncatedBy })
  for (;;) {
    const chunk = await next()
    if (!chunk || chunk.rowCount === 0) return stop(null)
    const vectors = names.map((_, i) => chunk.getColumnVector(i))
    for (let r = 0; r < chunk.rowCount; r++) {
      if (rows.length === opts.maxRows) return stop('rows')
      // A string longer than what is left is not even decoded (400 MB would cost seconds and
      // twice its size in memory before being counted).
      if (vectors.some((v) => (stringBytes(v, r) ?? 0) > opts.maxBytes - bytes)) return stop('bytes')
      const values = chunk.convertRowValues(r, jsonSafeConverter)
      const row: Record<string, JsonValue> = {}
      names.forEach((n, i) => (row[n] = redact(values[i] ?? null, opts.redact)))
      const text = JSON.stringify(row)
      const size = Buffer.byteLength(text) + 1
      if (bytes + size > opts.maxBytes) return stop('bytes')
      bytes += size
      rows.push(row)
      json.push(text)
    }
  }
}

/**
 * Bytes of a top-level VARCHAR or BLOB cell, read from DuckDB's 16-byte string header without
 * decoding the string: its first 4 bytes are the length (DuckDB's string_t; @duckdb/node-api
 * reads it the same way in getStringBytes, vectors/dataAccessors.js). The vector's DataView and
 * validity are private members of @duckdb/node-api 1.5's DuckDBVarCharVector/DuckDBBlobVector:
 * when they are not there (another version), undefined, and the row is simply converted.
 */
function stringBytes(vector: DuckDBVector, row: number): number | undefined {
  if (!(vector instanceof DuckDBVarCharVector || vector instanceof DuckDBBlobVector)) return undefined
  const { dataView, validity } = vector as unknown as { dataView?: unknown; validity?: { itemValid?: (i: number) => boolean } }
  if (!(dataView instanceof DataView) || typeof validity?.itemValid !== 'function' || dataView.byteLength < (row + 1) * 16) return undefined
  return validity.itemValid(row) ? dataView.getUint32(row * 16, true) : 0
}

/**
 * `v` with the server paths in `paths` replaced by `data` in every string: a second line of
 * defence behind the sandbox's relative names and refusals (see SANDBOX_DATA, REFUSED_ROOTS),
 * which are what keep a path out of an answer — a replacement alone is undone by reverse().
 */
function redact(v: JsonValue, paths: string[]): JsonValue {
  if (paths.length === 0) return v
  if (typeof v === 'string') return paths.reduce((s, p) => (s.includes(p) ? s.split(p).join('data') : s), v)
  if (Array.isArray(v)) return v.map((x) => redact(x, paths))
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, redact(x, paths)]))
  return v
}
