/**
 * DataKit abuse through the real server (issue 14, items 1–4 and the SQL sandbox's paths):
 * every abuse ends in the envelope with the right status and the limit named, the server's
 * own memory does not take the blow, and another user is not held back.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { wideCsv, writeGzipBomb } from '../../bench/support/abuse-datakits.ts'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'
import { sampleRows, tempDir, toDelimited } from '../support/datasets.ts'
import { until } from '../support/until.ts'
import { wsClient, type WsClient } from '../support/ws.ts'

type Account = Awaited<ReturnType<TestServer['user']>>

const MB = 1024 * 1024
const dir = tempDir('quadrax-datakit-limits-')
const uploadDir = join(dir.path, 'uploads')
const exportDir = join(uploadDir, 'datakits', 'exports')
const dataDir = join(dir.path, 'data')
/** A query that runs until it is stopped, in little memory. */
const ENDLESS = 'SELECT count(*) AS n FROM range(1000000000000000) t(i) WHERE hash(i) = 0 AND i < 0'

let t: TestServer
let alice: Account
let bob: Account
let aliceWs: WsClient
/** Alice's datakit of 200 sample rows, and one of Bob's. */
let kit: string
let bobKit: string

beforeAll(async () => {
  t = await testServer(
    {
      UPLOAD_DIR: uploadDir,
      DATA_DIR: dataDir,
      DATAKIT_QUERY_MEMORY_MB: '256',
      DATAKIT_QUERY_TIMEOUT_MS: '5000',
      DATAKIT_QUERY_MAX_BYTES: '1MB',
      DATAKIT_EXPORT_MAX_BYTES: '2MB',
      DATAKIT_QUERY_QUEUE_PER_USER: '2',
      DATAKIT_MAX_DECOMPRESSED_BYTES: '8MB',
      DATAKIT_MAX_ROWS: '5000',
    },
    { features: [datakitsFeature] },
  )
  ;[alice, bob] = await Promise.all([t.user(), t.user()])
  aliceWs = await wsClient(t.url, alice.token)
  aliceWs.send({ op: 'subscribe', topic: `user:${alice.id}`, since: 0, id: 'alice' })
  await aliceWs.next((m) => m.op === 'ack' && m.id === 'alice')
  kit = await ready(alice.token, 'people.csv', toDelimited(sampleRows(200)))
  const b = await upload(bob.token, 'bob.csv', 'a,b\n1,2\n')
  bobKit = b.body.data.id
  const status = async () => (await t.json('GET', `/api/datakits/${bobKit}`, { token: bob.token })).body.data.status
  expect(await until(async () => ((await status()) === 'PROCESSING' ? undefined : status()), "Bob's datakit to be profiled")).toBe('READY')
}, 60_000)

afterAll(async () => {
  aliceWs?.close()
  await t?.stop()
  dir[Symbol.dispose]()
})

async function upload(token: string, filename: string, data: Uint8Array | string) {
  return postUpload(t.url, token, await multipartBytes([{ name: 'dataset', filename, contentType: 'application/octet-stream', data }, { name: 'name', value: filename }]))
}

/** The first status event of `id` that is not PROCESSING. */
async function settled(id: string): Promise<any> {
  const ev = await aliceWs.next((m) => m.op === 'event' && m.type === 'datakit.status' && m.data.id === id && m.data.status !== 'PROCESSING', 60_000)
  return ev.data
}

async function ready(token: string, filename: string, data: string): Promise<string> {
  const r = await upload(token, filename, data)
  if (r.status !== 201) throw new Error(`upload failed: ${r.status} ${JSON.stringify(r.body)}`)
  const s = await settled(r.body.data.id)
  if (s.status !== 'READY') throw new Error(`${s.status}: ${s.error}`)
  return r.body.data.id
}

const query = (sql: string, token = alice.token, id = kit) => t.json('POST', `/api/datakits/${id}/query`, { token, body: { sql } })
const limit = (body: any) => body.details.find((d: { field: string }) => d.field === 'limit')?.message
const rss = () => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync('/proc/self/status', 'utf8'))![1]) * 1024
const uploadsNow = () => readdirSync(join(uploadDir, 'datakits')).filter((n) => /^[0-9a-f-]{36}$/.test(n))

