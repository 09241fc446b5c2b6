/**
 * npm run bench:datakits — DataKits through the real server (its own process), next to
 * baselines measured in the same run:
 *
 * 1. Profiling: a generated 1,000,000-row CSV uploaded with the guide's curl command
 *    (`curl -X POST -H "Authorization: Bearer …" -F "dataset=@data.csv" -F "name=…" …`) until
 *    its READY event on /ws (upload, sha256, type detection, actor turn, CSV → Parquet,
 *    statistics, top values, profile stored), next to DuckDB alone running SUMMARIZE over the
 *    same file with the same threads and memory limit. Rounds alternate; medians. Target ≤ 1.5×.
 * 2. Upload throughput: MB/s of the same curl upload up to its 201 (streamed to disk, hashed;
 *    curl's own time_total), next to Bun.write of the same bytes to the same disk. Target ≥ 0.5×.
 *    For comparison, the same body sent by Bun's fetch from a buffer built beforehand: after an
 *    idle moment, Bun's client spends ~20 ms on a 48 MB body before the server sees the request
 *    (measured against a bare Bun.serve too), which is the client's time, not the server's.
 * 3. Memory: the server's peak RSS (VmHWM, reset just before) while a 1 GB CSV, generated on
 *    the fly by a client process, streams in.
 *
 * Env: BENCH_ROWS (default 1000000), BENCH_ROUNDS (default 3), BENCH_LARGE_MB (default 1024),
 * DATABASE_URL (a throw-away database is created there and dropped; unset: embedded PostgreSQL).
 */
import postgres from 'postgres'
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { DuckDBInstance } from '@duckdb/node-api'
import { writeLargeCsv } from '../test/support/datasets.ts'
import { generatedCsv, hashing, multipartBytes, multipartStream } from '../test/support/datakit-upload.ts'
import { wsClient } from '../test/support/ws.ts'

import { cpuOf } from './support/load.ts'
import { startBenchServer } from './support/server.ts'

const rows = Number(process.env.BENCH_ROWS ?? 1_000_000)
const rounds = Number(process.env.BENCH_ROUNDS ?? 3)
const largeBytes = Number(process.env.BENCH_LARGE_MB ?? 1024) * 1024 * 1024
// The server's engine defaults (DATAKIT_DUCKDB_THREADS=0 → min(2, cores), 1GB), used for the baseline too.
const threads = Math.max(1, Math.min(2, availableParallelism()))
const memoryLimit = '1GB'

const work = mkdtempSync(join(tmpdir(), 'quadrax-bench-datakits-'))
const uploadDir = join(work, 'uploads')

