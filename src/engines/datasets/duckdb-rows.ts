/**
 * Reading a streamed DuckDB result into the server's answer: rows as JSON-safe objects, stopped
 * at a row count or a byte budget (whichever comes first), with server paths redacted.
 */
import { DuckDBBlobVector, DuckDBVarCharVector, type DuckDBDataChunk, type DuckDBVector } from '@duckdb/node-api'
import type { TruncatedBy } from './engine.ts'
import { jsonSafeConverter, type JsonValue } from './values.ts'

/**
 * Rows of a streamed result as JSON-safe objects, converted one at a time so that reading
 * stops at `maxRows` rows or before the row whose JSON would take the total past `maxBytes`
 * (a row count alone does not bound the answer: one row can hold a 400 MB string). Strings
 * have the paths in `redact` replaced by `data`. `bytes`: those of the rows' JSON array.
 */
export async function readRows(
  next: () => Promise<DuckDBDataChunk | null>,
  names: string[],
  opts: { maxRows: number; maxBytes: number; redact: string[] },
): Promise<{ rows: Record<string, JsonValue>[]; json: string[]; bytes: number; truncatedBy: TruncatedBy | null }> {
  const rows: Record<string, JsonValue>[] = []
  const json: string[] = []
  let bytes = 2 // []
  const stop = (truncatedBy: TruncatedBy | null) => ({ rows, json, bytes, truncatedBy })
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
 * defence behind the sandbox's relative names and refusals (see SANDBOX_DATA, REFUSED_ROOTS in duckdb-sandbox.ts),
 * which are what keep a path out of an answer — a replacement alone is undone by reverse().
 */
function redact(v: JsonValue, paths: string[]): JsonValue {
  if (paths.length === 0) return v
  if (typeof v === 'string') return paths.reduce((s, p) => (s.includes(p) ? s.split(p).join('data') : s), v)
  if (Array.isArray(v)) return v.map((x) => redact(x, paths))
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, redact(x, paths)]))
  return v
}
