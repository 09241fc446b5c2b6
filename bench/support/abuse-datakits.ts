/**
 * DataKit abuse (issue 14, items 1–4), as a scenario bench/abuse.ts runs against a live
 * server, and the payloads it sends (the tests send the same, smaller):
 *
 * 1. a memory bomb (`list_sum(range(1000000000))`: 8 GB in one DuckDB before the worker pool),
 * 2. a huge result (one 400 MB value; many wide rows),
 * 3. one user's many slow queries while a light user runs `select 1`,
 * 4. a gzip bomb (1.4 MB → 1.5 GB of rows) and a 5,000-column CSV.
 *
 * For each: the bound that answered (status, error, the limit named in `details`) and the time
 * to that answer. The caller measures around each abuse (`Around`): the server's memory, and
 * the light user's `select 1` latencies (`lightUser`) next to quiet ones.
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

/** How the server answered one abuse. */
export interface Answer {
  /** HTTP status that answered the abuse (or the version status for a background failure). */
  status: number | string
  /** The limit the answer named (`details` `{ field: 'limit', message: 'NAME=value' }`), or what bounded it. */
  bound: string
  error: string | null
  /** From sending the abuse to the server's answer (for a streamed export: its first byte). */
  msToError: number
  /** The time limit that applies, and its variable: the abuse must end within it (+ 1 s). */
  timeout: { name: string; ms: number }
  /** Anything else worth a line (a streamed export's size and duration). */
  note?: string
}

/** Runs one abuse while the caller measures around it (the server's memory, a light user's latencies). */
export type Around = (item: string, what: string, abuse: () => Promise<Answer>) => Promise<void>

