/**
 * Exports written by DuckDB's COPY in a dataset worker: the result of one sandboxed statement
 * (exportQuery), or a whole dataset (exportDataset), as CSV, JSON or Parquet; CSV cells that a
 * spreadsheet would evaluate as formulas are neutralised.
 */
import { rename, rm, stat } from 'node:fs/promises'
import type { DuckDBConnection } from '@duckdb/node-api'
import { AppError } from '../../core/errors.ts'
import { ident, lit } from './duckdb-read.ts'
import { sandboxed, sandboxResult } from './duckdb-sandbox.ts'
import type { ExportFormat, ResultColumn } from './engine.ts'
import { isOutOfMemory, queryFailure } from './errors.ts'
import { columnKind } from './profile.ts'
import { sandboxViews } from './sandbox-inputs.ts'
import type { SandboxOp } from './sandbox-ops.ts'

/**
 * The whole result of one sandboxed statement written to `dest` by DuckDB's COPY, through the
 * link `result.<format>` (see SANDBOX_DATA, duckdb-sandbox.ts): the statement is checked as for a query, then run
 * through `query()` (which takes exactly one SELECT) inside our own COPY, so it is never spliced
 * into SQL text. CSV cells of text columns
 * are neutralised as for exportDataset. The pool stops the process when `dest` outgrows its
 * byte limit or the time limit passes.
 */
export async function exportQuery(c: DuckDBConnection, op: Extract<SandboxOp, { kind: 'exportQuery' }>): Promise<{ bytes: number }> {
  try {
    const result = sandboxResult(op.format)
    const prepared = await sandboxed(c, op.sql, [result], sandboxViews(op.inputs))
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
    throw queryFailure(err, [...Object.values(op.inputs), op.dest, op.scratch])
  }
}

/**
 * The dataset written to `dest` as CSV (with header) or a JSON array of objects, atomically
 * (a temporary name next to it first; Parquet is a byte copy the engine makes itself). In CSV, every cell of a non-numeric column
 * that begins with = + - @ TAB or CR gets a leading single quote, so a spreadsheet shows it as
 * text instead of evaluating it (OWASP "CSV Injection"); header names are treated the same.
 * Numeric columns are left alone: a number like -5 is data, not a formula.
 */
export async function exportDataset(c: DuckDBConnection, op: Extract<SandboxOp, { kind: 'export' }>): Promise<{ bytes: number }> {
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
