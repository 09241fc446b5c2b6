/**
 * bun bench/actors.ts — the actor runtime next to raw baselines, in one run:
 *
 * - persisted turns/s: the counter kind (test/actors/counter.ts, state in its own table)
 *   over BENCH_ACTORS actors with BENCH_CONCURRENCY asks in flight, next to single-row UPDATE
 *   transactions through postgres.js at the same concurrency (target: ratio ≥ 1.0);
 * - local ask latency p50/p99 (one ask at a time);
 * - cross-node ask latency p50/p99: two nodes in this process, asks through one node to
 *   actors the other owns (through the shard's BullMQ queue; the turn writes the counter's
 *   row, as a quiet increment), next to the fair raw baseline: BullMQ add → waitUntilFinished
 *   whose worker (set up as the shard workers are) runs the single-row UPDATE transaction the
 *   turn persists, on the same PostgreSQL and Redis (goals: p50 ≤ 1.2×, p99 ≤ 1.5×); beside
 *   them a BullMQ round trip doing nothing, and the cross-node ask of an increment that also
 *   emits an event. The four take turns in blocks of 100 samples, so load from elsewhere on
 *   the machine hits them alike.
 *   Then the Redis commands per op, counted with MONITOR. Needs REDIS_URL.
 *
 * Env: DATABASE_URL (a throw-away database is created there and dropped; unset: embedded
 * PostgreSQL), REDIS_URL, BENCH_DURATION (s per throughput run, default 5),
 * BENCH_CONCURRENCY (16), BENCH_ACTORS (1000), BENCH_SAMPLES (latency samples, 2000),
 * BENCH_ROUNDS (throughput runs of each side, alternating; the best of each is kept, 2),
 * BENCH_COMMIT_CONCURRENCY (the runtime's commitConcurrency; default: the runtime's default).
 */
import postgres from 'postgres'
import { mkdtempSync, rmSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import { createLogger } from '../src/core/logger.ts'
import { connect, type Sql } from '../src/store/db.ts'
import { migrate } from '../src/store/migrate.ts'
import { startEmbedded } from '../src/store/embedded.ts'
import { createActorSystem, shardOf, type ActorSystem } from '../src/actors/runtime/index.ts'
import { counter, ensureCounterTable } from '../test/actors/counter.ts'
import { queueRoundTrip, type QueueRoundTrip } from './support/queue-baseline.ts'
import { countCommands, type CommandCount } from './support/redis-monitor.ts'

const duration = Number(process.env.BENCH_DURATION ?? 5) * 1000
const concurrency = Number(process.env.BENCH_CONCURRENCY ?? 16)
const actors = Number(process.env.BENCH_ACTORS ?? 1000)
const samples = Number(process.env.BENCH_SAMPLES ?? 2000)
const rounds = Number(process.env.BENCH_ROUNDS ?? 2)
const redisUrl = process.env.REDIS_URL
const logger = createLogger('warn')

// ---- database ----------------------------------------------------------------------------
let adminUrl = process.env.DATABASE_URL
let embedded: Awaited<ReturnType<typeof startEmbedded>> | undefined
let embeddedDir: string | undefined
if (!adminUrl) {
  embeddedDir = mkdtempSync(join(tmpdir(), 'quadrax-bench-pg-'))
  chmodSync(embeddedDir, 0o755)
  embedded = await startEmbedded({ dir: join(embeddedDir, 'pg'), persistent: false })
  adminUrl = embedded.url
}
const dbName = `bench_${crypto.randomUUID().replaceAll('-', '').slice(0, 12)}`
const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
await admin.unsafe(`create database ${dbName}`)
const url = new URL(adminUrl)
url.pathname = `/${dbName}`
const databaseUrl = url.toString()

const ids = Array.from({ length: actors }, (_, i) => `c${i}`)
const pick = () => ids[Math.floor(Math.random() * ids.length)]!

function percentile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * q))]!
}

/** `concurrency` loops calling `op` for `ms`: operations per second, and this process's CPU µs per operation. */
async function rate(op: () => Promise<unknown>, ms: number): Promise<{ perSecond: number; cpuPerOp: number }> {
  let done = 0
  const end = performance.now() + ms
  const started = performance.now()
  const cpu = process.cpuUsage()
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        await op()
        done++
      }
    }),
  )
  const used = process.cpuUsage(cpu)
  return { perSecond: done / ((performance.now() - started) / 1000), cpuPerOp: (used.user + used.system) / done }
}