/** The time limits of the server under test (its defaults: src/config.ts). */
export interface DatakitTimeouts {
  /** DATAKIT_QUERY_TIMEOUT_MS: a query or a query export, counted from its arrival. */
  queryMs: number
  /** DATAKIT_PROFILE_TIMEOUT_MS: profiling an upload, counted from its start. */
  profileMs: number
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

const SMALL_CSV = `id,k,name\n${Array.from({ length: 1000 }, (_, i) => `${i},${i % 7},name ${i}`).join('\n')}\n`

/** A datakit of `token`'s, READY (polls GET until profiled). */
async function readyKit(a: Api, token: string, name: string, csv: string): Promise<string> {
  const up = await a.upload(token, name, `${name}.csv`, new Blob([csv]))
  if (up.status !== 201) throw new Error(`upload failed: ${up.status} ${JSON.stringify(up.body)}`)
  const s = await settle(a, token, up.body.data.id)
  if (s.status !== 'READY') throw new Error(`datakit ${name} ended ${s.status}: ${s.error}`)
  return s.id
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

/** The light user's `select 1` latencies (ms), and the answers that were not 200. */
export interface LightSample {
  ms: number[]
  failures: string[]
}

/** One `select 1` of the light user: when it was sent and answered (`now()` clock), its latency and status. */
interface LightQuery {
  start: number
  end: number
  ms: number
  status: number
  error: string
}

/** Milliseconds on a clock every process of the machine shares (the epoch, sub-millisecond). */
export const now = (): number => performance.timeOrigin + performance.now()

/**
 * A user at a keyboard: `select 1` on a datakit of their own, one at a time, 50 ms apart, from
 * start to stop. In a process of its own, so the bench's own work (reading an 8 MB answer or a
 * 1 GB export, sampling /proc) never delays it and shows up as the server's latency.
 */
export interface LightUser {
  /** The queries in flight at some time in [from, to] (`now()` clock). */
  between(from: number, to: number): LightSample
  /** Wait until `n` more queries were answered (quiet measurements). */
  next(n: number): Promise<void>
  stop(): Promise<void>
}

export async function startLightUser(baseUrl: string, token: string): Promise<LightUser> {
  const kit = await readyKit(api(baseUrl), token, 'light', SMALL_CSV)
  const queries: LightQuery[] = []
  let waiter: { count: number; resolve(): void } | undefined
  const proc = Bun.spawn([process.execPath, import.meta.path, 'light-user', baseUrl, token, kit], {
    stdio: ['ignore', 'inherit', 'inherit'],
    serialization: 'json',
    ipc(q: LightQuery) {
      queries.push(q)
      if (waiter && queries.length >= waiter.count) waiter.resolve()
    },
  })
  const next = async (n: number) => {
    const { promise, resolve } = Promise.withResolvers<void>()
    waiter = { count: queries.length + n, resolve }
    await Promise.race([promise, proc.exited.then((code) => Promise.reject(new Error(`the light user's process exited (${code})`)))])
    waiter = undefined
  }
  // The first query warms a worker; it counts in no measurement.
  await next(1)
  return {
    between(from, to) {
      const inWindow = queries.filter((q) => q.end >= from && q.start <= to)
      return { ms: inWindow.filter((q) => q.status === 200).map((q) => q.ms), failures: inWindow.filter((q) => q.status !== 200).map((q) => `${q.status} ${q.error}`.trim()) }
    },
    next,
    async stop() {
      proc.kill()
      await proc.exited
    },
  }
}

// The light user's process (see startLightUser): argv base URL, token, datakit id.
if (import.meta.main && process.argv[2] === 'light-user') {
  const [base, token, kit] = process.argv.slice(3) as [string, string, string]
  const a = api(base)
  process.on('disconnect', () => process.exit(0))
  for (;;) {
    const start = now()
    const r = await a.json('POST', `/api/datakits/${kit}/query`, token, { sql: 'select 1 AS one' })
    process.send!({ start, end: now(), ms: r.ms, status: r.status, error: r.status === 200 ? '' : String(r.body?.error ?? '') } satisfies LightQuery)
    await Bun.sleep(50)
  }
}

/** The p-th percentile (0–100) of `xs`. */
export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((x, y) => x - y)
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!
}

/**
 * Run every DataKit abuse as `abuser` against the server at `baseUrl` (default limits
 * expected, their time limits in `timeouts`), each inside `around`. The abuser's datakits are
 * left in place (the caller's server is throw-away). `tmpDir`: where the gzip bomb is written
 * (about 1.4 MB).
 */
export async function runDatakitAbuse(baseUrl: string, abuser: string, tmpDir: string, timeouts: DatakitTimeouts, around: Around): Promise<void> {
  const a = api(baseUrl)
  const kit = await readyKit(a, abuser, 'abuse', SMALL_CSV)
  const queryTimeout = { name: 'DATAKIT_QUERY_TIMEOUT_MS', ms: timeouts.queryMs }
  const profileTimeout = { name: 'DATAKIT_PROFILE_TIMEOUT_MS', ms: timeouts.profileMs }
  const query = async (sql: string): Promise<Answer> => {
    const r = await a.json('POST', `/api/datakits/${kit}/query`, abuser, { sql })
    const truncated = r.body?.data?.truncatedBy ? `truncated by ${r.body.data.truncatedBy}, ${r.body.data.rowCount} rows` : ''
    return { status: r.status, bound: limitOf(r.body) || truncated, error: r.body?.error ?? null, msToError: r.ms, timeout: queryTimeout }
  }
  /** `n` of the same query at once: every status and bound, the slowest answer. */
  const many = async (n: number, sql: string): Promise<Answer> => {
    const answers = await Promise.all(Array.from({ length: n }, () => query(sql)))
    return {
      status: [...new Set(answers.map((r) => r.status))].join('/'),
      bound: [...new Set(answers.map((r) => r.bound))].join(', '),
      error: answers.find((r) => r.error)?.error ?? null,
      msToError: Math.max(...answers.map((r) => r.msToError)),
      timeout: queryTimeout,
    }
  }
  /** An upload, then its profiling: the upload's answer when refused, else the version's end. */
  const upload = async (name: string, filename: string, data: Blob): Promise<Answer> => {
    const t0 = performance.now()
    const up = await a.upload(abuser, name, filename, data)
    if (up.status !== 201) return { status: up.status, bound: limitOf(up.body), error: up.body?.error ?? null, msToError: up.ms, timeout: profileTimeout }
    const s = await settle(a, abuser, up.body.data.id)
    const named = /\b[A-Z][A-Z0-9_]+=\S+/.exec(s.error ?? '')?.[0] ?? ''
    return { status: s.status, bound: named, error: s.error, msToError: performance.now() - t0, timeout: profileTimeout }
  }

  await around('1', 'memory bomb: select list_sum(range(1000000000))', () => query('select list_sum(range(1000000000)) AS s'))
  await around('1', 'four memory bombs at once', () => many(4, 'select list_sum(range(1000000000)) AS s'))
  await around('2', "one 400 MB value: select repeat('x', 400000000)", () => query("select repeat('x', 400000000) AS s"))
  await around('2', 'wide rows: 1 KB × 1,000,000 rows', () => query("select i, repeat('y', 1000) AS pad from range(1000000) t(i)"))
  await around('2', 'the same, exported as CSV (streamed)', async () => {
    const t0 = performance.now()
    const res = await fetch(`${baseUrl}/api/datakits/${kit}/query/export`, {
      method: 'POST',
      headers: { authorization: `Bearer ${abuser}`, 'content-type': 'application/json' },
      body: JSON.stringify({ sql: "select i, repeat('y', 1000) AS pad from range(1000000) t(i)", format: 'csv' }),
    })
    const answered = performance.now() - t0
    if (!res.ok) {
      const body: any = await res.json()
      return { status: res.status, bound: limitOf(body), error: body?.error ?? null, msToError: answered, timeout: queryTimeout }
    }
    let bytes = 0
    for await (const chunk of res.body!) bytes += chunk.byteLength
    const secs = (performance.now() - t0) / 1000
    return {
      status: res.status,
      bound: 'DATAKIT_EXPORT_MAX_BYTES (not reached)',
      error: null,
      msToError: answered,
      timeout: queryTimeout,
      note: `${(bytes / 1e6).toFixed(0)} MB streamed, the last byte after ${secs.toFixed(1)} s`,
    }
  })
  await around('3', '8 slow queries by one user (each until DATAKIT_QUERY_TIMEOUT_MS)', () =>
    // CPU-bound and small in memory (range() streams; the filter is never true): it ends at the time limit.
    many(8, 'SELECT count(*) AS n FROM range(1000000000000000) t(i) WHERE hash(i) = 0 AND i < 0'),
  )
  // Made before the light user starts measuring (compressing 1.5 GB takes a few seconds here).
  const bomb = `${tmpDir}/datakit-gzip-bomb.csv.gz`
  await writeGzipBomb(bomb, 1_470_000_000)
  await around('4', `gzip bomb: ${(Bun.file(bomb).size / 1e6).toFixed(2)} MB → 1.47 GB of CSV rows`, () => upload('bomb', 'bomb.csv.gz', Bun.file(bomb)))
  const wide = new Blob([wideCsv(5000, 200)])
  await around('4', '5,000-column CSV', () => upload('wide', 'wide.csv', wide))
}
