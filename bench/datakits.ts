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
 *    For comparison, the same body sent by Bun's fetch from a buffer built beforehand (after an
 *    idle moment, Bun's client spends ~20 ms on a 48 MB body before the server sees the request,
 *    measured against a bare Bun.serve too: the client's time, not the server's), and the same
 *    file through the upload path alone (`receiveUpload` with the route's limits in a server of
 *    its own, bench/support/upload-parsers-server.ts: no authentication, type detection or actor
 *    turn). Then large files through that upload path: a BENCH_UPLOAD_MB/4 and a BENCH_UPLOAD_MB
 *    CSV sent by curl from disk, rounds rotating with Bun.write of the same bytes and a
 *    FileHandle writing them 1 MB at a time: MB/s, the ratio to Bun.write, the CPU per upload by
 *    thread (event loop, hash thread, file-system pool) and curl's, and the server's peak RSS
 *    after each size (flat: no higher after the larger); and the parser alone in this process
 *    (the body from memory in 64 KB chunks, as Bun delivers a request body).
 * 3. Memory: the server's peak RSS (VmHWM, reset just before) while a 1 GB CSV, generated on
 *    the fly by a client process, streams in.
 *
 * Env: BENCH_ROWS (default 1000000), BENCH_ROUNDS (default 3), BENCH_UPLOAD_MB (default 1024),
 * BENCH_UPLOAD_ROUNDS (default 5), BENCH_LARGE_MB (default 1024),
 * DATABASE_URL (a throw-away database is created there and dropped; unset: embedded PostgreSQL).
 */
import postgres from 'postgres'
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { open } from 'node:fs/promises'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { DuckDBInstance } from '@duckdb/node-api'
import { writeLargeCsv } from '../test/support/datasets.ts'
import { generatedCsv, hashing, multipartBytes, multipartStream } from '../test/support/datakit-upload.ts'
import { wsClient } from '../test/support/ws.ts'

import { parseMultipart } from '../src/http/upload.ts'
import { cpuOf } from './support/load.ts'
import { startBenchServer } from './support/server.ts'

const rows = Number(process.env.BENCH_ROWS ?? 1_000_000)
const rounds = Number(process.env.BENCH_ROUNDS ?? 3)
const largeRounds = Number(process.env.BENCH_UPLOAD_ROUNDS ?? 5)
const largeBytes = Number(process.env.BENCH_LARGE_MB ?? 1024) * 1024 * 1024
const uploadBytes = Number(process.env.BENCH_UPLOAD_MB ?? 1024) * 1024 * 1024
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

/** A file on disk for curl to send, and what the server must report back. */
interface BenchFile {
  path: string
  bytes: number
  sha256: string
}
/** One upload through the upload path alone: curl's time, the server's CPU by thread and curl's own CPU (ms). */
interface PathRun {
  ms: number
  loop: number
  hash: number
  fs: number
  client: number
}

const status = (pid: number, field: 'VmHWM' | 'VmRSS') => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN) * 1024

