/**
 * Preprocessing learned from the training split only and saved with the model, so the
 * predictor encodes an input exactly as training did:
 *
 * - numbers: standardised with the training mean and standard deviation. A missing number
 *   is imputed with the training mean (0 after standardising); when the training split had
 *   missing values in that column, an extra 0/1 "was missing" input is added so the model
 *   can learn that missingness itself carries signal (scikit-learn's SimpleImputer with
 *   add_indicator=True does the same).
 * - text and booleans: one-hot over the categories seen in training (the `maxCategories`
 *   most frequent; ties broken by the category's text). A missing value is the category
 *   `__missing__` (a text value spelled "__missing__" is indistinguishable from a missing
 *   one). A category never seen in training (or dropped as rare) encodes as all zeros.
 */
import { TrainingDataError } from './errors.ts'
import type { ColumnTable, ValueType } from './data.ts'

const MISSING_CATEGORY = '__missing__'

interface NumberEncoding {
  name: string
  type: 'number'
  mean: number
  std: number
  /** True when the training split had missing values here: one more input, 1 when missing. */
  missingIndicator: boolean
}
interface CategoryEncoding {
  name: string
  type: 'string' | 'boolean'
  /** One input per category, in this order. Booleans use "false" / "true". */
  categories: string[]
}
export type FeatureEncoding = NumberEncoding | CategoryEncoding

export interface Preprocessing {
  features: FeatureEncoding[]
  /** Inputs the network sees per row. */
  width: number
}

/** What a caller must send: each feature with its type and, for text, the known categories. */
export interface InputField {
  name: string
  type: ValueType
  categories?: string[]
}

export function featureWidth(f: FeatureEncoding): number {
  return f.type === 'number' ? (f.missingIndicator ? 2 : 1) : f.categories.length
}

/** Learn the encoding of `features` from the rows listed in `rows` (the training split). */
export function fitPreprocessing(table: ColumnTable, features: readonly string[], rows: Int32Array, maxCategories: number): Preprocessing {
  const out: FeatureEncoding[] = []
  for (const name of features) {
    const col = table.columns[name]!
    if (col.type === 'number') {
      let n = 0
      let sum = 0
      for (const r of rows) {
        const v = col.values[r]!
        if (v === v) {
          n++
          sum += v
        }
      }
      if (n === 0) {
        throw new TrainingDataError(`Feature "${name}" has no values in the ${rows.length} training rows; leave it out of the features`, [
          { field: name, message: 'no values' },
        ])
      }
      const mean = sum / n
      let ss = 0
      for (const r of rows) {
        const v = col.values[r]!
        if (v === v) ss += (v - mean) * (v - mean)
      }
      const std = Math.sqrt(ss / n)
      // A constant column has no spread to scale by: dividing by 1 leaves it at 0.
      out.push({ name, type: 'number', mean, std: std > 1e-12 ? std : 1, missingIndicator: n < rows.length })
    } else {
      const counts = new Float64Array(col.dictionary.length)
      let missing = 0
      for (const r of rows) {
        const c = col.codes[r]!
        if (c < 0) missing++
        else counts[c]!++
      }
      const seen: { category: string; count: number }[] = []
      counts.forEach((count, code) => count > 0 && seen.push({ category: col.dictionary[code]!, count }))
      if (missing > 0) seen.push({ category: MISSING_CATEGORY, count: missing })
      seen.sort((a, b) => b.count - a.count || (a.category < b.category ? -1 : a.category > b.category ? 1 : 0))
      const kept = seen.slice(0, col.type === 'boolean' ? seen.length : maxCategories).map((s) => s.category)
      // Stable, readable order for the schema: booleans false/true, text alphabetically, missing last.
      kept.sort((a, b) => (a === MISSING_CATEGORY ? 1 : b === MISSING_CATEGORY ? -1 : a < b ? -1 : a > b ? 1 : 0))
      out.push({ name, type: col.type, categories: kept })
    }
  }
  return { features: out, width: out.reduce((w, f) => w + featureWidth(f), 0) }
}

/** Encode the listed rows of the table into a row-major Float32Array [rows × width]. */
export function encodeRows(pre: Preprocessing, table: ColumnTable, rows: Int32Array): Float32Array {
  const w = pre.width
  const x = new Float32Array(rows.length * w)
  let offset = 0
  for (const f of pre.features) {
    const col = table.columns[f.name]!
    if (f.type === 'number') {
      if (col.type !== 'number') throw new Error(`column ${f.name} changed type`)
      const { mean, std } = f
      for (let i = 0; i < rows.length; i++) {
        const v = col.values[rows[i]!]!
        if (v === v) x[i * w + offset] = (v - mean) / std
        else if (f.missingIndicator) x[i * w + offset + 1] = 1
      }
    } else {
      if (col.type === 'number') throw new Error(`column ${f.name} changed type`)
      // code → input position (or -1: unknown or dropped category).
      const index = new Map(f.categories.map((c, i) => [c, i]))
      const pos = Int32Array.from(col.dictionary, (c) => index.get(c) ?? -1)
      const missingPos = index.get(MISSING_CATEGORY) ?? -1
      for (let i = 0; i < rows.length; i++) {
        const c = col.codes[rows[i]!]!
        const p = c < 0 ? missingPos : pos[c]!
        if (p >= 0) x[i * w + offset + p] = 1
      }
    }
    offset += featureWidth(f)
  }
  return x
}

/**
 * A fast encoder for one record (already validated against the input schema): writes
 * `width` values into `out` at `at`. Used by the predictor; shares the rules above.
 */
export function compileRecordEncoder(pre: Preprocessing): (record: Readonly<Record<string, unknown>>, out: Float32Array, at: number) => void {
  const steps = pre.features.map((f, i) => {
    const offset = pre.features.slice(0, i).reduce((w, g) => w + featureWidth(g), 0)
    if (f.type === 'number') return { name: f.name, offset, number: f, index: null as Map<string, number> | null, width: featureWidth(f) }
    return { name: f.name, offset, number: null, index: new Map(f.categories.map((c, j) => [c, j])), width: featureWidth(f) }
  })
  return (record, out, at) => {
    out.fill(0, at, at + pre.width)
    for (const s of steps) {
      const v = record[s.name]
      if (s.number) {
        if (typeof v === 'number' && v === v) out[at + s.offset] = (v - s.number.mean) / s.number.std
        else if (s.number.missingIndicator) out[at + s.offset + 1] = 1
      } else {
        const key = v === null || v === undefined ? MISSING_CATEGORY : typeof v === 'boolean' ? (v ? 'true' : 'false') : String(v)
        const p = s.index!.get(key)
        if (p !== undefined) out[at + s.offset + p] = 1
      }
    }
  }
}

/** The input schema a caller validates against, derived from the preprocessing. */
export function inputSchemaOf(pre: Preprocessing): InputField[] {
  return pre.features.map((f) =>
    f.type === 'string' ? { name: f.name, type: f.type, categories: f.categories.filter((c) => c !== MISSING_CATEGORY) } : { name: f.name, type: f.type },
  )
}
