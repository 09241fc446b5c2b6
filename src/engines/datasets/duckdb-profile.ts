/**
 * Profiling a dataset's Parquet copy: the statistics DuckDB's SUMMARIZE reports, in one
 * aggregate, and the most frequent values of text columns.
 */
import type { DuckDBConnection } from '@duckdb/node-api'
import { ident, lit } from './duckdb-read.ts'
import { columnKind, type ColumnKind, type ColumnProfile, type DatasetProfile, type TopValue } from './profile.ts'
import { isoTimestamp, jsonSafeConverter, type JsonValue } from './values.ts'

/**
 * Aggregates per scan, and text columns per top-values query. One query over every column
 * does not scale with width: with 1,000 columns (200 rows) the summary took 9 s and 850 MB,
 * nearly all of it the top values as one UNION ALL of 333 GROUP BYs; with eight columns per
 * query, 2.4 s and 230 MB (the aggregate alone: 300 → 210 MB at 100 columns per scan). A
 * narrow file still takes one query of each.
 */
const AGGREGATES_PER_SCAN = 700
const TOP_VALUE_COLUMNS_PER_SCAN = 8

/**
 * The statistics SUMMARIZE reports (min, max, approximate distinct count, mean, std,
 * approximate quartiles, null share), computed in one aggregate over the Parquet copy, then
 * one top-values query. SUMMARIZE itself runs a separate t-digest for each quartile of each
 * column; here one digest per column answers all three (approx_quantile with a list), which
 * makes the whole scan about 40 % cheaper. Statistics a type has no meaning for (the mean of
 * a boolean, the quartiles of an interval) are not asked for.
 */
export async function summarize(c: DuckDBConnection, parquetPath: string, topN: number): Promise<DatasetProfile> {
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
  const row: JsonValue[] = []
  for (let i = 0; i < select.length; i += AGGREGATES_PER_SCAN) {
    const part = (await c.runAndReadAll(`SELECT ${select.slice(i, i + AGGREGATES_PER_SCAN).join(', ')} FROM ${source}`)).convertRows(jsonSafeConverter)[0] ?? []
    row.push(...part)
  }
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
    const rows: Record<string, JsonValue>[] = []
    for (let i = 0; i < parts.length; i += TOP_VALUE_COLUMNS_PER_SCAN) {
      const union = parts.slice(i, i + TOP_VALUE_COLUMNS_PER_SCAN).join(' UNION ALL ')
      rows.push(...(await c.runAndReadAll(`SELECT * FROM (${union}) ORDER BY col, n DESC, value`)).convertRowObjects(jsonSafeConverter))
    }
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
