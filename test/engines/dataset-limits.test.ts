/**
 * The dataset engine's bounds, against real DuckDB in real worker processes: memory (the
 * process is killed past its budget and its memory goes with it), time (counted from arrival
 * for queries), result bytes, export size, fair slots between users, the dataset limits of
 * profiling (decompressed bytes, rows, columns, time, memory) and of an upload's first bytes,
 * and the server paths a query could read from DuckDB's catalog.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { AppError } from '../../src/core/errors.ts'
import { DuckDBDatasetEngine } from '../../src/engines/datasets/duckdb.ts'
import type { DatasetEngineOptions } from '../../src/engines/datasets/engine.ts'
import { QueryTimeoutError } from '../../src/engines/datasets/errors.ts'
import { checkDatasetLimits, detectFormat } from '../../src/engines/datasets/format.ts'
import { wideCsv, writeGzipBomb } from '../../bench/support/abuse-datakits.ts'
import { sampleRows, tempDir, writeCsv, writeLargeCsv, writeNdjson } from '../support/datasets.ts'

const dir = tempDir('quadrax-dataset-limits-')
const engines: DuckDBDatasetEngine[] = []
/** An engine of its own for a test (closed at the end), its scratch space under `dir`. */
function engineWith(options: Partial<DatasetEngineOptions> = {}): DuckDBDatasetEngine {
  const e = new DuckDBDatasetEngine({ tempDirectory: dir.file(`tmp-${engines.length}`), ...options })
  engines.push(e)
  return e
}
let parquet: string

beforeAll(async () => {
  parquet = dir.file('sample.parquet')
  await engineWith().toParquet(await writeCsv(dir.file('sample.csv'), sampleRows(200)), parquet, 'csv', { user: 'setup' })
})
afterAll(async () => {
  await Promise.all(engines.map((e) => e.close()))
  dir[Symbol.dispose]()
})

async function rejection(p: Promise<unknown>): Promise<AppError> {
  try {
    await p
  } catch (err) {
    return err as AppError
  }
  throw new Error('expected the promise to reject')
}

/** `{ status, code, limit }` of an engine error, for one toEqual. */
const bound = (err: AppError) => ({ status: err.status, code: err.code, limit: err.details.find((d) => d.field === 'limit')?.message })

const rssOf = (pid: number): number => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024
const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}
const MB = 1024 * 1024
/** A query that runs until it is stopped, in little memory (range() streams; the filter is never true). */
const ENDLESS = 'SELECT count(*) AS n FROM range(1000000000000000) t(i) WHERE hash(i) = 0 AND i < 0'

describe('query memory', () => {
  test('a query past DATAKIT_QUERY_MEMORY_MB is stopped with a 422 naming it; its worker and its memory are gone, the next query works', async () => {
    const e = engineWith({ queryMemoryMb: 256, interactiveConcurrency: 1 })
    expect((await e.query(parquet, 'SELECT 42 AS x', { user: 'a' })).rows).toEqual([{ x: 42 }])
    const [worker] = e.workerPids()
    Bun.gc(true)
    const ownBefore = rssOf(process.pid)
    let workerPeak = 0
    let ownPeak = 0
    const sample = setInterval(() => {
      ownPeak = Math.max(ownPeak, rssOf(process.pid))
      if (alive(worker!)) workerPeak = Math.max(workerPeak, rssOf(worker!))
    }, 5)
    // 8 GB of list in one DuckDB, whatever its memory_limit (issue 14, item 1).
    const err = await rejection(e.query(parquet, 'SELECT list_sum(range(1000000000)) AS s', { user: 'a', timeoutMs: 60_000 }))
    clearInterval(sample)
    expect(bound(err)).toEqual({ status: 422, code: 'query_memory_exceeded', limit: 'DATAKIT_QUERY_MEMORY_MB=256' })
    expect(err.message).toContain('DATAKIT_QUERY_MEMORY_MB')
    expect(alive(worker!)).toBe(false)
    console.log(`memory bomb: worker peak ${Math.round(workerPeak / MB)} MB (budget 256), this process ${Math.round(ownBefore / MB)} → ${Math.round(ownPeak / MB)} MB`)
    // Stopped near its budget (the overshoot is what it allocates between two checks), and
    // none of it ever was this process's.
    expect(workerPeak).toBeLessThan(512 * MB)
    expect(ownPeak - ownBefore).toBeLessThan(100 * MB)
    expect((await e.query(parquet, 'SELECT count(*) AS n FROM data', { user: 'a' })).rows).toEqual([{ n: 200 }])
    expect(e.workerPids()).not.toContain(worker)
  })

  test("DuckDB's own memory limit (an aggregate it cannot spill in the sandbox) is the same 422", async () => {
    const e = engineWith({ queryMemoryMb: 256 })
    const err = await rejection(e.query(parquet, 'SELECT count(DISTINCT i::VARCHAR || \'x\') FROM range(30000000) t(i)', { user: 'a', timeoutMs: 60_000 }))
    expect(bound(err)).toEqual({ status: 422, code: 'query_memory_exceeded', limit: 'DATAKIT_QUERY_MEMORY_MB=256' })
  })
})

