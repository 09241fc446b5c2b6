/**
 * The sandbox for user SQL in a dataset worker: the names the files it may touch go by (links in
 * the operation's scratch directory), what user SQL may not name (worked out once per worker
 * from DuckDB's own catalog), and the checks every statement passes before it runs (sandboxed).
 * The operations that run user SQL (query in duckdb-ops.ts, exportQuery in duckdb-export.ts)
 * go through `sandboxed`.
 */
import { mkdir, symlink } from 'node:fs/promises'
import { join } from 'node:path'
import { StatementType, type DuckDBConnection } from '@duckdb/node-api'
import { UnprocessableError } from '../../core/errors.ts'
import { withDuckDB } from './duckdb-instance.ts'
import { ident, lit } from './duckdb-read.ts'
import type { ExportFormat } from './engine.ts'

/**
 * How far DuckDB computes a streamed result ahead of what is fetched. It counts the fixed-size
 * part of each chunk only, not the strings, so its default (976 KiB: about twenty chunks of an
 * (id, text) result) let `SELECT i, repeat('x', 10000) FROM range(1000000)` hold 414 MB before
 * the first chunk was fetched, and a result that should come back truncated at
 * DATAKIT_QUERY_MAX_BYTES ended over the memory budget. At 100 KB: 59 MB, one or two chunks.
 */
export const STREAMING_BUFFER = '100KB'

/**
 * The names the sandbox gives the files it may touch: symbolic links in the operation's scratch
 * directory, which is the worker's working directory while the operation runs (inScratch). The
 * view's definition (duckdb_views()), the statement that writes an export (current_query()) and
 * a `filename` column then say `data.parquet` and `result.csv`, never a server path.
 */
export const SANDBOX_DATA = 'data.parquet'
export const sandboxResult = (format: ExportFormat) => `result.${format}`

/**
 * Run `fn` with the process's working directory in `scratch`, where each of `links` (name →
 * target) is a symbolic link. A worker runs one operation at a time, so the working directory is
 * this operation's alone; the pool removes `scratch` (the links, not their targets) afterwards.
 */
export async function inScratch<T>(scratch: string, links: Record<string, string>, fn: () => Promise<T>): Promise<T> {
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
export async function prepareSandbox(): Promise<void> {
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
export async function sandboxed(c: DuckDBConnection, sql: string, writable: string[] = [], views: Readonly<Record<string, string>> = { data: SANDBOX_DATA }) {
  // `views`: view name → the link it reads (sandbox-inputs.ts), `data` alone unless told.
  for (const [name, file] of Object.entries(views)) await c.run(`CREATE VIEW ${ident(name)} AS SELECT * FROM read_parquet(${lit(file)})`)
  await c.run(`SET streaming_buffer_size = ${lit(STREAMING_BUFFER)}`)
  await c.run(`SET allowed_paths = [${[...Object.values(views), ...writable].map(lit).join(', ')}]`)
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