let dbName: string | undefined
let databaseUrl: string | undefined
if (process.env.DATABASE_URL) {
  dbName = `bench_${crypto.randomUUID().replaceAll('-', '').slice(0, 12)}`
  const admin = postgres(process.env.DATABASE_URL, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database ${dbName}`)
  await admin.end()
  const u = new URL(process.env.DATABASE_URL)
  u.pathname = `/${dbName}`
  databaseUrl = u.toString()
}

const api = await startBenchServer({ dataDir: work, databaseUrl, extra: { UPLOAD_DIR: uploadDir, MAX_FILE_SIZE: `${Math.ceil(largeBytes / 1024 ** 3) + 1}GB`, USER_STORAGE_QUOTA_BYTES: '1TB' } })

const selfCpu = () => {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
const mb = (bytes: number) => bytes / (1024 * 1024)
const status = (pid: number, field: 'VmHWM' | 'VmRSS') => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) * 1024

try {
  const base = api.base
  const call = api.call
  await call('POST', '/api/auth/register', { email: 'bench@bench.local', password: 'BenchUser123!', firstName: 'Bench', lastName: 'User' })
  const login = await call('POST', '/api/auth/login', { email: 'bench@bench.local', password: 'BenchUser123!' })
  const token = login.token as string
  const userId = login.user.id as string
  const ws = await wsClient(base, token)
  /** The first frame matching `pred`, received or to come (the timer is cleared once it comes). */
  const frame = (pred: (m: any) => boolean, timeoutMs: number): Promise<any> => {
    const seen = ws.messages.find(pred)
    if (seen !== undefined) return Promise.resolve(seen)
    return new Promise((resolve, reject) => {
      const onMessage = (e: MessageEvent) => {
        const m = JSON.parse(String(e.data))
        if (!pred(m)) return
        clearTimeout(timer)
        ws.ws.removeEventListener('message', onMessage)
        resolve(m)
      }
      const timer = setTimeout(() => {
        ws.ws.removeEventListener('message', onMessage)
        reject(new Error(`no matching WebSocket frame within ${timeoutMs} ms`))
      }, timeoutMs)
      ws.ws.addEventListener('message', onMessage)
    })
  }
  ws.send({ op: 'subscribe', topic: `user:${userId}`, since: 0, id: 'me' })
  await frame((m) => m.op === 'ack' && m.id === 'me', 10_000)

  // ---- the dataset -------------------------------------------------------------------------
  const csv = join(work, 'data.csv')
  let t0 = performance.now()
  await writeLargeCsv(csv, rows)
  const csvBytes = await Bun.file(csv).bytes()
  console.log(`generated ${rows.toLocaleString()} rows, ${mb(csvBytes.length).toFixed(1)} MB of CSV in ${(performance.now() - t0).toFixed(0)} ms`)
  const sha256 = new Bun.CryptoHasher('sha256').update(csvBytes).digest('hex')
  // For the fetch line only: the multipart body built once, beforehand.
  const form = await multipartBytes([
    { name: 'dataset', filename: 'data.csv', contentType: 'text/csv', data: csvBytes },
    { name: 'name', value: 'Bench data' },
    { name: 'description', value: 'bench:datakits' },
  ])
  const responseFile = join(work, 'response.json')

  /** The guide's curl command; its own time_total is the upload's time (no process start-up). */
  async function curlUpload(): Promise<{ json: any; ms: number }> {
    const p = Bun.spawn(
      ['curl', '-sS', '-X', 'POST', '-H', `Authorization: Bearer ${token}`, '-F', `dataset=@${csv}`, '-F', 'name=Bench data', '-F', 'description=bench:datakits',
        '-o', responseFile, '-w', '%{http_code} %{time_total}', `${base}/api/datakits/upload`],
      { stdout: 'pipe', stderr: 'pipe' },
    )
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited])
    if (code !== 0) throw new Error(`curl exited with ${code}: ${err}`)
    const [status, seconds] = out.trim().split(' ')
    const json = JSON.parse(await Bun.file(responseFile).text())
    if (status !== '201') throw new Error(`upload: ${status} ${JSON.stringify(json)}`)
    return { json, ms: Number(seconds) * 1000 }
  }

  async function fetchUpload(): Promise<{ json: any; ms: number }> {
    const t = performance.now()
    const res = await fetch(`${base}/api/datakits/upload`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': form.contentType }, body: form.body })
    const json = (await res.json()) as any
    if (res.status !== 201) throw new Error(`upload: ${res.status} ${JSON.stringify(json)}`)
    return { json, ms: performance.now() - t }
  }

  /** Upload (curl by default) until READY; checks the stored hash and the profiled row count. */
  async function upload(send = curlUpload): Promise<{ id: string; uploadMs: number; readyMs: number; cpuMs: number }> {
    const t = performance.now()
    const c = cpuOf(api.proc.pid)
    const { json, ms: uploadMs } = await send()
    const id = json.data.id as string
    if (json.data.latestVersion.sha256 !== sha256) throw new Error('upload: sha256 mismatch')
    const ev = await frame((m) => m.op === 'event' && m.type === 'datakit.status' && m.data.id === id && m.data.status !== 'PROCESSING', 300_000)
    if (ev.data.status !== 'READY') throw new Error(`datakit ${ev.data.status}: ${ev.data.error}`)
    if (ev.data.rowCount !== rows) throw new Error(`expected ${rows} rows, got ${ev.data.rowCount}`)
    return { id, uploadMs, readyMs: performance.now() - t, cpuMs: cpuOf(api.proc.pid) - c }
  }

  async function bareSummarize(): Promise<{ ms: number; cpuMs: number }> {
    const t = performance.now()
    const cpu0 = selfCpu()
    const instance = await DuckDBInstance.create(':memory:', { threads: String(threads), memory_limit: memoryLimit })
    const c = await instance.connect()
    await c.runAndReadAll(`SUMMARIZE SELECT * FROM read_csv('${csv}')`)
    c.closeSync()
    instance.closeSync()
    return { ms: performance.now() - t, cpuMs: selfCpu() - cpu0 }
  }

  const copy = join(work, 'copy.csv')
  async function bunWrite(): Promise<number> {
    const t = performance.now()
    await Bun.write(copy, csvBytes)
    const ms = performance.now() - t
    rmSync(copy, { force: true })
    return ms
  }

  // Warm-up: the server's code paths and DuckDB, the page cache for the CSV.
  await call('DELETE', `/api/datakits/${(await upload()).id}`, undefined, token)
  await call('DELETE', `/api/datakits/${(await upload(fetchUpload)).id}`, undefined, token)
  await bareSummarize()
  await bunWrite()

  const apiReady: number[] = []
  const apiCpu: number[] = []
  const apiUpload: number[] = []
  const bare: number[] = []
  const bareCpu: number[] = []
  const written: number[] = []
  const fetched: number[] = []
  for (let r = 0; r < rounds; r++) {
    const u = await upload()
    apiReady.push(u.readyMs)
    apiCpu.push(u.cpuMs)
    apiUpload.push(u.uploadMs)
    await call('DELETE', `/api/datakits/${u.id}`, undefined, token)
    const b = await bareSummarize()
    bare.push(b.ms)
    bareCpu.push(b.cpuMs)
    written.push(await bunWrite())
    const f = await upload(fetchUpload)
    fetched.push(f.uploadMs)
    await call('DELETE', `/api/datakits/${f.id}`, undefined, token)
  }

  // ---- memory: a large upload generated on the fly -------------------------------------------
  // This process is the client (the server is measured from outside, through /proc). The
  // peak is read the moment the 201 arrives: profiling starts right after, and DuckDB's own
  // memory (up to its limit) is not what this measures.
  const pid = api.proc.pid
  Bun.gc(true)
  writeFileSync(`/proc/${pid}/clear_refs`, '5') // reset VmHWM to the current RSS
  const rssBefore = status(pid, 'VmRSS')
  let rssMax = rssBefore
  const sampler = setInterval(() => (rssMax = Math.max(rssMax, status(pid, 'VmRSS'))), 20)
  const src = hashing(generatedCsv(largeBytes))
  const largeForm = multipartStream([{ name: 'dataset', filename: 'large.csv', contentType: 'text/csv', data: src.source }, { name: 'name', value: 'Large' }])
  t0 = performance.now()
  const largeRes = await fetch(`${base}/api/datakits/upload`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': largeForm.contentType },
    body: largeForm.body,
    duplex: 'half',
  } as RequestInit)
  const peak = status(pid, 'VmHWM')
  clearInterval(sampler)
  const largeSeconds = (performance.now() - t0) / 1000
  const largeJson = (await largeRes.json()) as any
  if (largeRes.status !== 201) throw new Error(`large upload: ${largeRes.status} ${JSON.stringify(largeJson)}`)
  const sent = src.result()
  if (largeJson.data.latestVersion.sha256 !== sent.sha256 || largeJson.data.latestVersion.sizeBytes !== sent.bytes) throw new Error('large upload: sha256 or size mismatch')
  await call('DELETE', `/api/datakits/${largeJson.data.id}`, undefined, token)
  ws.close()
  const large = { bytes: sent.bytes }

  // ---- report --------------------------------------------------------------------------------
  const fmtMs = (xs: number[]) => `median ${median(xs).toFixed(0)} ms  [${xs.map((x) => x.toFixed(0)).join(', ')}]`
  const perRound = (a: number[], b: number[]) => median(a.map((x, i) => x / b[i]!))
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
  console.log(`\nbench:datakits — ${rows.toLocaleString()}-row CSV (${mb(csvBytes.length).toFixed(1)} MB), ${rounds} rounds; DuckDB threads=${threads} memory_limit=${memoryLimit}; server LOG_LEVEL=warn; load average ${load} on ${availableParallelism()} cores`)
  console.log('\n1. profiling')
  console.log(`  through the API (upload → READY event)   ${fmtMs(apiReady)}`)
  console.log(`  DuckDB alone: SUMMARIZE read_csv         ${fmtMs(bare)}`)
  console.log(`  wall ratio: of medians ${(median(apiReady) / median(bare)).toFixed(2)}×, median per round ${perRound(apiReady, bare).toFixed(2)}× (target ≤ 1.5×)`)
  // CPU time swings far less than wall time when other processes share the cores.
  console.log(`  CPU, server process (every thread)       ${fmtMs(apiCpu)}`)
  console.log(`  CPU, DuckDB alone (this process)         ${fmtMs(bareCpu)}`)
  console.log(`  CPU ratio: of medians ${(median(apiCpu) / median(bareCpu)).toFixed(2)}×, median per round ${perRound(apiCpu, bareCpu).toFixed(2)}×`)
  // MB/s of the file (the CSV), for the upload as for the write.
  const rate = (ms: number) => mb(csvBytes.length) / (ms / 1000)
  const apiMBs = apiUpload.map(rate)
  const writeMBs = written.map(rate)
  console.log('\n2. upload throughput')
  console.log(`  POST /api/datakits/upload, curl (→ 201)  median ${median(apiMBs).toFixed(0)} MB/s  (${fmtMs(apiUpload)})`)
  console.log(`  Bun.write of the same bytes              median ${median(writeMBs).toFixed(0)} MB/s  (${fmtMs(written)})`)
  console.log(`  ratio: of medians ${(median(apiMBs) / median(writeMBs)).toFixed(2)}×, median per round ${median(apiMBs.map((x, i) => x / writeMBs[i]!)).toFixed(2)}× (target ≥ 0.5×)`)
  console.log(`  (the same upload sent by Bun's fetch from a prebuilt body: median ${median(fetched.map(rate)).toFixed(0)} MB/s, ${fmtMs(fetched)})`)
  console.log(`\n3. memory: ${mb(large.bytes).toFixed(0)} MB CSV generated on the fly and streamed (chunked) in ${largeSeconds.toFixed(1)} s (${(mb(large.bytes) / largeSeconds).toFixed(0)} MB/s), sha256 verified`)
  console.log(`  server RSS before ${mb(rssBefore).toFixed(0)} MB; peak during the upload ${mb(peak).toFixed(0)} MB (VmHWM; sampled max ${mb(rssMax).toFixed(0)} MB), +${mb(peak - rssBefore).toFixed(0)} MB`)
} finally {
  await api.stop()
  if (dbName && process.env.DATABASE_URL) {
    const admin = postgres(process.env.DATABASE_URL, { max: 1, onnotice: () => {} })
    await admin.unsafe(`drop database if exists ${dbName} with (force)`)
    await admin.end()
  }
  rmSync(work, { recursive: true, force: true })
}
