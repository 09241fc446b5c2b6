/**
 * DuckDB values → JSON-safe values for HTTP responses. DuckDB's own JSON converter renders
 * every BIGINT as a string; most datasets' integers fit a double exactly, and a client
 * expects `42`, not `"42"`. So: integers are numbers when they are safe integers and strings
 * otherwise, decimals are numbers unless they carry more digits than a double holds, NaN and
 * ±Infinity (which JSON cannot carry) are strings, timestamps are ISO 8601 strings.
 */
import {
  DuckDBDecimalType,
  DuckDBTypeId,
  JsonDuckDBValueConverter,
  type DuckDBType,
  type DuckDBValue,
  type DuckDBValueConverter,
  type Json,
} from '@duckdb/node-api'

/** A value that survives JSON.stringify → JSON.parse unchanged. */
export type JsonValue = Json

/** A double represents every decimal of up to 15 significant digits exactly. */
const DOUBLE_SAFE_DIGITS = 15

function integerToJson(value: DuckDBValue): number | string {
  const big = typeof value === 'bigint' ? value : BigInt(String(value))
  return big >= BigInt(Number.MIN_SAFE_INTEGER) && big <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(big) : big.toString()
}

function floatToJson(value: DuckDBValue): number | string {
  const n = Number(value)
  return Number.isFinite(n) ? n : String(n)
}

/**
 * DuckDB prints timestamps as `2024-01-02 03:04:05.123456` (and `+00` for TIMESTAMPTZ);
 * ISO 8601 wants a `T` and a `+00:00` offset. Values DuckDB prints differently (infinity,
 * BC dates) are returned as DuckDB printed them.
 */
export function isoTimestamp(text: string): string {
  const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d+)?)([+-]\d\d)?(?::?(\d\d))?$/.exec(text)
  if (!m) return text
  const offset = m[3] === undefined ? '' : m[3] === '+00' && (m[4] === undefined || m[4] === '00') ? 'Z' : `${m[3]}:${m[4] ?? '00'}`
  return `${m[1]}T${m[2]}${offset}`
}

/** Converter passed to DuckDB's result readers; nested lists/structs recurse through it. */
export const jsonSafeConverter: DuckDBValueConverter<Json> = (value: DuckDBValue, type: DuckDBType, converter: DuckDBValueConverter<Json>) => {
  if (value === null || value === undefined) return null
  switch (type.typeId) {
    case DuckDBTypeId.BIGINT:
    case DuckDBTypeId.UBIGINT:
    case DuckDBTypeId.HUGEINT:
    case DuckDBTypeId.UHUGEINT:
    case DuckDBTypeId.BIGNUM:
      return integerToJson(value)
    case DuckDBTypeId.FLOAT:
    case DuckDBTypeId.DOUBLE:
      return floatToJson(value)
    case DuckDBTypeId.DECIMAL: {
      const text = String(value)
      const width = type instanceof DuckDBDecimalType ? type.width : Infinity
      return width <= DOUBLE_SAFE_DIGITS ? Number(text) : text
    }
    case DuckDBTypeId.TIMESTAMP:
    case DuckDBTypeId.TIMESTAMP_S:
    case DuckDBTypeId.TIMESTAMP_MS:
    case DuckDBTypeId.TIMESTAMP_NS:
    case DuckDBTypeId.TIMESTAMP_TZ:
      return isoTimestamp(String(value))
    default:
      return JsonDuckDBValueConverter(value, type, converter)
  }
}