describe('item 1: memory and time', () => {
  test('the memory bomb of the issue is a 422 naming DATAKIT_QUERY_MEMORY_MB, and the server does not grow', async () => {
    // A query worker started and warm, so the time below is the bomb's alone.
    expect((await query('SELECT 1 AS one')).body.data.rows).toEqual([{ one: 1 }])
    Bun.gc(true)
    const before = rss()
    let peak = before
    const sample = setInterval(() => (peak = Math.max(peak, rss())), 5)
    const started = performance.now()
    // 8 GB of list in one DuckDB: 8.1 GB of server RSS and 32.8 s before the worker pool.
    const r = await query('SELECT list_sum(range(1000000000)) AS s')
    const ms = performance.now() - started
    clearInterval(sample)
    expect(r.status).toBe(422)
    expect(r.body).toEqual({ success: false, error: expect.stringContaining('DATAKIT_QUERY_MEMORY_MB'), details: [{ field: 'limit', message: 'DATAKIT_QUERY_MEMORY_MB=256' }] })
    console.log(`memory bomb over HTTP: ${Math.round(ms)} ms to the error, server RSS ${Math.round(before / MB)} → peak ${Math.round(peak / MB)} MB`)
    expect(peak - before).toBeLessThan(150 * MB)
    expect((await query('SELECT count(*) AS n FROM data')).body.data.rows).toEqual([{ n: 200 }])
  })

  test('a query past DATAKIT_QUERY_TIMEOUT_MS is a 422 naming it', async () => {
    const started = performance.now()
    const r = await query(ENDLESS)
    console.log(`endless query over HTTP: ${Math.round(performance.now() - started)} ms to the error (DATAKIT_QUERY_TIMEOUT_MS=5000)`)
    expect(r.status).toBe(422)
    expect(limit(r.body)).toBe('DATAKIT_QUERY_TIMEOUT_MS=5000')
    expect(r.body.error).toContain('DATAKIT_QUERY_TIMEOUT_MS')
  }, 20_000) // the query itself runs for 5 s: bun's default test timeout is 5 s too
})

describe('item 2: result bytes and export', () => {
  test('rows are capped in bytes too: truncated, truncatedBy "bytes", a small body', async () => {
    const res = await t.call('POST', `/api/datakits/${kit}/query`, { token: alice.token, body: { sql: "SELECT i, repeat('x', 400000) AS s FROM range(100) t(i)" } })
    const text = await res.text()
    expect(res.status).toBe(200)
    expect(text.length).toBeLessThan(1.1 * MB)
    const data = JSON.parse(text).data
    expect(data).toMatchObject({ truncated: true, truncatedBy: 'bytes', rowCount: 2 })
    // A single value over the limit is not read at all.
    expect((await query("SELECT repeat('x', 4000000) AS s")).body.data).toMatchObject({ rows: [], truncated: true, truncatedBy: 'bytes' })
    // The 400 MB value does not even fit the worker's memory (DuckDB holds it twice):
    // a 422 naming the budget, and a small body either way.
    const huge = await t.call('POST', `/api/datakits/${kit}/query`, { token: alice.token, body: { sql: "SELECT repeat('x', 400000000) AS s" } })
    const hugeText = await huge.text()
    expect(huge.status).toBe(422)
    expect(hugeText.length).toBeLessThan(1000)
    expect(limit(JSON.parse(hugeText))).toBe('DATAKIT_QUERY_MEMORY_MB=256')
    expect((await query('SELECT * FROM range(20000) t(i)')).body.data).toMatchObject({ rowCount: 10_000, truncated: true, truncatedBy: 'rows' })
  })

  test('POST /query/export streams the whole result (CSV, Parquet), under the same sandbox', async () => {
    const res = await fetch(`${t.url}/api/datakits/${kit}/query/export`, {
      method: 'POST',
      headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ sql: "SELECT i, 'row ' || i AS label FROM range(100000) t(i)", format: 'csv' }),
    })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toStartWith('text/csv')
    expect(res.headers.get('content-disposition')).toContain('-v1-query.csv')
    const lines = (await res.text()).trimEnd().split('\n')
    expect(lines.length).toBe(100_001)
    expect(lines.slice(0, 2)).toEqual(['i,label', '0,row 0'])
    const pq = await fetch(`${t.url}/api/datakits/${kit}/query/export`, {
      method: 'POST',
      headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'application/json' },
      body: JSON.stringify({ sql: 'SELECT city, count(*) AS n FROM data GROUP BY city', format: 'parquet' }),
    })
    expect(new TextDecoder().decode(new Uint8Array(await pq.arrayBuffer()).slice(0, 4))).toBe('PAR1')
    const refused = await t.json('POST', `/api/datakits/${kit}/query/export`, { token: alice.token, body: { sql: "COPY data TO '/tmp/qx-export-stolen.csv'" } })
    expect(refused.status).toBe(422)
    expect((await t.json('POST', `/api/datakits/${kit}/query/export`, { token: bob.token, body: { sql: 'SELECT 1' } })).status).toBe(404)
    expect(existsSync('/tmp/qx-export-stolen.csv')).toBe(false)
    // Sent with sendfile, each file is removed once the server holds it open.
    await until(() => readdirSync(exportDir).length === 0, 'the export files to be removed')
  })

  test('an export past DATAKIT_EXPORT_MAX_BYTES is stopped: 413 naming it, nothing left behind', async () => {
    const r = await t.json('POST', `/api/datakits/${kit}/query/export`, { token: alice.token, body: { sql: "SELECT i, repeat('z', 500) AS pad FROM range(10000000) t(i)" } })
    expect(r.status).toBe(413)
    expect(limit(r.body)).toBe(`DATAKIT_EXPORT_MAX_BYTES=${2 * MB}`)
    expect(readdirSync(exportDir)).toEqual([])
  })
})

