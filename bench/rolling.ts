/**
 * npm run bench:rolling — issue 18: a rolling restart, and a kill -9, under mixed load.
 *
 * BENCH_NODES nodes (default 3, `bun src/main.ts` each, as deployed) on one PostgreSQL and
 * Redis behind Debian's nginx (scripts/cluster.ts, with its /health check), and the mixed load
 * of bench/support/mixed-load.ts through the balancer: logins, reads, renames of workstations
 * through their actors, one WebSocket subscriber per workstation. Phases:
 *
 *   quiet    BENCH_QUIET_SECONDS (default 15) of load with every node up: the quiet p99;
 *   rolling  each node in turn gets SIGTERM (drain), exits, starts again and is back in the
 *            balancer's upstream before the next one;
 *   settle   BENCH_SETTLE_SECONDS (default 5);
 *   kill -9  one node is SIGKILLed, the load goes on for BENCH_KILL_SECONDS (default 20: the
 *            survivors take its shards over), then it is started again;
 *   settle   again, then the load stops and everything is verified.
 *
 * It prints, per phase, requests sent and failed (any answer but 2xx, or none), and at the end
 * acknowledged writes lost and events missed by the subscribers after they resumed, each with
 * its goal. Needs DATABASE_URL, REDIS_URL, DOCKER_HOST (workstations) and nginx.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { LocalCluster } from '../scripts/cluster.ts'
import { benchDatabase } from './support/db.ts'
import { dropRedisPrefix } from './support/redis-keys.ts'
import { MixedLoad, mixedLoadNodeEnv, percentile, type Sample } from './support/mixed-load.ts'

for (const v of ['DATABASE_URL', 'REDIS_URL', 'DOCKER_HOST']) {
  if (!process.env[v]) {
    console.error(`bench:rolling needs ${v} (README, "Benchmarks")`)
    process.exit(2)
  }
}
if (!Bun.which('nginx')) {
  console.error('bench:rolling needs nginx (apt-get install nginx)')
  process.exit(2)
}

const NODES = Number(process.env.BENCH_NODES ?? 3)
const QUIET_S = Number(process.env.BENCH_QUIET_SECONDS ?? 15)
const SETTLE_S = Number(process.env.BENCH_SETTLE_SECONDS ?? 5)
const KILL_S = Number(process.env.BENCH_KILL_SECONDS ?? 20)
const IMAGE = process.env.BENCH_IMAGE ?? 'quadrax/busybox:test'

const db = await benchDatabase()
const dir = mkdtempSync(join(tmpdir(), 'qrolling-'))
const prefix = `bench-rolling-${crypto.randomUUID().slice(0, 8)}:`
let cluster: LocalCluster | undefined
let load: MixedLoad | undefined
const load0 = loadavg()[0]!

interface Phase {
  name: string
  from: number
  to: number
  note?: string
}
const phases: Phase[] = []
const timeline: { at: number; what: string }[] = []
const event = (what: string) => timeline.push({ at: performance.now(), what })
const mark = (name: string, from: number, note?: string) => phases.push({ name, from, to: performance.now(), note })

try {
  console.error(`bench:rolling — starting ${NODES} nodes behind nginx…`)
  cluster = await LocalCluster.start({
    nodes: NODES,
    dir,
    env: {
      ...mixedLoadNodeEnv({ databaseUrl: db.url!, redisPrefix: prefix, dir, image: IMAGE }),
    },
  })
  console.error(`bench:rolling — balancer at ${cluster.url}; setting up users, workstations and subscribers…`)
  load = await MixedLoad.setup({ url: cluster.url, image: IMAGE })
  load.start()

  let t = performance.now()
  await Bun.sleep(QUIET_S * 1000)
  mark('quiet', t)

  t = performance.now()
  const exits: string[] = []
  for (const node of cluster.nodes) {
    console.error(`bench:rolling — restarting ${node.id}…`)
    event(`${node.id} SIGTERM`)
    const code = await cluster.stopNode(node.index)
    event(`${node.id} exited`)
    await cluster.startNode(node.index)
    event(`${node.id} ready`)
    await cluster.awaitInRotation(node.index)
    event(`${node.id} in rotation`)
    exits.push(`${node.id} exit ${code}`)
  }
  mark('rolling restart', t, exits.join(', '))

  t = performance.now()
  await Bun.sleep(SETTLE_S * 1000)
  mark('settle', t)

  t = performance.now()
  const victim = cluster.nodes[Math.min(1, NODES - 1)]!
  console.error(`bench:rolling — kill -9 ${victim.id}…`)
  event(`${victim.id} SIGKILL`)
  await cluster.stopNode(victim.index, 'SIGKILL')
  event(`${victim.id} reaped`)
  await Bun.sleep(KILL_S * 1000)
  await cluster.startNode(victim.index)
  await cluster.awaitInRotation(victim.index)
  event(`${victim.id} in rotation`)
  mark('kill -9', t, `${victim.id} killed, ${KILL_S} s later started again`)

  t = performance.now()
  await Bun.sleep(SETTLE_S * 1000)
  mark('settle', t)
  await load.stop()
  console.error('bench:rolling — load stopped; verifying…')
  const v = await load.verify()
  report(load, v, cluster.switchCount)
  await load.teardown() // the workstations' containers go with them
} catch (err) {
  console.error(`bench:rolling failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
  process.exitCode = 1
} finally {
  await load?.stop().catch(() => {})
  await cluster?.stop().catch(() => {})
  await dropRedisPrefix(process.env.REDIS_URL!, prefix).catch((err) => console.error(`bench:rolling — deleting its Redis keys: ${err}`))
  await db.drop().catch(() => {})
  rmSync(dir, { recursive: true, force: true })
}

function report(load: MixedLoad, v: Awaited<ReturnType<MixedLoad["verify"]>>, switches: number): void {
  const failed = (s: Sample) => s.status < 200 || s.status >= 300
  const row = (cells: (string | number)[], widths: number[]) => cells.map((c, i) => String(c).padEnd(widths[i]!)).join(' ')
  const W = [18, 9, 8, 10, 10, 9, 60]
  const quiet = phases.find((p) => p.name === 'quiet')!
  const quietP99 = percentile(load.between(quiet.from, quiet.to).map((s) => s.ms), 99)
  console.log(`\nbench:rolling — ${NODES} nodes (bun src/main.ts) behind nginx ${nginxVersion()} on one PostgreSQL and Redis; mixed load through the balancer: logins, reads, workstation renames through actors, ${v.events > 0 ? 'one' : 'one'} WebSocket subscriber per workstation`)
  console.log(`load average ${load0.toFixed(2)} → ${loadavg()[0]!.toFixed(2)} on ${navigator.hardwareConcurrency} cores; nodes taken out of or put back in the upstream by the /health check: ${switches} (nginx is never reloaded)\n`)
  console.log(row(['phase', 'seconds', 'sent', 'failed', 'p50 ms', 'p99 ms', 'note'], W))
  for (const p of phases) {
    const s = load.between(p.from, p.to)
    const f = s.filter(failed)
    console.log(row([p.name, ((p.to - p.from) / 1000).toFixed(1), s.length, f.length, percentile(s.map((x) => x.ms), 50).toFixed(1), percentile(s.map((x) => x.ms), 99).toFixed(1), p.note ?? ''], W))
  }
  const all = load.samples
  const byKind = new Map<string, number>()
  for (const s of all) byKind.set(s.kind, (byKind.get(s.kind) ?? 0) + 1)
  console.log(`\nrequests: ${all.length} (${[...byKind].map(([k, n]) => `${k} ${n}`).join(', ')}); subscriber resumes: ${load.reconnects}`)
  const rolling = phases.find((p) => p.name === 'rolling restart')!
  const killed = phases.find((p) => p.name === 'kill -9')!
  const rollingFailed = load.between(rolling.from, rolling.to).filter(failed)
  // In flight on the node as it died: started before it was gone (its process reaped: until
  // then its listening socket still completes connections), answered after the SIGKILL.
  const killAt = timeline.find((e) => e.what.endsWith('SIGKILL'))!.at
  const goneAt = timeline.find((e) => e.what.endsWith('reaped'))!.at
  const inFlight = all.filter((s) => s.at <= goneAt && s.at + s.ms >= killAt)
  const killFailed = inFlight.filter(failed)
  const rollingP99 = percentile(load.between(rolling.from, rolling.to).map((s) => s.ms), 99)
  const goal = (okay: boolean) => (okay ? 'PASS' : 'FAIL')
  console.log(`rolling restart: failed ${rollingFailed.length} of ${load.between(rolling.from, rolling.to).length} (goal 0) ${goal(rollingFailed.length === 0)}; p99 ${rollingP99.toFixed(1)} ms during the restart, quiet p99 ${quietP99.toFixed(1)} ms (${(rollingP99 / quietP99).toFixed(1)}×)`)
  console.log(`kill -9: failed ${killFailed.length}, all in flight as the node died (SIGKILL → reaped in ${(goneAt - killAt).toFixed(0)} ms; ${inFlight.length} requests were in flight through the balancer then): ${describe(killFailed)}`)
  console.log(`acknowledged writes: ${v.acked}, lost ${v.lost} (goal 0) ${goal(v.lost === 0)}${v.lostDetail.length ? `: ${v.lostDetail.slice(0, 3).join('; ')}` : ''}`)
  console.log(`events received by subscribers: ${v.events}, missed after resume ${v.missed} (goal 0) ${goal(v.missed === 0)} (gaps ${v.gaps}, duplicates ${v.duplicates})`)
  if (process.env.BENCH_DEBUG) {
    const t0 = phases[0]!.from
    for (const f of all.filter(failed)) console.log(`  failure at ${((f.at - t0) / 1000).toFixed(2)} s (+${f.ms.toFixed(0)} ms): ${f.kind} ${f.status} ${(f.error ?? '').slice(0, 100).replace(/\s+/g, ' ')}`)
    for (const e of timeline) console.log(`  ${((e.at - t0) / 1000).toFixed(2)} s: ${e.what}`)
    const log = Bun.spawnSync(['sh', '-c', `grep -v notice ${join(dir, 'nginx-error.log')} | tail -20`])
    console.log(new TextDecoder().decode(log.stdout))
  }
  const other = all.filter((s) => failed(s) && !killFailed.includes(s))
  console.log(`failed at any other time (goal 0): ${other.length} ${goal(other.length === 0)}${other.length ? `: ${describe(other)}` : ''}`)
}

function describe(samples: Sample[]): string {
  if (samples.length === 0) return 'none'
  const groups = new Map<string, number>()
  for (const s of samples) {
    const error = (s.error ?? '').replace(/<[^>]*>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 80)
    const key = `${s.kind} ${s.status || 'no answer'}${error ? ` ${error}` : ''}`
    groups.set(key, (groups.get(key) ?? 0) + 1)
  }
  return [...groups].map(([k, n]) => `${n}× ${k}`).join('; ')
}

function nginxVersion(): string {
  const r = Bun.spawnSync(['nginx', '-v'])
  return /nginx\/([\d.]+)/.exec(new TextDecoder().decode(r.stderr))?.[1] ?? ''
}
