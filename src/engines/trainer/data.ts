/**
 * Rows (or column arrays) → typed columns, the form the training worker receives.
 *
 * Why columns: numbers go over as Float64Arrays that are transferred to the Worker, not
 * copied, and text is dictionary-encoded once (Int32Array codes + a small dictionary), so
 * the structured clone on the caller's thread stays small. This pass is the only work the
 * trainer does on the caller's thread: one linear scan of the cells that are used.
 */
import { TrainingDataError } from './errors.ts'

export type ValueType = 'number' | 'string' | 'boolean'

/** Numbers: NaN marks a missing value. Text and booleans: code -1 marks a missing value. */
type Column =
  | { type: 'number'; values: Float64Array }
  | { type: 'string' | 'boolean'; codes: Int32Array; dictionary: string[] }

export interface ColumnTable {
  rows: number
  /** In the order the columns were first seen in the data. */
  names: string[]
  columns: Record<string, Column>
}

/**
 * An array of records (`[{ age: 35, location: "urban" }, …]`), or one array per column
 * (`{ age: [35, …], location: ["urban", …] }`, as DuckDB's column readers give them).
 * Values may be numbers, bigints, strings, booleans, or null/undefined/NaN for missing.
 */
export type TabularData = readonly Readonly<Record<string, unknown>>[] | Readonly<Record<string, ArrayLike<unknown>>>

const BOOLEAN_DICTIONARY = ['false', 'true']

function kindOf(v: unknown): ValueType | 'missing' | 'other' {
  switch (typeof v) {
    case 'number':
      return Number.isNaN(v) ? 'missing' : 'number'
    case 'bigint':
      return 'number'
    case 'string':
      return 'string'
    case 'boolean':
      return 'boolean'
    case 'undefined':
      return 'missing'
    default:
      return v === null ? 'missing' : 'other'
  }
}

const describe = (v: unknown) => (typeof v === 'string' ? JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v) : typeof v === 'object' ? (v?.constructor?.name ?? 'object') : String(v))

function buildColumn(name: string, n: number, get: (i: number) => unknown): Column {
  let type: ValueType | null = null
  let first = -1
  let values: Float64Array | null = null
  let codes: Int32Array | null = null
  const dict = new Map<string, number>()
  const dictionary: string[] = []
  for (let i = 0; i < n; i++) {
    const v = get(i)
    const k = kindOf(v)
    if (k === 'missing') continue
    if (k === 'other') {
      throw new TrainingDataError(`Column "${name}" has a value of an unsupported type at row ${i} (${describe(v)}): expected a number, text or a boolean`, [
        { field: name, message: 'unsupported value type' },
      ])
    }
    if (type === null) {
      type = k
      first = i
      if (k === 'number') values = new Float64Array(n).fill(NaN)
      else codes = new Int32Array(n).fill(-1)
      if (k === 'boolean') dictionary.push(...BOOLEAN_DICTIONARY)
    } else if (k !== type) {
      throw new TrainingDataError(
        `Column "${name}" mixes value types: row ${first} holds ${type === 'string' ? 'text' : `a ${type}`}, row ${i} holds ${describe(v)}; clean the column or leave it out of the features`,
        [{ field: name, message: 'mixed value types' }],
      )
    }
    if (k === 'number') {
      const x = Number(v)
      if (!Number.isFinite(x)) {
        throw new TrainingDataError(`Column "${name}" has a non-finite number at row ${i} (${x})`, [{ field: name, message: 'non-finite number' }])
      }
      values![i] = x
    } else if (k === 'boolean') {
      codes![i] = v ? 1 : 0
    } else {
      const s = v as string
      let c = dict.get(s)
      if (c === undefined) {
        c = dictionary.length
        dict.set(s, c)
        dictionary.push(s)
      }
      codes![i] = c
    }
  }
  if (type === 'number' || type === null) return { type: 'number', values: values ?? new Float64Array(n).fill(NaN) }
  return { type, codes: codes!, dictionary }
}

/**
 * Build typed columns for the named columns (`wanted`), or for every column when `wanted`
 * is null. Throws a TrainingDataError naming the column for a value it cannot use.
 */
export function toColumnTable(data: TabularData, wanted: readonly string[] | null): ColumnTable {
  let n: number
  let names: string[]
  let getter: (name: string) => (i: number) => unknown
  if (Array.isArray(data)) {
    const rows = data as readonly Readonly<Record<string, unknown>>[]
    n = rows.length
    const seen = new Set<string>()
    names = []
    for (const row of rows) {
      if (typeof row !== 'object' || row === null) throw new TrainingDataError('Every row must be an object of column values')
      for (const k in row) {
        if (!seen.has(k)) {
          seen.add(k)
          names.push(k)
        }
      }
    }
    getter = (name) => (i) => rows[i]![name]
  } else {
    const cols = data as Readonly<Record<string, ArrayLike<unknown>>>
    names = Object.keys(cols)
    const lengths = new Set(names.map((k) => cols[k]!.length))
    if (lengths.size > 1) {
      throw new TrainingDataError(`Column arrays have different lengths (${names.map((k) => `${k}: ${cols[k]!.length}`).join(', ')})`)
    }
    n = names.length ? cols[names[0]!]!.length : 0
    getter = (name) => {
      const arr = cols[name]!
      return (i) => arr[i]
    }
  }
  const use = wanted ?? names
  const columns: Record<string, Column> = {}
  for (const name of use) {
    if (!names.includes(name)) continue // reported by the caller, which knows whether it is the target or a feature
    columns[name] = buildColumn(name, n, getter(name))
  }
  return { rows: n, names, columns }
}

/** The buffers to transfer (not copy) to the Worker. */
export function transferables(table: ColumnTable): ArrayBuffer[] {
  return Object.values(table.columns).map((c) => (c.type === 'number' ? c.values.buffer : c.codes.buffer) as ArrayBuffer)
}
