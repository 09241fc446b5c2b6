/**
 * npm run bench:pipelines — orchestration overhead of pipeline runs (issue 15), against
 * src/main.ts in its own process (its own database on DATABASE_URL's server, or embedded), next
 * to a raw BullMQ job round trip (add → completed, one at a time) on the same Redis, measured in
 * the same invocation:
 *
 * - a chain of N `empty` steps (each needs the previous): orchestration time per step, and
 *   its ratio to one raw round trip (target ≤ 3×); the step-to-step gap (previous step ended
 *   → next started, from the steps' own timestamps) p50 and p99 (target p50 ≤ 5 ms);
 * - a fan-out of `empty` steps between one root and one join, 1,000 steps in all (the limit of
 *   a definition): the run's time (target ≤ 2 s).
 *
 * Each shape runs BENCH_PIPELINE_REPEATS times (default 3); the best and the median are shown.
 * N is BENCH_PIPELINE_STEPS (default 1000). Benchmarks never gate CI: it exits 0 either way.
 */
import { Queue, QueueEvents, Worker } from 'bullmq'
import Redis from 'ioredis'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { benchDatabase } from './support/db.ts'
import { startBenchServer } from './support/server.ts'

const N = Number(process.env.BENCH_PIPELINE_STEPS ?? 1000)
const REPEATS = Number(process.env.BENCH_PIPELINE_REPEATS ?? 3)
/** The fan-out's width: N, less the root and the join when N is the 1,000-step limit. */
const FAN = Math.min(N, 998)
const redisUrl = process.env.REDIS_URL
if (!redisUrl) {
  console.error('bench:pipelines needs REDIS_URL for its baseline (a raw BullMQ round trip)')
  process.exit(2)
}

const percentile = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!
}
const median = (xs: number[]) => percentile(xs, 50)
const ms = (x: number) => `${x.toFixed(2)} ms`

async function bullRoundTrip(samples: number): Promise<number[]> {
  const prefix = `bench-pl-${crypto.randomUUID().slice(0, 8)}`
  const connection = new Redis(redisUrl!, { maxRetriesPerRequest: null })
  const queue = new Queue('raw', { connection, prefix })
  const worker = new Worker('raw', async () => 1, { connection: new Redis(redisUrl!, { maxRetriesPerRequest: null }), prefix })
  const events = new QueueEvents('raw', { connection: { url: redisUrl }, prefix })
  await Promise.all([worker.waitUntilReady(), events.waitUntilReady()])
  const one = async () => {
    const t = performance.now()
    await (await queue.add('x', {}, { removeOnComplete: { age: 60 } })).waitUntilFinished(events)
    return performance.now() - t
  }
  for (let i = 0; i < 100; i++) await one()
  const out: number[] = []
  for (let i = 0; i < samples; i++) out.push(await one())
  await worker.close()
  await events.close()
  await queue.obliterate({ force: true })
  await queue.close()
  connection.disconnect()
  return out
}

const dataDir = mkdtempSync(join(tmpdir(), 'quadrax-bench-pipelines-'))
const db = await benchDatabase()
const api = await startBenchServer({ dataDir, databaseUrl: db.url, extra: { PIPELINE_STEP_CONCURRENCY: '8' } })

