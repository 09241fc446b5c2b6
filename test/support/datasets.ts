/**
 * Generators of dataset files for the DataKits tests and benchmarks: the same deterministic
 * rows written as CSV, TSV, JSON array, NDJSON, Parquet and gzip, plus files that only pretend
 * to be datasets (PNG, ZIP, ELF, random bytes). Parquet is written by DuckDB itself (there is
 * no other Parquet writer here), straight through @duckdb/node-api, not through the engine
 * under test.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { DuckDBInstance } from '@duckdb/node-api'

export interface TempDir {
  path: string
  file(name: string): string
  [Symbol.dispose](): void
}

/** A throw-away directory, removed on dispose: `using dir = tempDir()`. */
export function tempDir(prefix = 'quadrax-datasets-'): TempDir {
  const path = mkdtempSync(join(tmpdir(), prefix))
  return { path, file: (name) => join(path, name), [Symbol.dispose]: () => rmSync(path, { recursive: true, force: true }) }
}

// A type alias, not an interface: aliases are assignable to Record<string, unknown>.
export type SampleRow = {
  id: number
  name: string
  city: string
  amount: number
  joined: string
  active: boolean
  note: string | null
}

export const CITIES = ['Lisbon', 'Oslo', 'Lima', 'Kyoto'] as const

/**
 * `n` deterministic rows. City cycles through CITIES (so counts are n/4 each when n % 4 == 0),
 * amount = id * 1.5, joined is 2024-01-01 plus id % 28 days, every 5th note is NULL.
 */
export function sampleRows(n: number): SampleRow[] {
  return Array.from({ length: n }, (_, i) => ({
    id: i + 1,
    name: `user ${i + 1}`,
    city: CITIES[i % CITIES.length]!,
    amount: (i + 1) * 1.5,
    joined: `2024-01-${String((i % 28) + 1).padStart(2, '0')}`,
    active: i % 2 === 0,
    note: i % 5 === 4 ? null : `note, "quoted" ${i + 1}`,
  }))
}

/** One delimited field, quoted per RFC 4180 when it needs to be. */
export function field(v: unknown, delim = ','): string {
  if (v === null || v === undefined) return ''
  const s = String(v)
  return s.includes(delim) || s.includes('"') || s.includes('\n') || s.includes('\r') ? `"${s.replaceAll('"', '""')}"` : s
}

export function toDelimited(rows: readonly Record<string, unknown>[], delim = ','): string {
  if (rows.length === 0) return ''
  const cols = Object.keys(rows[0]!)
  const lines = [cols.map((c) => field(c, delim)).join(delim), ...rows.map((r) => cols.map((c) => field(r[c], delim)).join(delim))]
  return lines.join('\n') + '\n'
}

export async function writeCsv(path: string, rows: readonly Record<string, unknown>[]): Promise<string> {
  await Bun.write(path, toDelimited(rows, ','))
  return path
}

export async function writeTsv(path: string, rows: readonly Record<string, unknown>[]): Promise<string> {
  await Bun.write(path, toDelimited(rows, '\t'))
  return path
}

export async function writeJsonArray(path: string, rows: readonly Record<string, unknown>[]): Promise<string> {
  await Bun.write(path, JSON.stringify(rows, null, 1))
  return path
}

export async function writeNdjson(path: string, rows: readonly Record<string, unknown>[]): Promise<string> {
  await Bun.write(path, rows.map((r) => JSON.stringify(r)).join('\n') + '\n')
  return path
}

/** gzip `src` into `dest` (any content: used for text formats and for "gzip of PNG" cases). */
export async function gzipFile(src: string, dest: string): Promise<string> {
  await Bun.write(dest, Bun.gzipSync(await Bun.file(src).bytes()))
  return dest
}

/** Run SQL on a throw-away DuckDB (to write Parquet fixtures with exact types); its rows as JSON. */
export async function duckdb(sql: string): Promise<Record<string, unknown>[]> {
  const instance = await DuckDBInstance.create(':memory:', { threads: '1' })
  const c = await instance.connect()
  try {
    return (await c.runAndReadAll(sql)).getRowObjectsJson()
  } finally {
    c.closeSync()
    instance.closeSync()
  }
}

export async function writeParquet(path: string, rows: readonly Record<string, unknown>[]): Promise<string> {
  const json = `${path}.src.ndjson`
  await writeNdjson(json, rows)
  try {
    const q = (s: string) => `'${s.replaceAll("'", "''")}'`
    await duckdb(`COPY (SELECT * FROM read_json(${q(json)}, format='newline_delimited')) TO ${q(path)} (FORMAT parquet)`)
  } finally {
    rmSync(json, { force: true })
  }
  return path
}

/** Files that are not datasets, whatever their name says. */
export const NOT_DATASETS = {
  png: new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 0x0d, 0x49, 0x48, 0x44, 0x52, 0, 0, 0, 1, 0, 0, 0, 1, 8, 6, 0, 0, 0]),
  zip: new Uint8Array([0x50, 0x4b, 0x03, 0x04, 0x14, 0, 0, 0, 8, 0, 0x21, 0x00, 0x5a, 0x1b, 0x9e, 0x58, 0, 0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0]),
  elf: new Uint8Array([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0x3e, 0, 1, 0, 0, 0]),
  /** Deterministic noise: high bytes and NULs, like any compressed or encrypted payload. */
  random: Uint8Array.from({ length: 4096 }, (_, i) => (i * 2654435761) >>> 24),
} as const

/**
 * A large CSV written in 1 MiB pieces (for benchmarks): id, name (50,000 distinct), category
 * (5 values), amount, created (date), active (bool), score (1 in 7 empty).
 */
export async function writeLargeCsv(path: string, rows: number): Promise<string> {
  const w = Bun.file(path).writer()
  w.write('id,name,category,amount,created,active,score\n')
  const cats = ['alpha', 'beta', 'gamma', 'delta', 'epsilon']
  let x = 12345
  const rnd = () => (x = (x * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff
  const day0 = Date.UTC(2020, 0, 1)
  let buf = ''
  for (let i = 0; i < rows; i++) {
    const d = new Date(day0 + Math.floor(rnd() * 1000) * 86_400_000).toISOString().slice(0, 10)
    buf += `${i},user_${Math.floor(rnd() * 50_000)},${cats[i % 5]},${(rnd() * 1000).toFixed(2)},${d},${rnd() < 0.5},${i % 7 === 0 ? '' : Math.floor(rnd() * 100)}\n`
    if (buf.length > 1 << 20) {
      w.write(buf)
      buf = ''
    }
  }
  w.write(buf)
  await w.end()
  return path
}
