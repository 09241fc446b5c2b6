/**
 * The dataset engine's bounds, against real DuckDB in real worker processes: memory (the
 * process is killed past its budget and its memory goes with it), time (counted from arrival
 * for queries), result bytes, export size, fair slots between users, the dataset limits of
 * profiling (decompressed bytes, rows, columns, time, memory) and of an upload's first bytes,
 * and the server paths a query could read from DuckDB's catalog.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, mkdirSync, readdirSync, readFileSync, utimesSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { homedir } from 'node:os'
import { AppError } from '../../src/core/errors.ts'
import { DuckDBDatasetEngine } from '../../src/engines/datasets/duckdb.ts'
import type { DatasetEngineOptions } from '../../src/engines/datasets/engine.ts'
import { QueryMemoryError, QueryTimeoutError } from '../../src/engines/datasets/errors.ts'
import { checkDatasetLimits, detectFormat } from '../../src/engines/datasets/format.ts'
import { WorkerPool, type RunLimits } from '../../src/engines/datasets/worker-pool.ts'
import { wideCsv, writeGzipBomb } from '../../bench/support/abuse-datakits.ts'
import { sampleRows, tempDir, writeCsv, writeLargeCsv, writeNdjson } from '../support/datasets.ts'
import { until } from '../support/until.ts'
import { alive } from '../support/processes.ts'

const dir = tempDir('quadrax-dataset-limits-')
const engines: DuckDBDatasetEngine[] = []
const pools: WorkerPool[] = []
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
  await Promise.all([...engines, ...pools].map((e) => e.close()))
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
const vmDataOf = (pid: number): number => Number(/^VmData:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024
/** The RLIMIT_DATA (soft) of a process, bytes; Infinity when unlimited. */
const dataLimit = (pid: number): number => {
  const v = /^Max data size\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'))?.[1]
  return v === undefined || v === 'unlimited' ? Infinity : Number(v)
}
const MB = 1024 * 1024
/** A query's rows as the JSON text they are. */
const text = (bytes: Uint8Array) => new TextDecoder().decode(bytes)
/** A query that runs until it is stopped, in little memory (range() streams; the filter is never true). */
const ENDLESS = 'SELECT count(*) AS n FROM range(1000000000000000) t(i) WHERE hash(i) = 0 AND i < 0'

