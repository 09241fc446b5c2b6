/**
 * Micro-benchmark of the dataset engine alone (no HTTP, no upload): profiling a generated
 * CSV through DuckDBDatasetEngine.profile (CSV → Parquet, SUMMARIZE, top values) next to
 * DuckDB by itself running SUMMARIZE over the same file with the same threads and memory
 * limit, in the same process. Target: profile ≤ 1.5 × bare SUMMARIZE.
 *
 *   bun bench/datakits-engine.ts [rows=1000000] [rounds=5]
 *
 * Rounds alternate the two so neither gets a warmer page cache; medians are reported.
 */
import { rmSync } from 'node:fs'
import { DuckDBInstance } from '@duckdb/node-api'
import { DuckDBDatasetEngine, detectFormat } from '../src/actors/engines/datasets.ts'
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

async function bareSummarize(): Promise<number> {
  const started = performance.now()
  const instance = await DuckDBInstance.create(':memory:', {
    threads: String(engine.options.threads),
    memory_limit: engine.options.memoryLimit,
  })
  const c = await instance.connect()
  await c.runAndReadAll(`SUMMARIZE SELECT * FROM read_csv('${csv}')`)
  c.closeSync()
  instance.closeSync()
  return performance.now() - started
}

async function profile(): Promise<number> {
  const started = performance.now()
  const format = await detectFormat(csv)
  await engine.profile(csv, format, { parquetPath: dir.file('data.parquet') })
  const ms = performance.now() - started
  rmSync(dir.file('data.parquet'), { force: true })
  return ms
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
await bareSummarize() // warm the page cache and DuckDB's code paths once
const bare: number[] = []
const ours: number[] = []
for (let i = 0; i < rounds; i++) {
  bare.push(await bareSummarize())
  ours.push(await profile())
}
const b = median(bare)
const o = median(ours)
console.log(`threads=${engine.options.threads} memory_limit=${engine.options.memoryLimit}`)
console.log(`bare SUMMARIZE read_csv : median ${b.toFixed(0)} ms  [${bare.map((x) => x.toFixed(0)).join(', ')}]`)
console.log(`engine.profile          : median ${o.toFixed(0)} ms  [${ours.map((x) => x.toFixed(0)).join(', ')}]`)
// Other processes share the machine's two cores; the per-round ratio (both runs back to back)
// is steadier than the ratio of medians, so report both.
const perRound = median(ours.map((x, i) => x / bare[i]!))
console.log(`ratio of medians ${(o / b).toFixed(2)}×, median per-round ratio ${perRound.toFixed(2)}× (target ≤ 1.5×)`)

t = performance.now()
const p = await engine.profile(csv, 'csv', { parquetPath: dir.file('data.parquet') })
const pq = dir.file('data.parquet')
console.log(`profile: ${p.rowCount} rows, ${p.columns.length} columns (${(performance.now() - t).toFixed(0)} ms)`)
t = performance.now()
await engine.preview(pq, 100, 500_000)
console.log(`preview 100 rows at offset 500,000: ${(performance.now() - t).toFixed(0)} ms`)
t = performance.now()
await engine.query(pq, 'SELECT category, count(*), avg(amount) FROM data GROUP BY ALL')
console.log(`query group-by over ${rows.toLocaleString()} rows: ${(performance.now() - t).toFixed(0)} ms`)
t = performance.now()
await engine.exportTo(pq, 'csv', dir.file('export.csv'))
console.log(`export CSV (neutralised): ${(performance.now() - t).toFixed(0)} ms`)
