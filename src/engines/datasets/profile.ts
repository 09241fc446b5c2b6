/**
 * The profile of a dataset version (what is stored in SQL and shown on GET /datakits/:id) and
 * the diff between two versions' profiles. Pure data: no DuckDB here, so the HTTP layer and
 * the store can use these types without loading the engine.
 */

/** Coarse family of a DuckDB type, to decide which statistics mean something. */
export type ColumnKind = 'number' | 'text' | 'boolean' | 'temporal' | 'other'

export interface TopValue {
  value: string
  count: number
}

export interface ColumnProfile {
  name: string
  /** DuckDB's type name, e.g. BIGINT, DOUBLE, VARCHAR, DATE, DECIMAL(10,2), STRUCT(…). */
  type: string
  kind: ColumnKind
  /** Share of NULL cells, 0–100 with two decimals. */
  nullPercent: number
  /** HyperLogLog estimate of distinct non-null values, capped at the row count. */
  approxDistinct: number
  /** Numbers for numeric columns (strings when beyond a double's exact range); text otherwise. */
  min: number | string | null
  max: number | string | null
  mean: number | string | null
  std: number | null
  /** Approximate quartiles (DuckDB's t-digest, approx_quantile); null for text, booleans and intervals. */
  q25: number | string | null
  q50: number | string | null
  q75: number | string | null
  /**
   * Text columns only: the most frequent values with exact counts, most frequent first.
   * Absent for other kinds, and for text columns where (nearly) every value is distinct —
   * every count would be 1 and the list would say nothing.
   */
  topValues?: TopValue[]
}

export interface DatasetProfile {
  rowCount: number
  columns: ColumnProfile[]
}

export interface ProfileDiff {
  added: { name: string; type: string }[]
  removed: { name: string; type: string }[]
  retyped: { name: string; from: string; to: string }[]
  rowCount: { from: number; to: number; change: number }
}

const NUMBER_TYPE = /^(TINYINT|SMALLINT|INTEGER|BIGINT|HUGEINT|UTINYINT|USMALLINT|UINTEGER|UBIGINT|UHUGEINT|FLOAT|DOUBLE|DECIMAL(\(\d+,\s*\d+\))?|BIGNUM)$/
const TEXT_TYPE = /^(VARCHAR|ENUM\(.*\)|JSON)$/
const TEMPORAL_TYPE = /^(DATE|TIME|TIME_NS|TIME WITH TIME ZONE|TIMESTAMP|TIMESTAMP_S|TIMESTAMP_MS|TIMESTAMP_NS|TIMESTAMP WITH TIME ZONE|INTERVAL)$/

/** The kind of a DuckDB type name as SUMMARIZE and DESCRIBE print it. */
export function columnKind(type: string): ColumnKind {
  if (NUMBER_TYPE.test(type)) return 'number'
  if (TEXT_TYPE.test(type)) return 'text'
  if (type === 'BOOLEAN') return 'boolean'
  if (TEMPORAL_TYPE.test(type)) return 'temporal'
  return 'other'
}

/**
 * Columns added, removed and retyped from `a` (the older version) to `b`, and the change in
 * rows. Columns are matched by name; a renamed column shows as one removed and one added.
 * Order follows the column order of the profile the column comes from.
 */
export function diffProfiles(a: DatasetProfile, b: DatasetProfile): ProfileDiff {
  const before = new Map(a.columns.map((c) => [c.name, c]))
  const after = new Map(b.columns.map((c) => [c.name, c]))
  return {
    added: b.columns.filter((c) => !before.has(c.name)).map((c) => ({ name: c.name, type: c.type })),
    removed: a.columns.filter((c) => !after.has(c.name)).map((c) => ({ name: c.name, type: c.type })),
    retyped: b.columns.flatMap((c) => {
      const old = before.get(c.name)
      return old && old.type !== c.type ? [{ name: c.name, from: old.type, to: c.type }] : []
    }),
    rowCount: { from: a.rowCount, to: b.rowCount, change: b.rowCount - a.rowCount },
  }
}