describe('query memory', () => {
  test('the memory bomb of issue 14 (list_sum(range(1000000000))) at the default budget: a 422 naming DATAKIT_QUERY_MEMORY_MB; its worker is gone, none of it was this process’s', async () => {
    const e = engineWith({ interactiveConcurrency: 1 })
    expect((await e.query(parquet, 'SELECT 42 AS x', { user: 'a' })).rows).toEqual([{ x: 42 }])
    const [worker] = e.workerPids()
    // The kernel's ceiling (rlimit.ts): what the worker had mapped once ready, plus its budget.
    const headroom = dataLimit(worker!) - vmDataOf(worker!)
    expect(headroom).toBeGreaterThan(0)
    expect(headroom).toBeLessThanOrEqual(512 * MB)
    Bun.gc(true)
    const ownBefore = rssOf(process.pid)
    let workerPeak = 0
    let ownPeak = 0
    const sample = setInterval(() => {
      ownPeak = Math.max(ownPeak, rssOf(process.pid))
      if (alive(worker!)) workerPeak = Math.max(workerPeak, rssOf(worker!))
    }, 5)
    const started = performance.now()
    // 8 GB of list in one DuckDB, whatever its memory_limit: 8.1 GB of server RSS before the workers.
    const err = await rejection(e.query(parquet, 'SELECT list_sum(range(1000000000)) AS s', { user: 'a' }))
    const ms = performance.now() - started
    clearInterval(sample)
    // A memory error, not a timeout: it ended within DATAKIT_QUERY_TIMEOUT_MS.
    expect(bound(err)).toEqual({ status: 422, code: 'query_memory_exceeded', limit: 'DATAKIT_QUERY_MEMORY_MB=512' })
    expect(err.message).toContain('DATAKIT_QUERY_MEMORY_MB')
    expect(alive(worker!)).toBe(false)
    console.log(`memory bomb: ${Math.round(ms)} ms to the error, worker peak ${Math.round(workerPeak / MB)} MB (budget 512), this process ${Math.round(ownBefore / MB)} → ${Math.round(ownPeak / MB)} MB`)
    expect(workerPeak).toBeLessThan(512 * MB)
    expect(ownPeak - ownBefore).toBeLessThan(100 * MB)
    expect((await e.query(parquet, 'SELECT count(*) AS n FROM data', { user: 'a' })).rows).toEqual([{ n: 200 }])
    expect(e.workerPids()).not.toContain(worker)
  })

  test('memory that grows in small steps is stopped at the budget too (the pool’s watch of the resident set, or the kernel’s ceiling)', async () => {
    const e = engineWith({ queryMemoryMb: 256, interactiveConcurrency: 1 })
    await e.query(parquet, 'SELECT 1', { user: 'a' })
    const [worker] = e.workerPids()
    let peak = 0
    const sample = setInterval(() => alive(worker!) && (peak = Math.max(peak, rssOf(worker!))), 2)
    // Ten million short strings in one list: many small allocations, none of them large.
    const err = await rejection(e.query(parquet, "SELECT length(list(repeat('x', 100) || i)) AS n FROM range(10000000) t(i)", { user: 'a', timeoutMs: 60_000 }))
    clearInterval(sample)
    expect(bound(err)).toEqual({ status: 422, code: 'query_memory_exceeded', limit: 'DATAKIT_QUERY_MEMORY_MB=256' })
    expect(alive(worker!)).toBe(false)
    expect(peak).toBeLessThan(256 * MB + 64 * MB)
  })

  test("DuckDB's own memory limit (an aggregate it cannot spill in the sandbox) is the same 422", async () => {
    const e = engineWith({ queryMemoryMb: 256 })
    const err = await rejection(e.query(parquet, 'SELECT count(DISTINCT i::VARCHAR || \'x\') FROM range(30000000) t(i)', { user: 'a', timeoutMs: 60_000 }))
    expect(bound(err)).toEqual({ status: 422, code: 'query_memory_exceeded', limit: 'DATAKIT_QUERY_MEMORY_MB=256' })
    // DuckDB's words stay with it, for the log (the client is told the setting only).
    expect((err.cause as Error).message).toContain('Out of Memory')
    expect(err.message).not.toContain('Out of Memory')
  })
})

