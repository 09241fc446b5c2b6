/**
 * DataKit abuse (issue 14, items 1–4), as a scenario bench/abuse.ts runs against a live
 * server, and the payloads it sends (the tests send the same, smaller):
 *
 * 1. a memory bomb (`list_sum(range(1000000000))`: 8 GB in one DuckDB before the worker pool),
 * 2. a huge result (one 400 MB value; many wide rows),
 * 3. one user's many slow queries while a light user runs `select 1`,
 * 4. a gzip bomb (1.4 MB → 1.5 GB of rows) and a 5,000-column CSV.
 *
 * For each: the bound that answered (status, error, the limit named in `details`), the time
 * to that answer, and the light user's `select 1` latencies during the abuse next to quiet
 * ones. The caller measures the server's RSS around it (`workerPids` of the engine add the
 * workers' memory when it runs in the same process).
 */
import { createGzip } from 'node:zlib'
import { createWriteStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import { Readable } from 'node:stream'

/** Write a gzip file of a CSV `a,b` followed by `1,2` rows up to `decompressedBytes`, streaming (no buffer of that size). */
export async function writeGzipBomb(path: string, decompressedBytes: number): Promise<void> {
  const block = Buffer.from('1,2\n'.repeat(256 * 1024))
  async function* rows() {
    yield Buffer.from('a,b\n')
    for (let sent = 4; sent < decompressedBytes; sent += block.length) yield sent + block.length <= decompressedBytes ? block : block.subarray(0, decompressedBytes - sent)
  }
  await pipeline(Readable.from(rows()), createGzip({ level: 9 }), createWriteStream(path))
}

/** A CSV with `columns` integer columns and `rows` rows. */
export function wideCsv(columns: number, rows: number): string {
  const header = Array.from({ length: columns }, (_, i) => `c${i}`).join(',')
  const lines = [header]
  for (let r = 0; r < rows; r++) lines.push(Array.from({ length: columns }, (_, i) => (r * 31 + i) % 1000).join(','))
  return lines.join('\n') + '\n'
}

export interface AbuseTokens {
  /** Owns the datakits and runs the abuse. */
  abuser: string
  /** Runs `select 1` on a datakit of its own during the abuse. */
  light: string
}

export interface AbuseOutcome {
  item: string
  what: string
  /** HTTP status that answered the abuse (or the version status for a background failure). */
  status: number | string
  /** The limit the answer named (`details` `{ field: 'limit', message: 'NAME=value' }`), or what bounded it. */
  bound: string
  error: string | null
  /** From sending the abuse to its answer. */
  msToError: number
  /** The light user's `select 1` latencies (ms) while this abuse ran. */
  lightMs: number[]
}

export interface AbuseReport {
  quietMs: number[]
  outcomes: AbuseOutcome[]
}

interface Api {
  json(method: string, path: string, token: string, body?: unknown): Promise<{ status: number; body: any; ms: number }>
  upload(token: string, name: string, filename: string, data: Blob): Promise<{ status: number; body: any; ms: number }>
}

function api(baseUrl: string): Api {
  return {
    async json(method, path, token, body) {
      const t0 = performance.now()
      const res = await fetch(`${baseUrl}${path}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? undefined : JSON.stringify(body),
      })
      const text = await res.text()
      let parsed: any = null
      try {
        parsed = text ? JSON.parse(text) : null
      } catch {
        parsed = { raw: `${text.length} bytes` }
      }
      return { status: res.status, body: parsed, ms: performance.now() - t0 }
    },
    async upload(token, name, filename, data) {
      const form = new FormData()
      form.append('dataset', data, filename)
      form.append('name', name)
      const t0 = performance.now()
      const res = await fetch(`${baseUrl}/api/datakits/upload`, { method: 'POST', headers: { authorization: `Bearer ${token}` }, body: form })
      return { status: res.status, body: await res.json(), ms: performance.now() - t0 }
    },
  }
}

const limitOf = (body: any): string => (body?.details ?? []).find((d: { field: string }) => d.field === 'limit')?.message ?? ''

/** A datakit of `token`'s, READY (polls GET until profiled). */
async function readyKit(a: Api, token: string, name: string, csv: string): Promise<string> {
  const up = await a.upload(token, name, `${name}.csv`, new Blob([csv]))
  if (up.status !== 201) throw new Error(`upload failed: ${up.status} ${JSON.stringify(up.body)}`)
  return (await settle(a, token, up.body.data.id)).id
}

/** GET the datakit until its latest version is no longer PROCESSING. */
async function settle(a: Api, token: string, id: string, timeoutMs = 300_000): Promise<{ id: string; status: string; error: string | null }> {
  const deadline = performance.now() + timeoutMs
  for (;;) {
    const r = await a.json('GET', `/api/datakits/${id}`, token)
    if (r.body?.data?.status && r.body.data.status !== 'PROCESSING') return { id, status: r.body.data.status, error: r.body.data.error }
    if (performance.now() > deadline) throw new Error(`datakit ${id} still PROCESSING after ${timeoutMs} ms`)
    await Bun.sleep(50)
  }
}

/** `select 1` by the light user, again and again until `done` settles; latencies in ms. */
async function lightLoad(a: Api, token: string, kit: string, done: Promise<unknown>): Promise<number[]> {
  const out: number[] = []
  let finished = false
  void done.finally(() => (finished = true))
  while (!finished) {
    const r = await a.json('POST', `/api/datakits/${kit}/query`, token, { sql: 'select 1 AS one' })
    if (r.status !== 200) throw new Error(`light user's select 1 failed: ${r.status} ${JSON.stringify(r.body)}`)
    out.push(r.ms)
    // One query in flight at a time, a short pause between: a user at a keyboard, not a load test.
    await Bun.sleep(50)
  }
  return out
}

/** The p-th percentile (0–100) of `xs`. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((x, y) => x - y)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!
}

/**
 * Run every DataKit abuse against the server at `baseUrl` (default limits expected) and report
 * the bound, the time to the error and the light user's latencies for each. The abuser's
 * datakits are left in place (the caller's server is throw-away). `tmpDir`: where the gzip
 * bomb is written (about 1.4 MB).
 */
export async function runDatakitAbuse(baseUrl: string, tokens: AbuseTokens, tmpDir: string): Promise<AbuseReport> {
  const a = api(baseUrl)
  const rows = Array.from({ length: 1000 }, (_, i) => `${i},${i % 7},name ${i}`).join('\n')
  const [kit, lightKit] = await Promise.all([
    readyKit(a, tokens.abuser, 'abuse', `id,k,name\n${rows}\n`),
    readyKit(a, tokens.light, 'light', `id,k,name\n${rows}\n`),
  ])
  // Quiet: the light user alone (the first query warms a worker).
  await a.json('POST', `/api/datakits/${lightKit}/query`, tokens.light, { sql: 'select 1 AS one' })
  const quietMs: number[] = []
  for (let i = 0; i < 30; i++) {
    quietMs.push((await a.json('POST', `/api/datakits/${lightKit}/query`, tokens.light, { sql: 'select 1 AS one' })).ms)
    await Bun.sleep(50)
  }

  const outcomes: AbuseOutcome[] = []
  const during = async (item: string, what: string, abuse: () => Promise<Omit<AbuseOutcome, 'item' | 'what' | 'lightMs'>>) => {
    const run = abuse()
    const [outcome, lightMs] = await Promise.all([run, lightLoad(a, tokens.light, lightKit, run)])
    outcomes.push({ item, what, ...outcome, lightMs })
  }
  const query = async (sql: string) => {
    const r = await a.json('POST', `/api/datakits/${kit}/query`, tokens.abuser, { sql })
    return { status: r.status, bound: limitOf(r.body) || (r.body?.data?.truncatedBy ? `truncated by ${r.body.data.truncatedBy}` : ''), error: r.body?.error ?? null, msToError: r.ms }
  }

  await during('1', 'memory bomb: select list_sum(range(1000000000))', () => query('select list_sum(range(1000000000)) AS s'))
  await during('1', 'four memory bombs at once', async () => {
    const t0 = performance.now()
    const answers = await Promise.all(Array.from({ length: 4 }, () => query('select list_sum(range(1000000000)) AS s')))
    return {
      status: [...new Set(answers.map((r) => r.status))].join('/'),
      bound: [...new Set(answers.map((r) => r.bound))].join(', '),
      error: answers[0]!.error,
      msToError: Math.max(...answers.map((r) => r.msToError)) || performance.now() - t0,
    }
  })
  await during('2', "one 400 MB value: select repeat('x', 400000000)", () => query("select repeat('x', 400000000) AS s"))
  await during('2', 'wide rows: 1 KB × 1,000,000 rows', () => query("select i, repeat('y', 1000) AS pad from range(1000000) t(i)"))
  await during('2', 'the same, exported as CSV (streamed)', async () => {
    const t0 = performance.now()
    const res = await fetch(`${baseUrl}/api/datakits/${kit}/query/export`, {
      method: 'POST',
      headers: { authorization: `Bearer ${tokens.abuser}`, 'content-type': 'application/json' },
      body: JSON.stringify({ sql: "select i, repeat('y', 1000) AS pad from range(1000000) t(i)", format: 'csv' }),
    })
    let bytes = 0
    if (res.ok) for await (const chunk of res.body!) bytes += chunk.byteLength
    const body: any = res.ok ? null : await res.json()
    return { status: res.status, bound: res.ok ? `${bytes} bytes streamed` : limitOf(body), error: body?.error ?? null, msToError: performance.now() - t0 }
  })
  await during('3', "8 slow queries by one user (each until DATAKIT_QUERY_TIMEOUT_MS)", async () => {
    // CPU-bound and small in memory (range() streams; the filter is never true): it ends at the time limit.
    const slow = 'SELECT count(*) AS n FROM range(1000000000000000) t(i) WHERE hash(i) = 0 AND i < 0'
    const t0 = performance.now()
    const answers = await Promise.all(Array.from({ length: 8 }, () => a.json('POST', `/api/datakits/${kit}/query`, tokens.abuser, { sql: slow })))
    const statuses = [...new Set(answers.map((r) => r.status))].join('/')
    const bounds = [...new Set(answers.map((r) => limitOf(r.body)))].join(', ')
    return { status: statuses, bound: bounds, error: answers[0]!.body?.error ?? null, msToError: Math.max(...answers.map((r) => r.ms)) || performance.now() - t0 }
  })
  // Made before the light user starts measuring (compressing 1.5 GB takes a few seconds here).
  const bomb = `${tmpDir}/datakit-gzip-bomb.csv.gz`
  await writeGzipBomb(bomb, 1_470_000_000)
  await during('4', `gzip bomb: ${(Bun.file(bomb).size / 1e6).toFixed(2)} MB → 1.47 GB of CSV rows`, async () => {
    const path = bomb
    const t0 = performance.now()
    const up = await a.upload(tokens.abuser, 'bomb', 'bomb.csv.gz', Bun.file(path))
    if (up.status !== 201) return { status: up.status, bound: limitOf(up.body), error: up.body?.error ?? null, msToError: up.ms }
    const s = await settle(a, tokens.abuser, up.body.data.id)
    return { status: s.status, bound: s.error ?? '', error: s.error, msToError: performance.now() - t0 }
  })
  await during('4', '5,000-column CSV', async () => {
    const up = await a.upload(tokens.abuser, 'wide', 'wide.csv', new Blob([wideCsv(5000, 200)]))
    if (up.status !== 201) return { status: up.status, bound: limitOf(up.body), error: up.body?.error ?? null, msToError: up.ms }
    const t0 = performance.now()
    const s = await settle(a, tokens.abuser, up.body.data.id)
    return { status: s.status, bound: s.error ?? '', error: s.error, msToError: up.ms + performance.now() - t0 }
  })
  return { quietMs, outcomes }
}