describe('query time', () => {
  test('past the time limit the worker is stopped: a 422 naming DATAKIT_QUERY_TIMEOUT_MS, and the engine goes on', async () => {
    const e = engineWith()
    // DuckDB does not even see an interrupt inside range() for tens of seconds: killing does.
    const err = await rejection(e.query(parquet, 'SELECT list_sum(range(1000000000)) AS s', { user: 'a', timeoutMs: 300 }))
    expect(err).toBeInstanceOf(QueryTimeoutError)
    expect(bound(err)).toEqual({ status: 422, code: 'query_timeout', limit: 'DATAKIT_QUERY_TIMEOUT_MS=300' })
    expect((await e.query(parquet, 'SELECT 1 AS one', { user: 'a' })).rows).toEqual([{ one: 1 }])
  })

  test("the limit counts from arrival: a query waiting behind the same user's slow one times out in the queue", async () => {
    const e = engineWith({ interactiveConcurrency: 2, interactivePerUser: 1 })
    const slow = new AbortController()
    let slowSettled = false
    const running = e.query(parquet, ENDLESS, { user: 'b', timeoutMs: 120_000, signal: slow.signal })
    void running.catch(() => {}).finally(() => (slowSettled = true))
    const queued = await rejection(e.query(parquet, 'SELECT 1', { user: 'b', timeoutMs: 300 }))
    expect(slowSettled).toBe(false)
    expect(bound(queued)).toEqual({ status: 422, code: 'query_timeout', limit: 'DATAKIT_QUERY_TIMEOUT_MS=300' })
    expect(queued.message).toContain('waited')
    slow.abort(new Error('done'))
    expect((await rejection(running)).message).toBe('done')
  })
})

describe('result bytes', () => {
  test('rows stop before their JSON passes maxBytes; a 40 MB value is not even read', async () => {
    const e = engineWith()
    const wide = await e.query(parquet, "SELECT i, repeat('y', 1000) AS pad FROM range(100000) t(i)", { user: 'a', maxBytes: 256 * 1024 })
    expect(wide).toMatchObject({ truncated: true, truncatedBy: 'bytes' })
    expect(wide.rowCount).toBeGreaterThan(200)
    expect(JSON.stringify(wide.rows).length).toBeLessThanOrEqual(256 * 1024)
    const huge = await e.query(parquet, "SELECT repeat('x', 40000000) AS s", { user: 'a', maxBytes: 1024 * 1024 })
    expect(huge).toMatchObject({ rows: [], rowCount: 0, truncated: true, truncatedBy: 'bytes' })
    const many = await e.query(parquet, 'SELECT * FROM range(1000000) t(i)', { user: 'a', maxRows: 50 })
    expect(many).toMatchObject({ rowCount: 50, truncated: true, truncatedBy: 'rows' })
    expect(await e.query(parquet, 'SELECT 1 AS x', { user: 'a' })).toMatchObject({ truncated: false, truncatedBy: null })
  })

  test('a preview is held to the same bytes', async () => {
    const e = engineWith({ queryMaxBytes: 2000 })
    const p = await e.preview(parquet, 1000, 0, { user: 'a' })
    expect(p.truncated).toBe(true)
    expect(p.rows.length).toBeGreaterThan(0)
    expect(JSON.stringify(p.rows).length).toBeLessThanOrEqual(2000)
    expect(p.rows[0]).toMatchObject({ id: 1 })
  })
})