describe('query time', () => {
  test('past the time limit the worker is stopped: a 422 naming DATAKIT_QUERY_TIMEOUT_MS, and the engine goes on', async () => {
    const e = engineWith({ interactiveConcurrency: 1 })
    await e.query(parquet, 'SELECT 1', { user: 'a' })
    const [worker] = e.workerPids()
    // Runs until stopped, in little memory: only the time limit ends it, by killing the worker.
    const err = await rejection(e.query(parquet, ENDLESS, { user: 'a', timeoutMs: 1000 }))
    expect(err).toBeInstanceOf(QueryTimeoutError)
    expect(bound(err)).toEqual({ status: 422, code: 'query_timeout', limit: 'DATAKIT_QUERY_TIMEOUT_MS=1000' })
    expect(alive(worker!)).toBe(false)
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

  test('wide rows at the default limits come back truncated at DATAKIT_QUERY_MAX_BYTES, not as a memory error', async () => {
    // 10 KB a row: DuckDB's default streaming buffer computed ~400 MB of them ahead of the
    // first fetch, past the 512 MB budget (the "wide results reached 1.2 GB").
    const e = engineWith({ interactiveConcurrency: 1 })
    await e.query(parquet, 'SELECT 1', { user: 'a' })
    const [worker] = e.workerPids()
    let peak = 0
    const sample = setInterval(() => alive(worker!) && (peak = Math.max(peak, rssOf(worker!))), 2)
    const r = await e.query(parquet, "SELECT i, repeat('x', 10000) AS pad FROM range(1000000) t(i)", { user: 'a' })
    clearInterval(sample)
    expect(r).toMatchObject({ truncated: true, truncatedBy: 'bytes' })
    expect(r.rowsJson.byteLength).toBeLessThanOrEqual(8 * MB)
    expect(r.rowCount).toBeGreaterThan(800)
    console.log(`wide rows: ${r.rowCount} rows, ${r.rowsJson.byteLength} bytes of JSON, worker peak ${Math.round(peak / MB)} MB (budget 512)`)
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

describe('worker churn', () => {
  /** The interactive pool as the engine makes it at the default limits (DATAKIT_QUERY_CONCURRENCY=2, per user 1). */
  function queryPool(replacementIntervalMs?: number): WorkerPool {
    const pool = new WorkerPool({ size: 2, perUser: 1, memoryMb: 512, threads: 1, spareInstance: true, sandbox: true, duckdbMemoryLimit: '1GB', tempDirectory: dir.file(`tmp-pool-${pools.length}`), deadlineFromArrival: true, replacementIntervalMs })
    pools.push(pool)
    return pool
  }
  /** `sql` for `user`: its answer (or error code), the pid of the worker that ran it, and whether that worker was ready when taken. */
  async function served(pool: WorkerPool, user: string, sql: string, timeoutMs = 10_000) {
    let worker: { pid: number; warm: boolean } | undefined
    const limits: RunLimits = {
      timeoutMs,
      timeoutError: (queued) => new QueryTimeoutError(timeoutMs, queued),
      memoryError: () => new QueryMemoryError(512),
      onWorker: (pid, warm) => (worker = { pid, warm }),
    }
    const answer = await pool.run(user, { kind: 'query', parquetPath: parquet, sql, maxRows: 10, maxBytes: MB }, limits).then(
      (r) => text(r.rowsJson),
      (err: AppError) => err.code,
    )
    return { answer, ...worker! }
  }

  test("a user whose query got its worker killed waits for that worker's replacement; another user's next query still finds a warm one", async () => {
    const pool = queryPool()
    // Both users' workers ready and idle.
    await Promise.all([served(pool, 'abuser', 'SELECT 1'), served(pool, 'light', 'SELECT 1')])
    // Over the memory budget (the kernel's RLIMIT_DATA refuses it), then past the time limit (killed).
    for (const [sql, timeoutMs, code] of [
      ['SELECT list_sum(range(1000000000)) AS s', 10_000, 'query_memory_exceeded'],
      [ENDLESS, 500, 'query_timeout'],
    ] as const) {
      const before = pool.pids()
      const abuse = await served(pool, 'abuser', sql, timeoutMs)
      expect(abuse.answer).toBe(code)
      expect(alive(abuse.pid)).toBe(false)
      // The abuser's next query, and right behind it the light user's `select 1`.
      const [next, light] = await Promise.all([served(pool, 'abuser', 'SELECT 2 AS two'), served(pool, 'light', 'SELECT 1 AS one')])
      expect({ answer: next.answer, startedSince: !before.includes(next.pid) }).toEqual({ answer: '[{"two":2}]', startedSince: true })
      expect({ answer: light.answer, warm: light.warm, existedBefore: before.includes(light.pid) }).toEqual({ answer: '[{"one":1}]', warm: true, existedBefore: true })
      // Bounded: DATAKIT_QUERY_CONCURRENCY workers and one spare.
      expect(pool.pids().length).toBeLessThanOrEqual(3)
    }
  })

  test('replacements are paced per user: past two at once, the next query of a user whose queries keep getting their worker stopped waits for one; no one else waits', async () => {
    const BOMB = 'SELECT list_sum(range(1000000000)) AS s'
    // A pace of one a minute: the third replacement is held back for the whole test.
    const pool = queryPool(60_000)
    await Promise.all([served(pool, 'abuser', 'SELECT 1'), served(pool, 'light', 'SELECT 1')])
    for (let i = 0; i < 3; i++) expect((await served(pool, 'abuser', BOMB)).answer).toBe('query_memory_exceeded')
    const before = pool.pids()
    // The abuser's next query waits for the held-back start until its time runs out (a 422 that
    // says it waited to start); the light user's, sent after it, is answered by a warm worker.
    const held = served(pool, 'abuser', 'SELECT 2 AS two', 300)
    const light = await served(pool, 'light', 'SELECT 1 AS one')
    expect({ answer: light.answer, warm: light.warm }).toEqual({ answer: '[{"one":1}]', warm: true })
    expect((await held).answer).toBe('query_timeout')
    // Nothing was started for the abuser meanwhile.
    expect(pool.pids().filter((pid) => !before.includes(pid))).toEqual([])

    // At a pace the test can wait for, the held-back query runs once its replacement has started.
    const paced = queryPool(200)
    for (let i = 0; i < 3; i++) expect((await served(paced, 'abuser', BOMB)).answer).toBe('query_memory_exceeded')
    const next = await served(paced, 'abuser', 'SELECT 2 AS two')
    expect({ answer: next.answer, warm: next.warm }).toEqual({ answer: '[{"two":2}]', warm: false })
  })

  test("worker processes run below the server's scheduling priority, every thread of them", async () => {
    const pool = queryPool()
    const { pid } = await served(pool, 'a', 'SELECT sum(i) AS s FROM range(1000000) t(i)')
    /** Field 19 of /proc/<pid>/task/<tid>/stat (after the parenthesised name: index 16). */
    const niceOf = (p: number, tid: string) => Number(readFileSync(`/proc/${p}/task/${tid}/stat`, 'utf8').split(') ')[1]!.split(' ')[16])
    const own = niceOf(process.pid, String(process.pid))
    const threads = readdirSync(`/proc/${pid}/task`).map((tid) => niceOf(pid, tid))
    expect(threads.length).toBeGreaterThan(1)
    expect(threads.filter((nice) => nice <= own)).toEqual([])
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
    // Refused once in a local run of several files (not reproduced since): what ran out is in the failure.
    const p = await e.profile(dir.file('wide-ok.csv'), 'csv', { user: 'a', parquetPath: dir.file('wide-ok.parquet') }).catch((err: AppError) => {
      throw new Error(`${err.message} — cause: ${err.cause instanceof Error ? err.cause.message : String(err.cause)}`)
    })
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

describe('answer pace (DATAKIT_QUERY_BYTES_PER_SECOND)', () => {
  /** Three rows of ~510 bytes of JSON each. */
  const WIDE = "SELECT i, repeat('x', 500) AS pad FROM range(3) t(i)"

  test("past the burst, a user's next query that could not start within its time limit is a 429 naming the pace; another user's is answered", async () => {
    // A burst of 2 KB (DATAKIT_QUERY_MAX_BYTES), then one byte a second: never paid back here.
    const e = engineWith({ queryBytesPerSecond: 1, queryMaxBytes: 2048 })
    expect((await e.query(parquet, WIDE, { user: 'heavy' })).rowCount).toBe(3)
    // Previews count too: this one is cut at the 2 KB, which takes the user past the burst.
    expect((await e.preview(parquet, 1000, 0, { user: 'heavy' })).truncated).toBe(true)
    const refused = await rejection(e.query(parquet, 'SELECT 1 AS one', { user: 'heavy' }))
    expect(bound(refused)).toEqual({ status: 429, code: 'answer_rate_exceeded', limit: 'DATAKIT_QUERY_BYTES_PER_SECOND=1' })
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(60)
    expect(text((await e.query(parquet, 'SELECT 1 AS one', { user: 'light' })).rowsJson)).toBe('[{"one":1}]')
  })

  test("a paced query waits for the pace, then runs, and holds no slot meanwhile: another user's, sent after it, is answered first", async () => {
    // One slot: unpaced, the query sent first takes it and the other waits behind it. ~1.5 KB
    // past a burst of 100 bytes at 500 bytes a second: the paced query waits about 3 s, within
    // its 10 s time limit.
    const e = engineWith({ queryBytesPerSecond: 500, queryMaxBytes: 100, interactiveConcurrency: 1 })
    expect((await e.query(parquet, WIDE, { user: 'heavy', maxBytes: 2048 })).rowCount).toBe(3)
    const order: string[] = []
    const heavy = e.query(parquet, 'SELECT 2 AS two', { user: 'heavy' }).then((r) => (order.push('heavy'), text(r.rowsJson)))
    const light = e.query(parquet, 'SELECT 1 AS one', { user: 'light' }).then((r) => (order.push('light'), text(r.rowsJson)))
    expect(await Promise.all([heavy, light])).toEqual(['[{"two":2}]', '[{"one":1}]'])
    expect(order).toEqual(['light', 'heavy'])
  })
})

describe('scratch space', () => {
  test('scratch left by a server that died mid-operation is removed at start, once older than any operation may run', async () => {
    const tmp = dir.file('tmp-crashed')
    for (const name of ['op-stale', 'op-recent']) mkdirSync(join(tmp, name, 'spill'), { recursive: true })
    const old = new Date(Date.now() - 10 * 60_000)
    utimesSync(join(tmp, 'op-stale'), old, old)
    const e = new DuckDBDatasetEngine({ tempDirectory: tmp, profileTimeoutMs: 120_000 })
    engines.push(e)
    await until(() => !existsSync(join(tmp, 'op-stale')), 'the stale scratch directory to be removed')
    // Younger than the longest operation (DATAKIT_PROFILE_TIMEOUT_MS + 1 min): perhaps a live server's.
    expect(existsSync(join(tmp, 'op-recent'))).toBe(true)
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
    // Issue 14 item 8: the exact probes, refused or answered without a path.
    for (const sql of ["SELECT current_setting('home_directory') AS h", "SELECT current_setting('temp_directory') AS t", "SELECT current_setting('extension_directory') AS x", 'SELECT * FROM duckdb_settings()']) {
      expect(await e.query(parquet, sql, { user: 'a' }).then(() => 'answered', (err: AppError) => err.status)).toBe(422)
    }
    expect((await rejection(e.exportQuery(parquet, 'SELECT name, value FROM duckdb_settings()', 'csv', dir.file('settings.csv'), { user: 'a' }))).status).toBe(422)
    expect(existsSync(dir.file('settings.csv'))).toBe(false)
  })

  test('a path cannot be read out in disguise: transformed, through dynamic SQL, or from the statement that writes an export', async () => {
    const e = engineWith()
    const secret = [homedir(), dir.path, parquet].filter((p) => p.length > 1)
    // A path as the answer might carry it: verbatim, with its slashes swapped, reversed.
    const disguises = (s: string) => [s, s.replaceAll('/', '|'), [...s].reverse().join('')]
    const leaks = (answer: string) => secret.flatMap(disguises).filter((d) => answer.includes(d))
    const answered = (p: Promise<{ rows?: unknown; path?: string }>) =>
      p.then(
        async (r) => (r.path ? await Bun.file(r.path).text() : JSON.stringify(r.rows)),
        (err: AppError) => `${err.status} ${err.message}`,
      )
    const probes = [
      "SELECT replace(sql, '/', '|') AS s FROM duckdb_views()",
      "SELECT list_transform(current_setting('allowed_paths'), p -> reverse(p)) AS s",
      'SELECT reverse(value) AS s FROM duckdb_settings()',
      "SELECT * FROM query('SELECT current_setting(''allowed_paths'') AS a')",
      'SELECT reverse(setting) AS s FROM pg_settings',
      "SELECT * FROM query_table('pg_settings')",
      "SELECT replace(path, '/', '|') AS s FROM duckdb_external_file_cache()",
      "SELECT reverse(filename) AS s FROM read_parquet('data.parquet', filename = true) LIMIT 1",
    ]
    for (const sql of probes) {
      expect({ sql, leaks: leaks(await answered(e.query(parquet, sql, { user: 'a' }))) }).toEqual({ sql, leaks: [] })
    }
    expect({ leaks: leaks(await answered(e.exportQuery(parquet, 'SELECT reverse(current_query()) AS q', 'csv', dir.file('q-self.csv'), { user: 'a' }))) }).toEqual({ leaks: [] })
    // Refused by name, however it is spelled, with a 422 that says why.
    for (const sql of ['SELECT "Current_Setting"(\'threads\') AS t', "SELECT system.main.current_setting('threads') AS t", 'FROM pg_catalog.pg_settings', 'SUMMARIZE pg_settings']) {
      const err = await rejection(e.query(parquet, sql, { user: 'a' }))
      expect({ sql, status: err.status, refused: err.message.includes('not available in the DataKit sandbox') }).toEqual({ sql, status: 422, refused: true })
    }
    // What analysis needs is untouched.
    expect((await e.query(parquet, 'SELECT count(*) AS n FROM data', { user: 'a' })).rows).toEqual([{ n: 200 }])
    expect((await e.query(parquet, 'SUMMARIZE data', { user: 'a' })).rowCount).toBeGreaterThan(0)
  })
})