try {
  const call = api.call
  await call('POST', '/api/auth/register', { email: 'bench@bench.local', password: 'BenchUser123!', firstName: 'Bench', lastName: 'User' })
  const token = (await call('POST', '/api/auth/login', { email: 'bench@bench.local', password: 'BenchUser123!' })).token as string

  const chain = { steps: Array.from({ length: N }, (_, i) => ({ id: `s${i}`, kind: 'empty', ...(i > 0 ? { needs: [`s${i - 1}`] } : {}) })) }
  const fan = {
    steps: [
      { id: 'root', kind: 'empty' },
      ...Array.from({ length: FAN }, (_, i) => ({ id: `f${i}`, kind: 'empty', needs: ['root'] })),
      { id: 'join', kind: 'empty', needs: Array.from({ length: FAN }, (_, i) => `f${i}`) },
    ],
  }
  const chainId = (await call('POST', '/api/pipelines', { name: 'bench chain', definition: chain }, token)).id as string
  const fanId = (await call('POST', '/api/pipelines', { name: 'bench fan-out', definition: fan }, token)).id as string

  /** One run to its end; its time from start to end and its steps, as the server recorded them. */
  const runOnce = async (pipelineId: string) => {
    const { id } = await call('POST', `/api/pipelines/${pipelineId}/runs`, { cache: false }, token)
    let run: any
    // Polling paces the wait (a benchmark, not a test); the times come from the run's record.
    for (run = await call('GET', `/api/pipeline-runs/${id}`, undefined, token); !['SUCCEEDED', 'FAILED', 'CANCELLED', 'TIMED_OUT'].includes(run.status); run = await call('GET', `/api/pipeline-runs/${id}`, undefined, token)) await Bun.sleep(20)
    if (run.status !== 'SUCCEEDED') throw new Error(`run ${id} ended ${run.status}: ${run.error}`)
    const t = (x: string) => new Date(x).getTime()
    const first = Math.min(...run.steps.map((s: any) => t(s.startedAt)))
    const last = Math.max(...run.steps.map((s: any) => t(s.endedAt)))
    return { totalMs: t(run.endedAt) - t(run.startedAt), stepsMs: last - first, steps: run.steps as any[] }
  }

  const chainRuns = []
  for (let i = 0; i < REPEATS; i++) chainRuns.push(await runOnce(chainId))
  const fanRuns = []
  for (let i = 0; i < REPEATS; i++) fanRuns.push(await runOnce(fanId))
  const bull = await bullRoundTrip(500)

  const perStep = chainRuns.map((r) => r.totalMs / N)
  const gaps = chainRuns.flatMap((r) => r.steps.slice(1).map((s: any, i: number) => new Date(s.startedAt).getTime() - new Date(r.steps[i].endedAt).getTime()))
  const bullP50 = median(bull)
  const commit = new TextDecoder().decode(Bun.spawnSync(['git', 'rev-parse', '--short', 'HEAD'], { cwd: import.meta.dir }).stdout).trim()
  console.log(`\nbench:pipelines — ${N} empty steps, ${REPEATS} runs of each shape, PIPELINE_STEP_CONCURRENCY=8, single node on PostgreSQL; ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, commit ${commit} (plus the working tree)`)
  console.log(`raw BullMQ round trip (add → completed, one at a time): p50 ${ms(bullP50)}  p99 ${ms(percentile(bull, 99))}`)
  console.log(
    `chain of ${N}: run ${chainRuns.map((r) => `${(r.totalMs / 1000).toFixed(2)} s`).join(', ')}; per step best ${ms(Math.min(...perStep))}, median ${ms(median(perStep))} = ${(median(perStep) / bullP50).toFixed(2)}× one raw round trip (target ≤ 3×)`,
  )
  console.log(`  step-to-step gap (ended → next started, ms timestamps): p50 ${ms(percentile(gaps, 50))}  p99 ${ms(percentile(gaps, 99))}  max ${ms(Math.max(...gaps))} (target p50 ≤ 5 ms)`)
  console.log(
    `fan-out of ${FAN} between a root and a join: run ${fanRuns.map((r) => `${(r.totalMs / 1000).toFixed(2)} s`).join(', ')}; median ${(median(fanRuns.map((r) => r.totalMs)) / 1000).toFixed(2)} s (target ≤ 2 s) = ${(median(fanRuns.map((r) => r.totalMs)) / (FAN + 2)).toFixed(2)} ms per step`,
  )
} catch (err) {
  console.error(`bench:pipelines failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
} finally {
  await api.stop()
  await db.drop()
  rmSync(dataDir, { recursive: true, force: true })
}