/** One call at a time, `n` times; returns sorted latencies in ms. */
async function latencies(op: () => Promise<unknown>, n: number): Promise<number[]> {
  const out: number[] = []
  for (let i = 0; i < n; i++) {
    const t = performance.now()
    await op()
    out.push(performance.now() - t)
  }
  return out.sort((a, b) => a - b)
}

/**
 * `n` latencies (ms, sorted) of each op, one call at a time, the ops taking turns in blocks of
 * `block` calls: a ratio between them is then measured under the same conditions.
 */
async function alternating(ops: Record<string, () => Promise<unknown>>, n: number, block: number): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = Object.fromEntries(Object.keys(ops).map((k) => [k, []]))
  for (let done = 0; done < n; done += block) {
    for (const [name, op] of Object.entries(ops)) out[name]!.push(...(await latencies(op, Math.min(block, n - done))))
  }
  for (const v of Object.values(out)) v.sort((a, b) => a - b)
  return out
}

const ms = (x: number) => `${x.toFixed(2)} ms`

let rawSql: Sql | undefined
let actorSql: Sql | undefined
let baseSql: Sql | undefined
const queues: QueueRoundTrip[] = []
const systems: ActorSystem[] = []
try {
  const setup = connect(databaseUrl, { max: 2 })
  await migrate(setup)
  await ensureCounterTable(setup)
  await setup`insert into test_counters (id, value) select 'c' || g, 0 from generate_series(0, ${actors - 1}) g`
  await setup`create table bench_counters (id text primary key, value bigint not null)`
  await setup`insert into bench_counters (id, value) select 'c' || g, 0 from generate_series(0, ${actors - 1}) g`
  await setup.end()

  // ---- persisted turns/s vs raw UPDATE transactions ----------------------------------------
  rawSql = connect(databaseUrl, { max: concurrency, name: 'bench-raw' })
  const raw = rawSql
  const rawTx = () => raw.begin((tx) => tx`update bench_counters set value = value + 1 where id = ${pick()}`)

  actorSql = connect(databaseUrl, { max: concurrency, name: 'bench-actors' })
  const single = createActorSystem({ sql: actorSql, logger, config: { nodeId: 'bench', shards: 64, ...(process.env.BENCH_COMMIT_CONCURRENCY ? { commitConcurrency: Number(process.env.BENCH_COMMIT_CONCURRENCY) } : {}) } })
  single.register(counter)
  systems.push(single)
  await single.start()
  const increment = () => single.ask('counter', pick(), { type: 'increment' })

  // Warm up: connections opened, statements prepared, every actor activated.
  await rate(rawTx, 500)
  for (let i = 0; i < ids.length; i += 200) await Promise.all(ids.slice(i, i + 200).map((id) => single.ask('counter', id, { type: 'get' })))
  await rate(increment, 500)

  let bestRaw = { perSecond: 0, cpuPerOp: 0 }
  let bestActor = { perSecond: 0, cpuPerOp: 0 }
  for (let r = 0; r < rounds; r++) {
    const raw = await rate(rawTx, duration)
    if (raw.perSecond > bestRaw.perSecond) bestRaw = raw
    const actor = await rate(increment, duration)
    if (actor.perSecond > bestActor.perSecond) bestActor = actor
  }
  const batch = (await single.metrics.batchTurns.get()).values
  const turnsPerTx = (batch.find((v) => v.metricName?.endsWith('_sum'))?.value ?? 0) / (batch.find((v) => v.metricName?.endsWith('_count'))?.value || 1)

  // ---- local ask latency ---------------------------------------------------------------------
  const local = await latencies(increment, samples)
  const rawLat = await latencies(rawTx, samples)

  console.log(`\nactor runtime — ${actors} counters, ${concurrency} in flight, ${duration / 1000} s × ${rounds} runs per side (best kept)\n`)
  console.log(
    `persisted turns/s        ${bestActor.perSecond.toFixed(0).padStart(8)}/s   raw UPDATE tx/s ${bestRaw.perSecond.toFixed(0).padStart(8)}/s   ratio ${(bestActor.perSecond / bestRaw.perSecond).toFixed(2)}× (target ≥ 1.0×)`,
  )
  console.log(
    `                         ${turnsPerTx.toFixed(1)} turns per transaction on average; client CPU per op: turn ${bestActor.cpuPerOp.toFixed(0)} µs, raw tx ${bestRaw.cpuPerOp.toFixed(0)} µs`,
  )
  console.log(`local ask latency        p50 ${ms(percentile(local, 0.5))}  p99 ${ms(percentile(local, 0.99))}   (raw UPDATE tx p50 ${ms(percentile(rawLat, 0.5))}  p99 ${ms(percentile(rawLat, 0.99))})`)

  // ---- cross-node ask vs the fair raw BullMQ baseline ----------------------------------------
  if (redisUrl) {
    const prefix = `bench-${crypto.randomUUID().slice(0, 8)}`
    const ttl = 2000
    const node = (id: string, sql: Sql) => {
      const s = createActorSystem({ sql, redis: redisUrl, logger, queuePrefix: prefix, config: { nodeId: id, shards: 16, leaseTtlMs: ttl } })
      s.register(counter)
      systems.push(s)
      return s
    }
    await single.stop()
    const a = node('bench-a', actorSql)
    const b = node('bench-b', rawSql)
    await a.start()
    await b.start()
    const deadline = Date.now() + 20_000
    let owned: Set<number> = new Set()
    for (;;) {
      const status = await a.clusterStatus()
      owned = new Set(status.shards.filter((s) => s.owner === 'bench-b').map((s) => s.shard))
      if (status.shards.every((s) => s.owner) && owned.size === 8) break
      if (Date.now() > deadline) throw new Error('the two bench nodes did not split the shards')
      await Bun.sleep(50)
    }
    const remote = ids.filter((id) => owned.has(shardOf('counter', id, 16)))
    const pickRemote = () => remote[Math.floor(Math.random() * remote.length)]!
    // The turn the baseline's transaction matches: the counter's row, written by a quiet
    // increment (no event). The runtime adds what it always adds: the fencing check and the
    // inbox row that makes a redelivered job apply once. The usual increment also emits an
    // event (outbox row, topic number): measured beside, for what a subscriber-visible turn costs.
    const remoteAsk = () => a.ask('counter', pickRemote(), { type: 'increment', quiet: true })
    const remoteEmit = () => a.ask('counter', pickRemote(), { type: 'increment' })
    // Activate every remote counter first: the samples measure turns, not state loads.
    for (let i = 0; i < remote.length; i += 100) await Promise.all(remote.slice(i, i + 100).map((id) => a.ask('counter', id, { type: 'get' })))

    // The fair baseline: the same request and reply with BullMQ alone. Its worker is set up as
    // the runtime's shard workers are and runs the single-row UPDATE transaction the turn
    // persists, on the same PostgreSQL (a pool of its own, as node b has) and the same Redis.
    baseSql = connect(databaseUrl, { max: concurrency, name: 'bench-baseline' })
    const base = baseSql
    const workerOptions = { concurrency: a.config.queueConcurrency, lockDuration: 2 * ttl, stalledInterval: ttl / 2, maxStalledCount: 1000, drainDelay: 5 }
    const fair = await queueRoundTrip(redisUrl, `${prefix}-raw`, 'fair', (d) => base.begin((tx) => tx`update bench_counters set value = value + 1 where id = ${d.id as string}`), workerOptions)
    const bare = await queueRoundTrip(redisUrl, `${prefix}-raw`, 'bare', async () => null, workerOptions)
    queues.push(fair, bare)
    const fairCall = () => fair.call({ id: pick() })
    const bareCall = () => bare.call({})
    for (let i = 0; i < 300; i++) for (const op of [remoteAsk, fairCall, bareCall, remoteEmit]) await op()

    const lat = await alternating({ cross: remoteAsk, fair: fairCall, bare: bareCall, emit: remoteEmit }, samples, 100)
    const [cross, baseline, bull, emitting] = [lat.cross!, lat.fair!, lat.bare!, lat.emit!]
    const p50 = percentile(cross, 0.5) / percentile(baseline, 0.5)
    const p99 = percentile(cross, 0.99) / percentile(baseline, 0.99)
    console.log(`cross-node ask           p50 ${ms(percentile(cross, 0.5))}  p99 ${ms(percentile(cross, 0.99))}   asked on node a, run on node b (its shard's BullMQ queue), reply on a's channel; the turn writes the counter's row`)
    console.log(`fair raw BullMQ baseline p50 ${ms(percentile(baseline, 0.5))}  p99 ${ms(percentile(baseline, 0.99))}   add → waitUntilFinished; the worker runs the turn's single-row UPDATE transaction`)
    console.log(`  ratio                  p50 ${p50.toFixed(2)}× (goal ≤ 1.2×) ${p50 <= 1.2 ? 'met' : 'NOT met'}   p99 ${p99.toFixed(2)}× (goal ≤ 1.5×) ${p99 <= 1.5 ? 'met' : 'NOT met'}`)
    console.log(`raw BullMQ add→complete  p50 ${ms(percentile(bull, 0.5))}  p99 ${ms(percentile(bull, 0.99))}   a worker doing nothing: BullMQ alone`)
    console.log(`cross-node ask + event   p50 ${ms(percentile(emitting, 0.5))}  p99 ${ms(percentile(emitting, 0.99))}   the same, the turn also emitting an event (outbox row and topic number; no goal)`)
    console.log(`                         ${samples} samples each, one at a time, the four taking turns in blocks of 100 (load that comes and goes hits all alike)`)
    // Where the time goes: a cross-node ask is the transport plus a persisted turn (with its
    // WAL flush). The turn alone, asked on its owner:
    const ownerTurn = await latencies(() => b.ask('counter', pickRemote(), { type: 'increment', quiet: true }), samples)
    const transport = percentile(cross, 0.5) - percentile(ownerTurn, 0.5)
    console.log(`  of which the transport p50 ${ms(transport)} (cross-node p50 − the same turn asked on its owner, p50 ${ms(percentile(ownerTurn, 0.5))})`)
    // And what it costs in Redis commands (a round trip each, but for pipelined publishes;
    // on a small machine each is mostly this process's socket write).
    const show = (c: CommandCount) => `${c.total.toFixed(1)} (${[...c.byCommand].sort((x, y) => y[1] - x[1]).map(([k, v]) => `${k} ${v.toFixed(1)}`).join(', ')})`
    const ourCommands = await countCommands(redisUrl, new RegExp(`"${prefix}:`), 200, remoteAsk)
    const fairCommands = await countCommands(redisUrl, new RegExp(`"${prefix}-raw:fair:`), 200, fairCall)
    console.log(`Redis commands per op    cross-node ask ${show(ourCommands)}`)
    console.log(`                         fair baseline ${show(fairCommands)}`)
    await b.stop()
    await a.stop()
    const cleanup = new Redis(redisUrl)
    let cursor = '0'
    do {
      const [next, keys] = await cleanup.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      cursor = next
      if (keys.length > 0) await cleanup.del(...keys)
    } while (cursor !== '0')
    cleanup.disconnect()
  } else {
    console.log('cross-node ask latency   skipped: REDIS_URL is not set')
  }
  console.log()
} catch (err) {
  // Printed before the clean-up, which can wait (a database drop waits for other sessions).
  console.error(err)
  process.exitCode = 1
} finally {
  for (const s of systems) await s.stop()
  for (const q of queues) await q.close()
  await rawSql?.end()
  await actorSql?.end()
  await baseSql?.end()
  // Bounded: DROP DATABASE waits for every session of the server to take a signal, and one
  // stuck elsewhere (a client that stopped reading) would hold this run forever.
  // (admin has one connection: the setting holds for the drop.)
  await admin`set statement_timeout = '30s'`
    .then(() => admin.unsafe(`drop database if exists ${dbName} with (force)`))
    .catch((err) => console.error(`could not drop the bench database ${dbName}: ${(err as Error).message}`))
  await admin.end()
  await embedded?.stop()
  if (embeddedDir) rmSync(embeddedDir, { recursive: true, force: true })
}