describe('query export', () => {
  test('the whole result as CSV (formula cells neutralised), Parquet or JSON, under the sandbox', async () => {
    const e = engineWith()
    const sql = "SELECT i, CASE WHEN i = 0 THEN '=cmd()' ELSE 'x' || i END AS label FROM range(100000) t(i)"
    const csv = await e.exportQuery(parquet, sql, 'csv', dir.file('q.csv'), { user: 'a' })
    expect(csv).toMatchObject({ path: dir.file('q.csv'), contentType: 'text/csv; charset=utf-8' })
    const lines = (await Bun.file(csv.path).text()).trimEnd().split('\n')
    expect(lines.length).toBe(100_001)
    expect(lines.slice(0, 3)).toEqual(['i,label', "0,'=cmd()", '1,x1'])
    const pq = await e.exportQuery(parquet, 'FROM data SELECT id, city;', 'parquet', dir.file('q.parquet'), { user: 'a' })
    expect(await detectFormat(pq.path)).toBe('parquet')
    expect((await e.preview(pq.path, 2, 0, { user: 'a' })).rows).toEqual([
      { id: 1, city: 'Lisbon' },
      { id: 2, city: 'Oslo' },
    ])
    const json = await e.exportQuery(parquet, 'SELECT id FROM data ORDER BY id LIMIT 3', 'json', dir.file('q.json'), { user: 'a' })
    expect(JSON.parse(await Bun.file(json.path).text())).toEqual([{ id: 1 }, { id: 2 }, { id: 3 }])
    for (const refused of [`COPY data TO '${dir.file('stolen.csv')}'`, "SELECT * FROM read_csv('/etc/passwd')", 'SELECT 1; SELECT 2']) {
      expect((await rejection(e.exportQuery(parquet, refused, 'csv', dir.file('refused.csv'), { user: 'a' }))).status).toBe(422)
    }
    expect(existsSync(dir.file('stolen.csv'))).toBe(false)
    expect(existsSync(dir.file('refused.csv'))).toBe(false)
  })

  test('an export that outgrows maxBytes is stopped (413 naming DATAKIT_EXPORT_MAX_BYTES) and leaves no file', async () => {
    const e = engineWith()
    const out = dir.file('too-big.csv')
    const err = await rejection(e.exportQuery(parquet, "SELECT i, repeat('z', 500) AS pad FROM range(10000000) t(i)", 'csv', out, { user: 'a', maxBytes: 4 * MB, timeoutMs: 60_000 }))
    expect(bound(err)).toEqual({ status: 413, code: 'export_too_large', limit: `DATAKIT_EXPORT_MAX_BYTES=${4 * MB}` })
    expect(existsSync(out)).toBe(false)
  })
})

describe('fair slots', () => {
  test("one user's backlog does not hold another's first query back; past the per-user queue, 429", async () => {
    const e = engineWith({ interactiveConcurrency: 2, interactivePerUser: 1, interactiveQueuePerUser: 2 })
    const stop = new AbortController()
    let pending = 0
    const heavy = Array.from({ length: 3 }, () => {
      pending++
      const p = e.query(parquet, ENDLESS, { user: 'heavy', timeoutMs: 120_000, signal: stop.signal })
      void p.catch(() => {}).finally(() => pending--)
      return p
    })
    // One running and two waiting: a fourth is refused at once.
    const refused = await rejection(e.query(parquet, 'SELECT 1', { user: 'heavy' }))
    expect(bound(refused)).toEqual({ status: 429, code: 'too_many_queued', limit: 'DATAKIT_QUERY_QUEUE_PER_USER=2' })
    expect(refused.headers['retry-after']).toBe('1')
    // The light user gets the other slot while all three are still there.
    expect((await e.query(parquet, 'SELECT 1 AS one', { user: 'light' })).rows).toEqual([{ one: 1 }])
    expect(pending).toBe(3)
    stop.abort(new Error('enough'))
    for (const p of heavy) expect((await rejection(p)).message).toBe('enough')
  })

  test('profiling is shared the same way: one owner’s uploads do not hold another’s back', async () => {
    const e = engineWith({ backgroundConcurrency: 1, backgroundPerUser: 1 })
    const big = await writeLargeCsv(dir.file('big.csv'), 30_000)
    const small = await writeCsv(dir.file('small.csv'), sampleRows(20))
    const order: string[] = []
    const jobs = [
      ...[1, 2, 3, 4].map((i) => e.profile(big, 'csv', { user: 'heavy', parquetPath: dir.file(`big-${i}.parquet`) }).then(() => order.push(`heavy${i}`))),
      e.profile(small, 'csv', { user: 'light', parquetPath: dir.file('small.parquet') }).then(() => order.push('light')),
    ]
    await Promise.all(jobs)
    // In arrival order (a plain queue) the light upload would come last. Shared fairly, the
    // users take turns: heavy's next one was already waiting its turn when light's arrived.
    expect(order).toEqual(['heavy1', 'heavy2', 'light', 'heavy3', 'heavy4'])
  })
})