describe('item 3: fairness', () => {
  test("another user's select 1 is not behind one user's eight slow queries; past the per-user queue, 429", async () => {
    const stop = new AbortController()
    const post = (token: string, id: string, sql: string) =>
      fetch(`${t.url}/api/datakits/${id}/query`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ sql }),
        signal: stop.signal,
      })
    // The eight: one runs (DATAKIT_QUERY_CONCURRENCY_PER_USER=1), two wait
    // (DATAKIT_QUERY_QUEUE_PER_USER=2), five are refused at once, naming the setting.
    const settled = new Set<number>()
    const heavy = Array.from({ length: 8 }, (_, i) =>
      post(alice.token, kit, ENDLESS).then(
        async (res) => {
          settled.add(i)
          return { status: res.status, body: res.status === 429 ? await res.json() : undefined, retryAfter: res.headers.get('retry-after') }
        },
        () => undefined,
      ),
    )
    const refused = await until(async () => (settled.size >= 5 ? Promise.all([...settled].map((i) => heavy[i]!)) : undefined), 'five of the eight to be refused')
    for (const r of refused) {
      expect(r).toEqual({ status: 429, body: { success: false, error: expect.stringContaining('DATAKIT_QUERY_QUEUE_PER_USER'), details: [{ field: 'limit', message: 'DATAKIT_QUERY_QUEUE_PER_USER=2' }] }, retryAfter: '1' })
    }
    // Bob is not behind any of them…
    expect((await query('SELECT 1 AS one', bob.token, bobKit)).body.data.rows).toEqual([{ one: 1 }])
    // …and Alice's three were all still there when he was answered.
    expect(settled.size).toBe(5)
    expect((await post(alice.token, kit, 'SELECT 1')).status).toBe(429)
    stop.abort()
    await Promise.all(heavy)
  })
})

