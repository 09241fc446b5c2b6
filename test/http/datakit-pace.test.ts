/**
 * What one user is answered with is paced, through the real server: the bytes of rows their
 * queries return (DATAKIT_QUERY_BYTES_PER_SECOND: past it, a 429 in the envelope naming it, with
 * Retry-After) and the bytes of their downloads and exports (DATAKIT_DOWNLOAD_BYTES_PER_SECOND),
 * each user on their own pace.
 */
import { afterAll, beforeAll, describe, expect, test } from 'bun:test'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { datakitsFeature } from '../../src/features/datakits.ts'
import { testServer, type TestServer } from '../support/app.ts'
import { multipartBytes, postUpload } from '../support/datakit-upload.ts'
import { tempDir } from '../support/datasets.ts'
import { until } from '../support/until.ts'

type Account = Awaited<ReturnType<TestServer['user']>>

const RATE = 64 * 1024
const dir = tempDir('quadrax-datakit-pace-')
const uploadDir = join(dir.path, 'uploads')
const exportDir = join(uploadDir, 'datakits', 'exports')

let t: TestServer
let carol: Account
let dave: Account
let carolKit: string
let daveKit: string
const daveCsv = `id,label\n${Array.from({ length: 2000 }, (_, i) => `${i},row ${i}`).join('\n')}\n`

beforeAll(async () => {
  t = await testServer(
    {
      UPLOAD_DIR: uploadDir,
      DATA_DIR: join(dir.path, 'data'),
      DATAKIT_QUERY_TIMEOUT_MS: '5000',
      // The burst of the rows' pace.
      DATAKIT_QUERY_MAX_BYTES: '1MB',
      DATAKIT_QUERY_BYTES_PER_SECOND: String(RATE),
      DATAKIT_DOWNLOAD_BYTES_PER_SECOND: String(RATE),
    },
    { features: [datakitsFeature] },
  )
  ;[carol, dave] = await Promise.all([t.user(), t.user()])
  ;[carolKit, daveKit] = await Promise.all([ready(carol.token, 'a,b\n1,2\n'), ready(dave.token, daveCsv)])
}, 60_000)

afterAll(async () => {
  await t?.stop()
  dir[Symbol.dispose]()
})

/** A datakit of `token`'s holding `csv`, once READY. */
async function ready(token: string, csv: string): Promise<string> {
  const r = await postUpload(t.url, token, await multipartBytes([{ name: 'dataset', filename: 'd.csv', contentType: 'text/csv', data: csv }, { name: 'name', value: 'd' }]))
  if (r.status !== 201) throw new Error(`upload failed: ${r.status} ${JSON.stringify(r.body)}`)
  const id: string = r.body.data.id
  const status = async () => (await t.json('GET', `/api/datakits/${id}`, { token })).body.data.status as string
  expect(await until(async () => ((await status()) === 'PROCESSING' ? undefined : status()), 'the datakit to be profiled')).toBe('READY')
  return id
}

const query = (token: string, id: string, sql: string) => t.json('POST', `/api/datakits/${id}/query`, { token, body: { sql } })

/** POST …/query/export of `sql` as CSV, its body read in the background: bytes so far, and whether it ended. */
async function exporting(token: string, id: string, sql: string) {
  const res = await fetch(`${t.url}/api/datakits/${id}/query/export`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'accept-encoding': 'identity' },
    body: JSON.stringify({ sql, format: 'csv' }),
  })
  expect(res.status).toBe(200)
  const state = { total: Number(res.headers.get('content-length')), bytes: 0, ended: false }
  const reader = res.body!.getReader()
  const done = (async () => {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) return void (state.ended = true)
      state.bytes += value.byteLength
    }
  })().catch(() => {})
  return { state, done, cancel: () => reader.cancel() }
}

describe('DATAKIT_QUERY_BYTES_PER_SECOND', () => {
  test('past its burst and rate, the next query that could not start in time is a 429 naming it, with Retry-After; another user is answered', async () => {
    // ~900 KB each: the first within the 1 MB burst, the second takes Carol ~0.8 MB past it,
    // ~13 s of the pace: more than the 5 s a query may wait.
    const wide = "SELECT repeat('x', 900000) AS v"
    for (let i = 0; i < 2; i++) expect((await query(carol.token, carolKit, wide)).body.data.rowCount).toBe(1)
    const refused = await t.call('POST', `/api/datakits/${carolKit}/query`, { token: carol.token, body: { sql: 'SELECT 1 AS one' } })
    expect({ status: refused.status, body: await refused.json() }).toEqual({
      status: 429,
      body: { success: false, error: expect.stringContaining('DATAKIT_QUERY_BYTES_PER_SECOND'), details: [{ field: 'limit', message: `DATAKIT_QUERY_BYTES_PER_SECOND=${RATE}` }] },
    })
    expect(Number(refused.headers.get('retry-after'))).toBeGreaterThan(5)
    expect((await query(dave.token, daveKit, 'SELECT 1 AS one')).body.data.rows).toEqual([{ one: 1 }])
  })
})

describe('DATAKIT_DOWNLOAD_BYTES_PER_SECOND', () => {
  test("one user's export past a second's worth is streamed at the pace: another user's, started after, ends first; cancelled, it leaves no file", async () => {
    // ~1 MB of CSV: 15 s at 64 KiB/s after the first 64 KiB.
    const sql = "SELECT i, repeat('x', 1000) AS pad FROM range(1000) t(i)"
    const slow = await exporting(carol.token, carolKit, sql)
    await until(() => slow.state.bytes >= RATE, "Carol's first second's worth")
    const other = await exporting(dave.token, daveKit, "SELECT i, repeat('y', 10) AS pad FROM range(1000) t(i)")
    await other.done
    // Within a second's worth: sent whole, with its length.
    expect(other.state.total).toBeGreaterThan(10_000)
    expect(other.state).toEqual({ ended: true, bytes: other.state.total, total: other.state.total })
    // Past it: streamed at the pace (its 1,006,891 bytes would take 15 s).
    expect(slow.state.ended).toBe(false)
    expect(slow.state.bytes).toBeLessThan(1_000_000)
    await slow.cancel()
    await slow.done
    await until(() => readdirSync(exportDir).length === 0, 'the export files to be removed')
  })

  test('a download arrives whole with its Content-Length', async () => {
    const res = await t.call('GET', `/api/datakits/${daveKit}/download`, { token: dave.token, headers: { 'accept-encoding': 'identity' } })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-length')).toBe(String(Buffer.byteLength(daveCsv)))
    expect(await res.text()).toBe(daveCsv)
  })
})