/** The upload path's own server (section 2), stopped in `finally` if the bench fails before it does. */
let pathServerProc: Bun.Subprocess | undefined
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
  async function bunWriteTo(path: string, bytes: Uint8Array): Promise<number> {
    const t = performance.now()
    await Bun.write(path, bytes)
    const ms = performance.now() - t
    rmSync(path, { force: true })
    return ms
  }
  const bunWrite = () => bunWriteTo(copy, csvBytes)

  // The upload path alone: receiveUpload with the route's options in a server of its own
  // (bench/support/upload-parsers-server.ts), no authentication, type detection or actor turn.
  const pathServer = await (async () => {
    const proc = Bun.spawn([process.execPath, join(import.meta.dir, 'support/upload-parsers-server.ts'), join(work, 'path-uploads')], { stdout: 'pipe', stderr: 'inherit' })
    pathServerProc = proc
    const reader = proc.stdout.getReader()
    let text = ''
    for (;;) {
      const { done, value } = await reader.read()
      if (done) throw new Error('upload-parsers-server exited before listening')
      text += new TextDecoder().decode(value)
      const m = /listening (\d+)/.exec(text)
      if (m) {
        reader.releaseLock()
        return { proc, url: `http://127.0.0.1:${m[1]}`, idleRss: status(proc.pid, 'VmRSS') }
      }
    }
  })()
  const pathResponse = join(work, 'path-response.json')
  /** One curl upload of `file` to the upload path alone: curl's time, the server's CPU by thread, curl's own CPU (ms). */
  async function pathUpload(file: BenchFile): Promise<PathRun> {
    const pid = pathServer.proc.pid
    const cpu0 = threadCpu(pid)
    const p = Bun.spawn(['curl', '-sS', '-F', `dataset=@${file.path}`, '-F', 'name=Bench data', '-F', 'description=bench:datakits', '-o', pathResponse, '-w', '%{http_code} %{time_total}', pathServer.url], {
      stdout: 'pipe',
      stderr: 'pipe',
    })
    const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited])
    if (code !== 0) throw new Error(`curl exited with ${code}: ${err}`)
    const cpu1 = threadCpu(pid)
    const [httpStatus, seconds] = out.trim().split(' ')
    const json = JSON.parse(await Bun.file(pathResponse).text())
    if (httpStatus !== '201' || json.data.sha256 !== file.sha256 || json.data.size !== file.bytes) throw new Error(`upload path: ${httpStatus} ${JSON.stringify(json)}`)
    const client = Number(p.resourceUsage()?.cpuTime.total ?? 0n) / 1000
    return { ms: Number(seconds) * 1000, loop: cpu1.loop - cpu0.loop, hash: cpu1.hash - cpu0.hash, fs: cpu1.fs - cpu0.fs, client }
  }
  const pathCopy = join(work, 'path-uploads', 'copy.csv')
  /**
   * The same bytes written 1 MB at a time through a FileHandle, as the upload path writes. For a
   * large buffer Bun.write (Bun 1.4) first copies it into a memfd and writes from a fresh mapping
   * of that, page-faulting every 4 KB page (strace: one write(2) of 1 GB taking ~2 s), so it is
   * the slower of the two here.
   */
  async function handleWrite(bytes: Uint8Array): Promise<number> {
    const t = performance.now()
    const fh = await open(pathCopy, 'w')
    for (let off = 0; off < bytes.byteLength; off += 1024 * 1024) await fh.write(bytes.subarray(off, off + 1024 * 1024))
    await fh.close()
    const ms = performance.now() - t
    rmSync(pathCopy, { force: true })
    return ms
  }
  const csvFileInfo: BenchFile = { path: csv, bytes: csvBytes.length, sha256 }

  // Warm-up: the server's code paths and DuckDB, the page cache for the CSV.
  await pathUpload(csvFileInfo)
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
  const pathOnly: number[] = []
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
    pathOnly.push((await pathUpload(csvFileInfo)).ms)
  }

  // ---- the upload path alone, on large files ---------------------------------------------------
  // receiveUpload with the route's limits in a server of its own (bench/support/upload-parsers-server.ts),
  // so its peak RSS (VmHWM, never reset) and CPU time are the upload path's alone. The client is
  // curl sending a file from disk (Content-Length known, so the hash runs on the hash thread, as
  // for a browser's upload). Two sizes, the smaller first: a flat peak RSS is no higher after
  // the larger. Baselines in the same rounds, the order rotating: Bun.write of the same bytes
  // (held in this process, the client) to the same disk, and the same bytes written 1 MB at a
  // time through a FileHandle.
  const sizes = [Math.round(uploadBytes / 4), uploadBytes]
  /** A generated CSV of about `bytes` on disk, and its sha256. */
  async function csvFile(bytes: number): Promise<BenchFile> {
    const path = join(work, `upload-${mb(bytes).toFixed(0)}mb.csv`)
    const w = Bun.file(path).writer()
    const h = new Bun.CryptoHasher('sha256')
    let n = 0
    for await (const c of generatedCsv(bytes)()) {
      h.update(c)
      n += c.byteLength
      w.write(c)
    }
    await w.end()
    return { path, bytes: n, sha256: h.digest('hex') }
  }
  const bySize = sizes.map(() => ({ runs: [] as PathRun[], writes: [] as number[], handleWrites: [] as number[], peak: 0, file: { path: '', bytes: 0, sha256: '' } as BenchFile }))
  for (const [i, size] of sizes.entries()) {
    const m = bySize[i]!
    m.file = await csvFile(size)
    const bytes = await Bun.file(m.file.path).bytes()
    if (i === 0) {
      await pathUpload(m.file) // warm-up, and the page cache for the file
      await bunWriteTo(pathCopy, bytes)
      await handleWrite(bytes)
    }
    for (let r = 0; r < largeRounds; r++) {
      // The order rotates so that nothing always follows the same thing (the writeback of the
      // last file is still going on when the next one starts).
      const steps = [async () => m.runs.push(await pathUpload(m.file)), async () => m.writes.push(await bunWriteTo(pathCopy, bytes)), async () => m.handleWrites.push(await handleWrite(bytes))]
      for (let j = 0; j < steps.length; j++) await steps[(j + r) % steps.length]!()
    }
    m.peak = status(pathServer.proc.pid, 'VmHWM')
    rmSync(m.file.path, { force: true })
  }
  pathServer.proc.kill('SIGTERM')
  await pathServer.proc.exited

  // The parser alone: the 1M-row multipart body from memory in 64 KB chunks (as Bun delivers a
  // request body), every data event consumed, with LF and with CRLF line ends (CR and LF are in
  // the delimiter, CRLF--boundary, so a CRLF file makes the parser look closer).
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
  const crlfForm = await multipartBytes([
    { name: 'dataset', filename: 'data.csv', contentType: 'text/csv', data: new TextDecoder().decode(csvBytes).replaceAll('\n', '\r\n') },
    { name: 'name', value: 'Bench data' },
  ])
  const parseAlone = { lf: [] as number[], crlf: [] as number[] }
  for (let r = 0; r < 5; r++) {
    for (const [f, into] of [[form, parseAlone.lf], [crlfForm, parseAlone.crlf]] as const) {
      const t = performance.now()
      let n = 0
      for await (const ev of parseMultipart(chunkBody(f.body), /boundary=(.+)$/.exec(f.contentType)![1]!)) if (ev.type === 'data') n += ev.bytes.byteLength
      into.push(performance.now() - t)
      if (n < csvBytes.length) throw new Error(`parsed ${n} bytes`)
    }
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
  console.log(`  (the upload path alone, receiveUpload in a server of its own, curl: median ${median(pathOnly.map(rate)).toFixed(0)} MB/s, ${fmtMs(pathOnly)})`)
  const fileRate = (bytes: number, ms: number) => mb(bytes) / (ms / 1000)
  // CPU time is counted in clock ticks (10 ms): a mean over the rounds says more than a median.
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length
  const [small, big] = bySize as [(typeof bySize)[0], (typeof bySize)[0]]
  const sizeLabel = (m: typeof small) => `${mb(m.file.bytes).toFixed(0)} MB`
  console.log(
    `\n  large files through the upload path alone (receiveUpload with the route's limits in a server of its own: file streamed to disk, sha256 on the hash thread);` +
      ` curl sends a ${sizeLabel(small)}, then a ${sizeLabel(big)} CSV from disk; ${largeRounds} rounds of each size, the order rotating; MB/s of the file (medians);` +
      ` ÷ Bun.write: median of the per-round ratios to Bun.write of the same bytes (target ≥ 0.8×); CPU: mean per ${sizeLabel(big)} upload; peak RSS: the server's VmHWM, never reset:`,
  )
  const cols = (m: typeof small, ms: number[]) => {
    const mbs = ms.map((x) => fileRate(m.file.bytes, x))
    const ws = m.writes.map((x) => fileRate(m.file.bytes, x))
    return `${median(mbs).toFixed(0).padStart(6)} ${`${median(mbs.map((x, i) => x / ws[i]!)).toFixed(2)}×`.padStart(6)}`
  }
  console.log(`  ${''.padEnd(34)} ${sizeLabel(small).padStart(13)} ${sizeLabel(big).padStart(13)}   ${`CPU ms per ${sizeLabel(big)} upload`.padEnd(36)} server peak RSS`)
  console.log(`  ${''.padEnd(34)} ${'MB/s ÷write'.padStart(13)} ${'MB/s ÷write'.padStart(13)}   ${'loop / hash thread / fs pool; curl'.padEnd(36)} idle → after ${sizeLabel(small)} → after ${sizeLabel(big)}`)
  const runs = big.runs
  const cpu = `${[mean(runs.map((x) => x.loop)), mean(runs.map((x) => x.hash)), mean(runs.map((x) => x.fs))].map((x) => x.toFixed(0)).join(' / ')}; ${mean(runs.map((x) => x.client)).toFixed(0)}`
  const rss = [pathServer.idleRss, small.peak, big.peak].map((x) => `${mb(x).toFixed(0)} MB`).join(' → ')
  const ms = (m: typeof small) => m.runs.map((x) => x.ms)
  console.log(`  ${'upload (src/http/upload.ts)'.padEnd(34)} ${cols(small, ms(small))} ${cols(big, ms(big))}   ${cpu.padEnd(36)} ${rss}`)
  console.log(`  ${'Bun.write of the same bytes'.padEnd(34)} ${cols(small, small.writes)} ${cols(big, big.writes)}`)
  console.log(`  ${'FileHandle.write, 1 MB at a time'.padEnd(34)} ${cols(small, small.handleWrites)} ${cols(big, big.handleWrites)}`)
  const bodyRate = (bytes: number, xs: number[]) => mb(bytes) / (median(xs) / 1000)
  console.log(
    `  the parser alone (the ${mb(form.body.byteLength).toFixed(0)} MB body from memory in 64 KB chunks; no network, disk or hash; median of 5): ` +
      `${bodyRate(form.body.byteLength, parseAlone.lf).toFixed(0)} MB/s with LF line ends, ${bodyRate(crlfForm.body.byteLength, parseAlone.crlf).toFixed(0)} MB/s with CRLF`,
  )
  console.log(`\n3. memory: ${mb(large.bytes).toFixed(0)} MB CSV generated on the fly and streamed (chunked) in ${largeSeconds.toFixed(1)} s (${(mb(large.bytes) / largeSeconds).toFixed(0)} MB/s), sha256 verified`)
  console.log(`  server RSS before ${mb(rssBefore).toFixed(0)} MB; peak during the upload ${mb(peak).toFixed(0)} MB (VmHWM; sampled max ${mb(rssMax).toFixed(0)} MB), +${mb(peak - rssBefore).toFixed(0)} MB`)
} finally {
  if (pathServerProc && pathServerProc.exitCode === null && pathServerProc.signalCode === null) {
    pathServerProc.kill('SIGTERM')
    await pathServerProc.exited
  }
  await api.stop()
  if (dbName && process.env.DATABASE_URL) {
    const admin = postgres(process.env.DATABASE_URL, { max: 1, onnotice: () => {} })
    await admin.unsafe(`drop database if exists ${dbName} with (force)`)
    await admin.end()
  }
  rmSync(work, { recursive: true, force: true })
}