describe('item 4: uploads and profiling', () => {
  test('the gzip bomb of the issue is refused at upload: 413 naming DATAKIT_MAX_DECOMPRESSED_BYTES, no file kept', async () => {
    const before = uploadsNow()
    // 1.45 MB that inflates to 374 M rows (1.5 GB): it held the only profiling slot for 55 s.
    await writeGzipBomb(dir.file('bomb.csv.gz'), 374_000_000 * 4)
    const r = await upload(alice.token, 'bomb.csv.gz', readFileSync(dir.file('bomb.csv.gz')))
    expect(r.status).toBe(413)
    expect(limit(r.body)).toBe(`DATAKIT_MAX_DECOMPRESSED_BYTES=${8 * MB}`)
    expect(uploadsNow()).toEqual(before)
  })

  test('a gzip stream whose trailer hides its size ends FAILED naming DATAKIT_MAX_DECOMPRESSED_BYTES (event and GET)', async () => {
    await writeGzipBomb(dir.file('big-member.gz'), 20 * MB)
    writeFileSync(dir.file('two-members.csv.gz'), Buffer.concat([readFileSync(dir.file('big-member.gz')), Bun.gzipSync(new TextEncoder().encode('1,2\n'))]))
    const r = await upload(alice.token, 'two-members.csv.gz', readFileSync(dir.file('two-members.csv.gz')))
    expect(r.status).toBe(201)
    const s = await settled(r.body.data.id)
    expect(s).toMatchObject({ status: 'FAILED', errorLine: null })
    expect(s.error).toContain('DATAKIT_MAX_DECOMPRESSED_BYTES')
    const got = await t.json('GET', `/api/datakits/${r.body.data.id}`, { token: alice.token })
    expect(got.body.data).toMatchObject({ status: 'FAILED', error: s.error, profile: null })
  })

  test('more rows than DATAKIT_MAX_ROWS ends FAILED naming it', async () => {
    const r = await upload(alice.token, 'rows.csv', toDelimited(sampleRows(6000)))
    expect(r.status).toBe(201)
    const s = await settled(r.body.data.id)
    expect(s.status).toBe('FAILED')
    expect(s.error).toContain('more than 5000 rows (DATAKIT_MAX_ROWS)')
  })

  test('a 5,000-column CSV is a 422 naming DATAKIT_MAX_COLUMNS at upload, no file kept', async () => {
    const before = uploadsNow()
    const r = await upload(alice.token, 'wide.csv', wideCsv(5000, 20))
    expect(r.status).toBe(422)
    expect(r.body).toMatchObject({ success: false, details: [{ field: 'limit', message: 'DATAKIT_MAX_COLUMNS=1000' }] })
    expect(r.body.error).toContain('5000 columns')
    expect(uploadsNow()).toEqual(before)
  })
})

describe('item 8: the SQL sandbox shows no server path', () => {
  test('settings, secrets and extensions name none of the server’s directories', async () => {
    const secret = [homedir(), uploadDir, dataDir].filter((p) => p.length > 1)
    for (const sql of [
      'SELECT name, value FROM duckdb_settings()',
      "SELECT current_setting('home_directory') AS h, current_setting('secret_directory') AS s, current_setting('extension_directory') AS x, current_setting('allowed_paths') AS a",
      'SELECT * FROM duckdb_secrets()',
      'SELECT * FROM duckdb_extensions()',
    ]) {
      const r = await query(sql)
      const text = JSON.stringify(r.body)
      for (const s of secret) expect({ sql, leaks: text.includes(s) }).toEqual({ sql, leaks: false })
    }
    expect((await query('SELECT * FROM duckdb_secrets()')).body.data.rows).toEqual([])
  })

  test("the issue's probes are refused with a 422 that says why; disguised, they still show no path", async () => {
    const secret = [homedir(), uploadDir, dataDir].filter((p) => p.length > 1)
    for (const sql of [
      "SELECT current_setting('home_directory') AS h",
      "SELECT current_setting('temp_directory') AS t",
      "SELECT current_setting('extension_directory') AS x",
      'SELECT * FROM duckdb_settings()',
      "SELECT * FROM query('SELECT current_setting(''allowed_paths'') AS a')",
    ]) {
      const r = await query(sql)
      expect({ sql, status: r.status, error: r.body.error }).toEqual({ sql, status: 422, error: expect.stringContaining('is not available in the DataKit sandbox') })
    }
    for (const sql of ["SELECT replace(sql, '/', '|') AS s FROM duckdb_views()", "SELECT reverse(filename) AS s FROM read_parquet('data.parquet', filename = true) LIMIT 1"]) {
      const text = JSON.stringify((await query(sql)).body)
      for (const s of secret) for (const d of [s, s.replaceAll('/', '|'), [...s].reverse().join('')]) expect({ sql, leaks: text.includes(d) }).toEqual({ sql, leaks: false })
    }
  })
})

describe('after the errors above', () => {
  test('every worker’s scratch directory and every export file is gone', async () => {
    const scratch = join(dataDir, 'duckdb-tmp')
    // Operations stopped by an aborted request finish on their own, just after.
    await until(() => readdirSync(scratch).filter((n) => n.startsWith('op-')).length === 0, 'the scratch directories to be removed')
    await until(() => readdirSync(exportDir).length === 0, 'the export files to be removed')
    expect(readdirSync(join(uploadDir, 'datakits')).filter((n) => n.includes('.tmp-'))).toEqual([])
  })
})