describe('profiling limits', () => {
  test('more rows than DATAKIT_MAX_ROWS: 422 naming it, no Parquet copy left', async () => {
    const e = engineWith({ limits: { maxRows: 150, maxColumns: 1000, maxDecompressedBytes: 1 << 30 } })
    const src = await writeCsv(dir.file('rows.csv'), sampleRows(200))
    const out = dir.file('rows.parquet')
    const err = await rejection(e.profile(src, 'csv', { user: 'a', parquetPath: out }))
    expect(bound(err)).toEqual({ status: 422, code: 'too_many_rows', limit: 'DATAKIT_MAX_ROWS=150' })
    expect(readdirSync(dir.path).filter((n) => n.startsWith('rows.parquet'))).toEqual([])
    // Exactly the limit is fine.
    expect((await engineWith({ limits: { maxRows: 200, maxColumns: 1000, maxDecompressedBytes: 1 << 30 } }).profile(src, 'csv', { user: 'a', parquetPath: out })).rowCount).toBe(200)
  })

  test('more columns than DATAKIT_MAX_COLUMNS (JSON: only the reader sees them): 422 naming it', async () => {
    const e = engineWith({ limits: { maxRows: 1000, maxColumns: 20, maxDecompressedBytes: 1 << 30 } })
    const row = Object.fromEntries(Array.from({ length: 30 }, (_, i) => [`k${i}`, i]))
    const src = await writeNdjson(dir.file('wide.ndjson'), [row, row])
    const err = await rejection(e.profile(src, 'ndjson', { user: 'a', parquetPath: dir.file('wide.parquet') }))
    expect(bound(err)).toEqual({ status: 422, code: 'too_many_columns', limit: 'DATAKIT_MAX_COLUMNS=20' })
    expect(err.message).toContain('30 columns')
  })

  test('a gzip stream that inflates past DATAKIT_MAX_DECOMPRESSED_BYTES is stopped while it is decompressed (413)', async () => {
    // Two members: a big one, then a tiny one whose trailer is all an upload check can read.
    await writeGzipBomb(dir.file('bomb-a.gz'), 8 * MB)
    const tiny = Bun.gzipSync(new TextEncoder().encode('1,2\n'))
    writeFileSync(dir.file('bomb.csv.gz'), Buffer.concat([readFileSync(dir.file('bomb-a.gz')), tiny]))
    const limits = { maxRows: 100_000_000, maxColumns: 1000, maxDecompressedBytes: 2 * MB }
    await checkDatasetLimits(dir.file('bomb.csv.gz'), 'csv.gz', limits)
    const e = engineWith({ limits })
    const err = await rejection(e.profile(dir.file('bomb.csv.gz'), 'csv.gz', { user: 'a', parquetPath: dir.file('bomb.parquet') }))
    expect(bound(err)).toEqual({ status: 413, code: 'dataset_too_large', limit: `DATAKIT_MAX_DECOMPRESSED_BYTES=${2 * MB}` })
    expect(existsSync(dir.file('bomb.parquet'))).toBe(false)
  })

  test('a gzip bomb with many short rows ends at DATAKIT_MAX_ROWS, without reading the rest', async () => {
    await writeGzipBomb(dir.file('rows.csv.gz'), 64 * MB)
    const e = engineWith({ limits: { maxRows: 1000, maxColumns: 1000, maxDecompressedBytes: 1 << 30 } })
    const err = await rejection(e.profile(dir.file('rows.csv.gz'), 'csv.gz', { user: 'a', parquetPath: dir.file('rows-gz.parquet') }))
    expect(bound(err)).toEqual({ status: 422, code: 'too_many_rows', limit: 'DATAKIT_MAX_ROWS=1000' })
  })

  test('profiling past DATAKIT_PROFILE_TIMEOUT_MS is stopped: 422 naming it, no copy left', async () => {
    const e = engineWith({ profileTimeoutMs: 50 })
    const src = await writeLargeCsv(dir.file('slow.csv'), 300_000)
    const err = await rejection(e.profile(src, 'csv', { user: 'a', parquetPath: dir.file('slow.parquet') }))
    expect(bound(err)).toEqual({ status: 422, code: 'profile_timeout', limit: 'DATAKIT_PROFILE_TIMEOUT_MS=50' })
    expect(readdirSync(dir.path).filter((n) => n.startsWith('slow.parquet'))).toEqual([])
  })

  test('profiling past DATAKIT_PROFILE_MEMORY_MB is stopped: 422 naming it', async () => {
    const e = engineWith({ profileMemoryMb: 128, limits: { maxRows: 1_000_000, maxColumns: 10_000, maxDecompressedBytes: 1 << 30 } })
    await Bun.write(dir.file('wide.csv'), wideCsv(3000, 50))
    const err = await rejection(e.profile(dir.file('wide.csv'), 'csv', { user: 'a', parquetPath: dir.file('wide-mem.parquet') }))
    expect(bound(err)).toEqual({ status: 422, code: 'profile_memory_exceeded', limit: 'DATAKIT_PROFILE_MEMORY_MB=128' })
  })

  test('a 1,000-column CSV (the default DATAKIT_MAX_COLUMNS) profiles within the default budget', async () => {
    const e = engineWith()
    await Bun.write(dir.file('wide-ok.csv'), wideCsv(1000, 200))
    const p = await e.profile(dir.file('wide-ok.csv'), 'csv', { user: 'a', parquetPath: dir.file('wide-ok.parquet') })
    expect({ rows: p.rowCount, columns: p.columns.length }).toEqual({ rows: 200, columns: 1000 })
  })
})

