/**
 * Micro-benchmark of the dataset engine alone (no HTTP, no upload): profiling a generated
 * CSV through DuckDBDatasetEngine.profile (CSV → Parquet, SUMMARIZE, top values) next to
 * DuckDB by itself running SUMMARIZE over the same file with the same threads and memory
 * limit, in the same process. Target: profile ≤ 1.5 × bare SUMMARIZE.
 *
 *   bun bench/datakits-engine.ts [rows=1000000] [rounds=5]
 *
 * Rounds alternate the two so neither gets a warmer page cache; medians are reported. Besides
 * wall time, the CPU time (user + system, all DuckDB threads included; for the engine, its
 * worker processes' too) is reported: on a machine shared with other work, wall time swings
 * with the load, CPU time much less.
 */
import { readFileSync, rmSync } from 'node:fs'
import { DuckDBInstance } from '@duckdb/node-api'
import { DuckDBDatasetEngine } from '../src/engines/datasets/duckdb.ts'
import { detectFormat } from '../src/engines/datasets/format.ts'
import { tempDir, writeLargeCsv } from '../test/support/datasets.ts'

const rows = Number(process.argv[2] ?? 1_000_000)
const rounds = Number(process.argv[3] ?? 5)
const engine = new DuckDBDatasetEngine()

using dir = tempDir('quadrax-bench-datakits-')
const csv = dir.file('data.csv')
let t = performance.now()
await writeLargeCsv(csv, rows)
const bytes = Bun.file(csv).size
console.log(`generated ${rows.toLocaleString()} rows, ${(bytes / 1e6).toFixed(1)} MB in ${(performance.now() - t).toFixed(0)} ms`)

interface Sample {
  wall: number
  cpu: number
}

function cpuMs(): number {
  const u = process.cpuUsage()
  return (u.user + u.system) / 1000
}

/** CPU time of each of the engine's worker processes (profiling runs in one), ms by pid (utime + stime at 100 ticks/s). */
function workerCpuMs(): Map<number, number> {
  const out = new Map<number, number>()
  for (const pid of engine.workerPids()) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
      out.set(pid, (Number(fields[11]) + Number(fields[12])) * 10)
    } catch {
      // exited meanwhile
    }
  }
  return out
}

async function measure(fn: () => Promise<void>): Promise<Sample> {
  const wall0 = performance.now()
  const cpu0 = cpuMs()
  const workers0 = workerCpuMs()
  await fn()
  let workers = 0
  for (const [pid, ms] of workerCpuMs()) workers += ms - (workers0.get(pid) ?? 0)
  return { wall: performance.now() - wall0, cpu: cpuMs() - cpu0 + workers }
}

async function bareSummarize(): Promise<void> {
  const instance = await DuckDBInstance.create(':memory:', {
    threads: String(engine.options.threads),
    memory_limit: engine.options.memoryLimit,
  })
  const c = await instance.connect()
  await c.runAndReadAll(`SUMMARIZE SELECT * FROM read_csv('${csv}')`)
  c.closeSync()
  instance.closeSync()
}

async function profile(): Promise<void> {
  const format = await detectFormat(csv)
  await engine.profile(csv, format, { user: 'bench', parquetPath: dir.file('data.parquet') })
  rmSync(dir.file('data.parquet'), { force: true })
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
await bareSummarize() // warm the page cache and DuckDB's code paths once
const bare: Sample[] = []
const ours: Sample[] = []
for (let i = 0; i < rounds; i++) {
  bare.push(await measure(bareSummarize))
  ours.push(await measure(profile))
}
const fmt = (xs: number[]) => `median ${median(xs).toFixed(0)} ms  [${xs.map((x) => x.toFixed(0)).join(', ')}]`
console.log(`threads=${engine.options.threads} memory_limit=${engine.options.memoryLimit}`)
for (const key of ['wall', 'cpu'] as const) {
  const b = bare.map((s) => s[key])
  const o = ours.map((s) => s[key])
  console.log(`${key} bare SUMMARIZE read_csv : ${fmt(b)}`)
  console.log(`${key} engine.profile          : ${fmt(o)}`)
  // The per-round ratio (both runs back to back) is steadier than the ratio of medians when
  // other processes share the cores; report both.
  const perRound = median(o.map((x, i) => x / b[i]!))
  console.log(`${key} ratio: of medians ${(median(o) / median(b)).toFixed(2)}×, median per round ${perRound.toFixed(2)}× (target ≤ 1.5×)`)
}

t = performance.now()
const p = await engine.profile(csv, 'csv', { user: 'bench', parquetPath: dir.file('data.parquet') })
const pq = dir.file('data.parquet')
console.log(`profile: ${p.rowCount} rows, ${p.columns.length} columns (${(performance.now() - t).toFixed(0)} ms)`)
t = performance.now()
await engine.preview(pq, 100, 500_000, { user: 'bench' })
console.log(`preview 100 rows at offset 500,000: ${(performance.now() - t).toFixed(0)} ms`)
t = performance.now()
await engine.query(pq, 'SELECT category, count(*), avg(amount) FROM data GROUP BY ALL', { user: 'bench' })
console.log(`query group-by over ${rows.toLocaleString()} rows: ${(performance.now() - t).toFixed(0)} ms`)
t = performance.now()
await engine.exportTo(pq, 'csv', dir.file('export.csv'), { user: 'bench' })
console.log(`export CSV (neutralised): ${(performance.now() - t).toFixed(0)} ms`)
await engine.close()
