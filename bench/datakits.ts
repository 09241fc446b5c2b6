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
 *    curl's own time_total), next to Bun.write of the same bytes to the same disk. Target ≥ 0.8×.
 *    For comparison, the same body sent by Bun's fetch from a buffer built beforehand: after an
 *    idle moment, Bun's client spends ~20 ms on a 48 MB body before the server sees the request
 *    (measured against a bare Bun.serve too), which is the client's time, not the server's.
 *    Then the multipart parsers side by side — the built-in one (src/http/upload.ts),
 *    @fastify/busboy and @remix-run/multipart-parser — each through the same upload path
 *    (`receiveUpload` with the route's limits, in bench/support/upload-parsers-server.ts), curl
 *    again, rounds rotating the order, a Bun.write in each round: MB/s, ratio to Bun.write, the
 *    server's CPU per upload by thread (event loop, hash thread, file-system pool) and its peak
 *    RSS growth; and each parser alone in this process (the same body from memory in 64 KB
 *    chunks, as Bun delivers a request body), which is the parser's own cost.
 * 3. Memory: the server's peak RSS (VmHWM, reset just before) while a 1 GB CSV, generated on
 *    the fly by a client process, streams in.
 *
 * Env: BENCH_ROWS (default 1000000), BENCH_ROUNDS (default 3), BENCH_PARSER_ROUNDS (default 8),
 * BENCH_PARSER_LARGE_MB (default 256), BENCH_LARGE_MB (default 1024),
 * DATABASE_URL (a throw-away database is created there and dropped; unset: embedded PostgreSQL).
 */
import postgres from 'postgres'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { DuckDBInstance } from '@duckdb/node-api'
import { writeLargeCsv } from '../test/support/datasets.ts'
import { generatedCsv, hashing, multipartBytes, multipartStream } from '../test/support/datakit-upload.ts'
import { wsClient } from '../test/support/ws.ts'

import { parseMultipart, type MultipartParser } from '../src/http/upload.ts'
import { cpuOf } from './support/load.ts'
import { busboyParser, remixParser } from './support/multipart-parsers.ts'
import { startBenchServer } from './support/server.ts'

const rows = Number(process.env.BENCH_ROWS ?? 1_000_000)
const rounds = Number(process.env.BENCH_ROUNDS ?? 3)
const parserRounds = Number(process.env.BENCH_PARSER_ROUNDS ?? 8)
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
const clockTicks = Number(new TextDecoder().decode(Bun.spawnSync(['getconf', 'CLK_TCK']).stdout).trim()) || 100
/**
 * CPU time (ms) of process `pid` by thread: its event loop (the main thread), the hash thread
 * (Bun names a Worker's thread "Worker"), the file-system pool ("Bun Pool N") and the rest.
 */
function threadCpu(pid: number): Record<'loop' | 'hash' | 'fs' | 'other', number> {
  const out = { loop: 0, hash: 0, fs: 0, other: 0 }
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim()
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8')
      const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
      const ms = ((Number(f[11]) + Number(f[12])) * 1000) / clockTicks
      out[tid === String(pid) ? 'loop' : comm === 'Worker' ? 'hash' : comm.startsWith('Bun Pool') ? 'fs' : 'other'] += ms
    } catch {
      // The thread ended between the listing and the read.
    }
  }
  return out
}
const versionOf = (pkg: string) => (JSON.parse(readFileSync(join(import.meta.dir, '..', 'node_modules', pkg, 'package.json'), 'utf8')) as { version: string }).version

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

  // ---- the parsers through the same upload path -------------------------------------------------
  const parserDir = join(work, 'parsers')
  const ps = Bun.spawn([process.execPath, join(import.meta.dir, 'support/upload-parsers-server.ts'), parserDir], { stdout: 'pipe', stderr: 'inherit' })
  const parserBase = await (async () => {
    const reader = ps.stdout.getReader()
    let text = ''
    for (;;) {
      const { done, value } = await reader.read()
      if (done) throw new Error('upload-parsers-server exited before listening')
      text += new TextDecoder().decode(value)
      const m = /listening (\d+)/.exec(text)
      if (m) {
        reader.releaseLock()
        return `http://127.0.0.1:${m[1]}`
      }
    }
  })()
  const PARSERS = [
    { key: 'builtin', label: 'built-in (src/http/upload.ts)', parser: parseMultipart as MultipartParser },
    { key: 'busboy', label: `@fastify/busboy ${versionOf('@fastify/busboy')}`, parser: busboyParser },
    { key: 'remix', label: `@remix-run/multipart-parser ${versionOf('@remix-run/multipart-parser')}`, parser: remixParser },
  ] as const
  type ParserRun = { ms: number; loop: number; hash: number; fs: number; rss: number }
  const parserRuns = new Map<string, ParserRun[]>(PARSERS.map((p) => [p.key, []]))
  const parserWrites: number[] = []
  const parserResponse = join(work, 'parser-response.json')
  async function parserUpload(key: string): Promise<ParserRun> {
    const pid = ps.pid
    await fetch(`${parserBase}/gc`, { method: 'POST' })
    writeFileSync(`/proc/${pid}/clear_refs`, '5')
    const rss0 = status(pid, 'VmRSS')
    const cpu0 = threadCpu(pid)
    const p = Bun.spawn(['curl', '-sS', '-F', `dataset=@${csv}`, '-F', 'name=Bench data', '-F', 'description=bench:datakits', '-o', parserResponse, '-w', '%{http_code} %{time_total}', `${parserBase}/${key}`], {
      stdout: 'pipe',
      stderr: 'pipe',
    })
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited])
    if (code !== 0) throw new Error(`curl exited with ${code}: ${err}`)
    const cpu1 = threadCpu(pid)
    const rss = status(pid, 'VmHWM') - rss0
    const [httpStatus, seconds] = out.trim().split(' ')
    const json = JSON.parse(await Bun.file(parserResponse).text())
    if (httpStatus !== '201' || json.data.sha256 !== sha256 || json.data.size !== csvBytes.length) throw new Error(`${key}: ${httpStatus} ${JSON.stringify(json)}`)
    return { ms: Number(seconds) * 1000, loop: cpu1.loop - cpu0.loop, hash: cpu1.hash - cpu0.hash, fs: cpu1.fs - cpu0.fs, rss }
  }
  /** Peak RSS growth of the parsers' server while a generated CSV of `bytes` streams in (chunked). */
  async function parserLarge(key: string, bytes: number): Promise<number> {
    const pid = ps.pid
    await fetch(`${parserBase}/gc`, { method: 'POST' })
    writeFileSync(`/proc/${pid}/clear_refs`, '5')
    const rss0 = status(pid, 'VmRSS')
    const src = hashing(generatedCsv(bytes))
    const body = multipartStream([{ name: 'dataset', filename: 'large.csv', contentType: 'text/csv', data: src.source }, { name: 'name', value: 'Large' }])
    const res = await fetch(`${parserBase}/${key}`, { method: 'POST', headers: { 'content-type': body.contentType }, body: body.body, duplex: 'half' } as RequestInit)
    const json = (await res.json()) as any
    if (res.status !== 201 || json.data.sha256 !== src.result().sha256) throw new Error(`${key} large: ${res.status} ${JSON.stringify(json)}`)
    return status(pid, 'VmHWM') - rss0
  }
  for (const p of PARSERS) await parserUpload(p.key) // warm-up
  for (let r = 0; r < parserRounds; r++) {
    // The order rotates so that no parser always follows the same one.
    for (let i = 0; i < PARSERS.length; i++) {
      const p = PARSERS[(i + r) % PARSERS.length]!
      parserRuns.get(p.key)!.push(await parserUpload(p.key))
    }
    parserWrites.push(await bunWrite())
  }
  const parserLargeBytes = Number(process.env.BENCH_PARSER_LARGE_MB ?? 256) * 1024 * 1024
  const parserPeak = new Map<string, number>()
  for (const p of PARSERS) parserPeak.set(p.key, await parserLarge(p.key, parserLargeBytes))
  ps.kill('SIGTERM')
  await ps.exited

  // Each parser alone: the same multipart body from memory in 64 KB chunks, every data event consumed.
  const parseAlone = new Map<string, number[]>(PARSERS.map((p) => [p.key, []]))
  const chunkBody = (body: Uint8Array) => {
    let off = 0
    return new ReadableStream<Uint8Array>({
      pull(c) {
        if (off >= body.byteLength) return c.close()
        c.enqueue(body.subarray(off, off + 64 * 1024))
        off += 64 * 1024
      },
    })
  }
  // The same rows with Windows line endings (CRLF, as spreadsheets export CSV): CR and LF are
  // in the delimiter (CRLF--boundary), which matters to a search that skips ahead by the byte
  // it lands on.
  const crlfForm = await multipartBytes([
    { name: 'dataset', filename: 'data.csv', contentType: 'text/csv', data: new TextDecoder().decode(csvBytes).replaceAll('\n', '\r\n') },
    { name: 'name', value: 'Bench data' },
  ])
  const parseAloneCrlf = new Map<string, number[]>(PARSERS.map((p) => [p.key, []]))
  for (let r = 0; r < 3; r++) {
    for (const p of PARSERS) {
      for (const [f, into] of [[form, parseAlone], [crlfForm, parseAloneCrlf]] as const) {
        const t = performance.now()
        let n = 0
        const boundary = /boundary=(.+)$/.exec(f.contentType)![1]!
        for await (const ev of p.parser(chunkBody(f.body), boundary, { maxHeaderBytes: 16 * 1024, maxParts: 16 })) if (ev.type === 'data') n += ev.bytes.byteLength
        into.get(p.key)!.push(performance.now() - t)
        if (n < csvBytes.length) throw new Error(`${p.key}: parsed ${n} bytes`)
      }
    }
  }

  // The same parsers on the cases the upload tests check (test/http/datakits.test.ts, upload.test.ts).
  const conformance = new Map<string, string[]>(PARSERS.map((p) => [p.key, []]))
  {
    const te = new TextEncoder()
    const valid = await multipartBytes([{ name: 'dataset', filename: 'f.csv', contentType: 'text/csv', data: 'a,b\r\n--bn\r\n1,2\r\n' }, { name: 'name', value: 'x' }], 'bnd')
    const cases: { name: string; body: Uint8Array; chunk: number; ok: boolean }[] = [
      { name: 'a valid body in 1-byte chunks', body: valid.body, chunk: 1, ok: true },
      { name: 'garbage after a boundary', body: te.encode('--bndJUNK\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n--bnd--'), chunk: 3, ok: false },
      { name: 'a part without Content-Disposition', body: te.encode('--bnd\r\nContent-Type: text/plain\r\n\r\nx\r\n--bnd--\r\n'), chunk: 3, ok: false },
      { name: 'a body cut short', body: valid.body.subarray(0, valid.body.length - 8), chunk: 7, ok: false },
      { name: 'a header section over the limit', body: te.encode('--bnd\r\nContent-Disposition: form-data; name="a"' + 'x'.repeat(20_000)), chunk: 1000, ok: false },
    ]
    for (const p of PARSERS) {
      for (const c of cases) {
        let off = 0
        const stream = new ReadableStream<Uint8Array>({
          pull(ctl) {
            if (off >= c.body.length) return ctl.close()
            ctl.enqueue(c.body.slice(off, off + c.chunk))
            off += c.chunk
          },
        })
        let outcome: 'ok' | 400 | 'other'
        try {
          for await (const _ of p.parser(stream, 'bnd', { maxHeaderBytes: 16 * 1024, maxParts: 16 })) {
            // Every event consumed.
          }
          outcome = 'ok'
        } catch (err) {
          outcome = (err as { status?: number }).status === 400 ? 400 : 'other'
        }
        if (outcome !== (c.ok ? 'ok' : 400)) conformance.get(p.key)!.push(`${c.name} → ${outcome === 'ok' ? 'accepted' : outcome === 400 ? '400' : 'error'}`)
      }
    }
    conformance.set('cases', cases.map((c) => c.name))
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
  console.log(`  ratio: of medians ${(median(apiMBs) / median(writeMBs)).toFixed(2)}×, median per round ${median(apiMBs.map((x, i) => x / writeMBs[i]!)).toFixed(2)}× (target ≥ 0.8×)`)
  console.log(`  (the same upload sent by Bun's fetch from a prebuilt body: median ${median(fetched.map(rate)).toFixed(0)} MB/s, ${fmtMs(fetched)})`)
  const pw = parserWrites.map(rate)
  console.log(`\n  the parsers through the same upload path (receiveUpload: file streamed to disk and hashed on the hash thread, the route's limits; curl; ${parserRounds} rounds, order rotating):`)
  // CPU time is counted in clock ticks (10 ms): a mean over the rounds says more than a median.
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
  console.log(`  ${'parser'.padEnd(38)}  MB/s  ÷ Bun.write  per round   CPU ms loop/hash/fs   peak RSS: this upload / ${mb(parserLargeBytes).toFixed(0)} MB chunked`)
  for (const p of PARSERS) {
    const runs = parserRuns.get(p.key)!
    const mbs = runs.map((x) => rate(x.ms))
    const cpu = [mean(runs.map((x) => x.loop)), mean(runs.map((x) => x.hash)), mean(runs.map((x) => x.fs))].map((x) => x.toFixed(0)).join(' / ')
    console.log(
      `  ${p.label.padEnd(38)} ${median(mbs).toFixed(0).padStart(5)}  ${`${(median(mbs) / median(pw)).toFixed(2)}×`.padStart(11)}  ${`${median(mbs.map((x, i) => x / pw[i]!)).toFixed(2)}×`.padStart(9)}` +
        `   ${cpu.padStart(18)}   +${mb(median(runs.map((x) => x.rss))).toFixed(0)} MB / +${mb(parserPeak.get(p.key)!).toFixed(0)} MB`,
    )
  }
  console.log(`  ${'Bun.write of the same bytes'.padEnd(38)} ${median(pw).toFixed(0).padStart(5)}  (${fmtMs(parserWrites)})`)
  console.log(`  the upload tests' cases (${conformance.get('cases')!.join('; ')}):`)
  for (const p of PARSERS) {
    const wrong = conformance.get(p.key)!
    console.log(`  ${p.label.padEnd(38)} ${wrong.length === 0 ? 'all as expected' : `wrong: ${wrong.join('; ')}`}`)
  }
  console.log(`  each parser alone: the body from memory in 64 KB chunks (no network, disk or hash), median of 3, MB/s of the body — the CSV with LF / with CRLF line ends:`)
  const bodyRate = (bytes: number, ms: number) => mb(bytes) / (ms / 1000)
  for (const p of PARSERS) {
    const lf = median(parseAlone.get(p.key)!)
    const cr = median(parseAloneCrlf.get(p.key)!)
    console.log(`  ${p.label.padEnd(38)} ${bodyRate(form.body.byteLength, lf).toFixed(0).padStart(6)} / ${bodyRate(crlfForm.body.byteLength, cr).toFixed(0).padStart(6)} MB/s  (${lf.toFixed(1)} / ${cr.toFixed(1)} ms)`)
  }
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