describe('upload-time checks', () => {
  const limits = { maxDecompressedBytes: 4 * MB, maxColumns: 1000 }

  test('a 5,000-column CSV is refused from its header (422 naming DATAKIT_MAX_COLUMNS)', async () => {
    await Bun.write(dir.file('w5000.csv'), wideCsv(5000, 3))
    const err = await rejection(checkDatasetLimits(dir.file('w5000.csv'), 'csv', limits))
    expect(bound(err)).toEqual({ status: 422, code: 'too_many_columns', limit: 'DATAKIT_MAX_COLUMNS=1000' })
    expect(err.message).toContain('5000 columns')
    // A header longer than the head that is read: refused as "more than".
    await Bun.write(dir.file('w-long.tsv'), `${Array.from({ length: 20_000 }, (_, i) => `column_${i}`).join('\t')}\n1\n`)
    expect((await rejection(checkDatasetLimits(dir.file('w-long.tsv'), 'tsv', limits))).message).toContain('more than 1000 columns')
    await checkDatasetLimits(dir.file('sample.csv'), 'csv', limits)
  })

  test("a gzip file whose trailer says it inflates past DATAKIT_MAX_DECOMPRESSED_BYTES is refused (413) without inflating it", async () => {
    await writeGzipBomb(dir.file('trailer.csv.gz'), 16 * MB)
    const err = await rejection(checkDatasetLimits(dir.file('trailer.csv.gz'), 'csv.gz', limits))
    expect(bound(err)).toEqual({ status: 413, code: 'dataset_too_large', limit: `DATAKIT_MAX_DECOMPRESSED_BYTES=${4 * MB}` })
    expect(err.message).toContain(`at least ${16 * MB} bytes`)
    await writeGzipBomb(dir.file('fits.csv.gz'), 1 * MB)
    await checkDatasetLimits(dir.file('fits.csv.gz'), 'csv.gz', limits)
  })
})

describe('server paths', () => {
  test("catalog functions show none of the server's paths: home, temp, extensions, secrets, the dataset's file", async () => {
    const e = engineWith()
    const secret = [homedir(), dir.path, parquet].filter((p) => p.length > 1)
    const probes = [
      'SELECT name, value FROM duckdb_settings()',
      "SELECT current_setting('home_directory') AS h, current_setting('temp_directory') AS t, current_setting('extension_directory') AS x, current_setting('secret_directory') AS s, current_setting('allowed_paths') AS a",
      'SELECT * FROM duckdb_secrets()',
      'SELECT * FROM duckdb_extensions()',
      'SELECT * FROM duckdb_databases()',
      'SELECT sql FROM duckdb_views()',
      'SELECT * FROM duckdb_temporary_files()',
    ]
    for (const sql of probes) {
      const answer = await e.query(parquet, sql, { user: 'a' }).then(
        (r) => JSON.stringify(r.rows),
        (err: AppError) => err.message,
      )
      for (const s of secret) expect({ sql, leaks: answer.includes(s) }).toEqual({ sql, leaks: false })
    }
    expect((await e.query(parquet, 'SELECT * FROM duckdb_secrets()', { user: 'a' })).rows).toEqual([])
    const exported = await e.exportQuery(parquet, 'SELECT name, value FROM duckdb_settings()', 'csv', dir.file('settings.csv'), { user: 'a' })
    const text = await Bun.file(exported.path).text()
    for (const s of secret) expect(text.includes(s)).toBe(false)
  })
})
