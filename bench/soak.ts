/**
 * npm run bench:soak — issue 18: the mixed load for a long time, and nothing that only grows.
 *
 * BENCH_NODES nodes (default 1; 3 works too) of `bun src/main.ts` behind Debian's nginx, as
 * bench/rolling.ts starts them (scripts/cluster.ts; a throw-away database, its own REDIS_PREFIX
 * and temp dirs, rate limits out of the way), and the mixed load of bench/support/mixed-load.ts
 * through the balancer (logins, reads, renames of workstations through their actors, one
 * WebSocket subscriber per workstation) for BENCH_SOAK_MINUTES (default 30).
 *
 * Every BENCH_SOAK_SAMPLE_SECONDS (default 10) each node is read, and each minute prints one row
 * per node, every value the median of that minute's readings (one reading can land on a burst
 * of requests), except the heap (the lowest: its floor between collections) and the event-loop
 * delay (the highest):
 *
 *   RSS       VmRSS of /proc/<pid>/status;
 *   heap      `nodejs_heap_size_used_bytes` of the node's /metrics (prom-client's default
 *             metrics; under Bun, process.memoryUsage().heapUsed, JavaScriptCore's heap);
 *   GC MB     JavaScriptCore's heap size right after a full collection, once a minute (heapHook
 *             below, unless BENCH_SOAK_HEAP=0; shown): it follows the allocator's blocks, which
 *             move by megabytes while what is kept does not (README, "Soak");
 *   live      what that collection kept: the sizes of every object of a heap snapshot taken then
 *             (JSC's estimate per object: its cell with the string characters, buffers and
 *             property storage it holds) — judged instead of `heap`;
 *   PG        the node's connections in pg_stat_activity of the bench database;
 *   Redis     the node's connections in Redis's CLIENT LIST;
 *   fds       entries of /proc/<pid>/fd;
 *   loop p99  `nodejs_eventloop_lag_p99_seconds` of /metrics (prom-client's monitorEventLoopDelay
 *             histogram, which Bun implements; prom-client resets it at each scrape, and only this
 *             bench scrapes, so each reading is the p99 since the one before);
 *
 * and for the whole load that minute (through the balancer, whichever node answered): requests,
 * failed (any answer but 2xx, or none) and the p99 latency; the bench database's size; the
 * machine's load average (others' work moves the latencies); this process's own RSS; and the CPU
 * time each part spent per request of that minute (µs; /proc/<pid>/stat, a process and its
 * children, with the children that exited): each node, PostgreSQL (its postmaster and every
 * backend), Redis, nginx and this bench. On a saturated machine the load's throughput is what
 * the CPU allows, so a part whose cost per request climbs is where a climbing p99 comes from.
 *
 * Which connections are a node's: PostgreSQL's and Redis's lists name the client by address and
 * port, and the node's sockets are found in /proc (its fds' socket inodes in /proc/<pid>/net/tcp).
 * Names alone would not do: the server's main ioredis clients (src/store/redis.ts) set none,
 * BullMQ's carry the queue's name, and the mail queue's (with SMTP set) is the same on every node.
 *
 * At the end, for each series, the least-squares slope per hour over the minutes after the
 * warm-up (BENCH_SOAK_WARMUP_MINUTES, default the first 20 %, at least one), ± twice its standard
 * error, against its tolerance (TOLERANCE, printed beside it): PASS within it, FAIL above it by
 * more than the noise, unclear above it within the noise (a short run on a busy machine: ten
 * minutes of readings that wander by a few MB leave a slope of ± 20 MB/h). Then acknowledged
 * writes lost and events missed, as bench:rolling counts them. Exit code 1 when anything fails.
 * BENCH_SOAK_INTERVAL_SECONDS (default 60) shortens the "minute" for a quick try of the bench
 * itself; the slopes are per real hour. The load's users renew their tokens every
 * BENCH_SOAK_REFRESH_SECONDS (300), as clients do before the 15-minute access token runs out.
 *
 * Needs DATABASE_URL, REDIS_URL, DOCKER_HOST (the load's workstations) and nginx, on Linux (/proc).
 */
import { existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { Redis } from 'ioredis'
import postgres from 'postgres'
import { LocalCluster, type ClusterNode } from '../scripts/cluster.ts'
import { benchDatabase } from './support/db.ts'
import { dropRedisPrefix } from './support/redis-keys.ts'
import { MixedLoad, mixedLoadNodeEnv, percentile, type Sample } from './support/mixed-load.ts'

for (const v of ['DATABASE_URL', 'REDIS_URL', 'DOCKER_HOST']) {
  if (!process.env[v]) {
    console.error(`bench:soak needs ${v} (README, "Benchmarks")`)
    process.exit(2)
  }
}
if (!Bun.which('nginx')) {
  console.error('bench:soak needs nginx (apt-get install nginx)')
  process.exit(2)
}

function setting(name: string, fallback: number, min: number): number {
  const raw = process.env[name]
  const v = raw === undefined || raw === '' ? fallback : Number(raw)
  if (!Number.isInteger(v) || v < min) {
    console.error(`bench:soak: ${name} must be an integer ≥ ${min} (got ${raw})`)
    process.exit(2)
  }
  return v
}
const MINUTES = setting('BENCH_SOAK_MINUTES', 30, 1)
const NODES = setting('BENCH_NODES', 1, 1)
const WARMUP = setting('BENCH_SOAK_WARMUP_MINUTES', Math.max(1, Math.round(MINUTES * 0.2)), 0)
const INTERVAL_S = setting('BENCH_SOAK_INTERVAL_SECONDS', 60, 1)
const SAMPLE_S = Math.min(INTERVAL_S, setting('BENCH_SOAK_SAMPLE_SECONDS', 10, 1))
/** How often each user of the load renews its tokens (the access token lives 15 minutes). */
const REFRESH_S = setting('BENCH_SOAK_REFRESH_SECONDS', 300, 1)
const IMAGE = process.env.BENCH_IMAGE ?? 'quadrax/busybox:test'
const HEAP_HOOK = process.env.BENCH_SOAK_HEAP !== '0'
const PG_PORT = Number(new URL(process.env.DATABASE_URL!).port || 5432)
const REDIS_PORT = Number(new URL(process.env.REDIS_URL!).port || 6379)
/** Clock ticks per second of /proc/<pid>/stat's CPU times. */
const TICKS = Number(Bun.spawnSync(['getconf', 'CLK_TCK']).stdout.toString().trim()) || 100

/**
 * Tolerances of the slopes (per hour, after the warm-up). Memory: a leak of a few bytes per
 * request is megabytes an hour at this load (about 3 million requests an hour), while an
 * allocator that has settled moves a few percent either way. Counts of connections and fds: the
 * fitted line may rise by `rise` over the minutes measured, room for a pool that grows by a
 * connection when the load peaks (postgres.js opens them on demand, up to DATABASE_POOL_MAX, and
 * closes one idle for 30 s: src/store/db.ts), while a leak of one per ten thousand requests is
 * 300 an hour. Latencies move with whatever else runs on the machine (the `load` column is its
 * load average): only a steady climb fails.
 */
const TOLERANCE = {
  rss: { share: 0.05 },
  heap: { share: 0.1 },
  count: { rise: 2 },
  latency: { share: 0.5 },
} as const

interface Reading {
  rss: number
  heap: number
  loopP99: number
  pg: number
  redis: number
  fds: number
}

/** CPU time per request, µs: each node's, and the other processes' of the load. */
interface CpuShare {
  nodes: (number | undefined)[]
  pg: number
  redis: number
  nginx: number
  bench: number
}

interface Row {
  minute: number
  /** Seconds since the load started, at the minute's middle. */
  t: number
  nodes: (Reading | undefined)[]
  /** Each node's heap after a full collection, MB (unless BENCH_SOAK_HEAP=0). */
  live: (LiveHeap | undefined)[]
  cpu: CpuShare
  requests: number
  failed: number
  p99: number
  /** p99 latency by kind of request. */
  kinds: Map<string, number>
  dbMb: number
  loadAvg: number
  benchRss: number
}

const db = await benchDatabase()
const dbName = decodeURIComponent(new URL(db.url!).pathname.slice(1))
const dir = mkdtempSync(join(tmpdir(), 'qsoak-'))
const prefix = `bench-soak-${crypto.randomUUID().slice(0, 8)}:`
const admin = postgres(process.env.DATABASE_URL!, { max: 1, onnotice: () => {} })
const redis = new Redis(process.env.REDIS_URL!, { lazyConnect: true, connectionName: 'quadrax-bench-soak' })
let cluster: LocalCluster | undefined
let load: MixedLoad | undefined
const load0 = loadavg()[0]!
const rows: Row[] = []
/** Per node, object counts by type in the first minute after the warm-up, and in the last. */
const heapTypes = new Map<string, { first?: Record<string, number>; last?: Record<string, number> }>()
/** Each node's Redis clients at its last reading, by name. */
const clientNames = new Map<string, Map<string, number>>()

// The minute's requests: latencies of this minute only, by kind, then dropped (see
// MixedLoadOptions.onSample).
let minuteMs = new Map<string, number[]>()
let minuteFailed = 0
const failures = new Map<string, number>()
const totals = { requests: 0, failed: 0 }
const onSample = (s: Sample) => {
  const ms = minuteMs.get(s.kind)
  if (ms) ms.push(s.ms)
  else minuteMs.set(s.kind, [s.ms])
  totals.requests++
  if (s.status < 200 || s.status >= 300) {
    minuteFailed++
    totals.failed++
    const key = `${s.kind} ${s.status || 'no answer'} ${(s.error ?? '').replace(/\s+/g, ' ').slice(0, 80)}`.trim()
    failures.set(key, (failures.get(key) ?? 0) + 1)
  }
}

try {
  await redis.connect()
  console.error(`bench:soak — starting ${NODES} node${NODES > 1 ? 's' : ''} behind nginx…`)
  cluster = await LocalCluster.start({
    nodes: NODES,
    dir,
    env: {
      ...mixedLoadNodeEnv({ databaseUrl: db.url!, redisPrefix: prefix, dir, image: IMAGE }),
      METRICS_TOKEN: undefined,
      ...(HEAP_HOOK ? heapHook() : {}),
    },
  })
  console.error(`bench:soak — balancer at ${cluster.url}; setting up users, workstations and subscribers…`)
  load = await MixedLoad.setup({ url: cluster.url, image: IMAGE, onSample, refreshEveryMs: REFRESH_S * 1000 })
  console.log(`bench:soak — ${NODES} node${NODES > 1 ? 's' : ''} (bun src/main.ts) behind nginx on one PostgreSQL and Redis; the mixed load through the balancer for ${MINUTES} × ${INTERVAL_S} s, read every ${SAMPLE_S} s; warm-up ${WARMUP} minute${WARMUP === 1 ? '' : 's'}`)
  console.log(`load average ${load0.toFixed(2)} at the start, on ${navigator.hardwareConcurrency} cores`)
  // A server without autovacuum (some CI set-ups turn it off) never clears dead rows nor refreshes
  // the planner's statistics: its latencies climb in a way an operator's PostgreSQL does not.
  const [{ version, autovacuum }] = await admin<[{ version: string; autovacuum: string }]>`select current_setting('server_version') as version, current_setting('autovacuum') as autovacuum`
  console.log(`PostgreSQL ${version}, autovacuum ${autovacuum}${autovacuum === 'on' ? '' : ' — dead rows and planner statistics are never maintained; run it against a server with autovacuum on'}\n`)
  console.log(header())
  // A scrape now resets the event-loop histogram of the set-up.
  await Promise.all(cluster.nodes.map((n) => readNode(n)))
  const cpuRoots = await cpuRootsOf(cluster)
  let cpuBefore = cpuTimes(cpuRoots)
  minuteMs = new Map()
  minuteFailed = 0
  load.start()
  const t0 = performance.now()
  let tick = 0
  for (let minute = 1; minute <= MINUTES; minute++) {
    const readings: Reading[][] = cluster.nodes.map(() => [])
    const end = t0 + minute * INTERVAL_S * 1000
    while (true) {
      const next = Math.min(end, t0 + ++tick * SAMPLE_S * 1000)
      await Bun.sleep(Math.max(0, next - performance.now()))
      const now = await Promise.all(cluster.nodes.map((n) => readNode(n)))
      now.forEach((r, i) => r && readings[i]!.push(r))
      if (next >= end) break
    }
    tick = Math.round((minute * INTERVAL_S) / SAMPLE_S)
    const byKind = minuteMs
    const failedNow = minuteFailed
    minuteMs = new Map()
    minuteFailed = 0
    const cpuNow = cpuTimes(cpuRoots)
    const all = [...byKind.values()].flat()
    const cpu = cpuPerRequest(cpuBefore, cpuNow, all.length)
    cpuBefore = cpuNow
    const [{ size }] = await admin<[{ size: number }]>`select pg_database_size(${dbName})::float8 as size`
    const row: Row = {
      minute,
      t: (minute - 0.5) * INTERVAL_S,
      nodes: readings.map(summarise),
      // The hook pauses the node (a full collection and a snapshot): the balancer's health
      // checks are held meanwhile, or a pause past their timeout takes it out of rotation.
      live: HEAP_HOOK ? await cluster.holdingChecks(() => Promise.all(cluster!.nodes.map((n) => liveHeap(n, minute)))) : [],
      cpu,
      requests: all.length,
      failed: failedNow,
      p99: percentile(all, 99),
      kinds: new Map([...byKind].map(([k, ms]) => [k, percentile(ms, 99)])),
      dbMb: size / 2 ** 20,
      loadAvg: loadavg()[0]!,
      benchRss: process.memoryUsage.rss() / 2 ** 20,
    }
    rows.push(row)
    for (const line of print(row)) console.log(line)
  }
  await load.stop()
  console.error('bench:soak — load stopped; verifying…')
  const v = await load.verify()
  report(v)
  await load.teardown().catch((err) => console.error(`bench:soak — deleting the load's workstations: ${err}`))
} catch (err) {
  console.error(`bench:soak failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}`)
  process.exitCode = 1
} finally {
  await load?.stop().catch(() => {})
  await cluster?.stop().catch(() => {})
  redis.disconnect()
  await dropRedisPrefix(process.env.REDIS_URL!, prefix).catch((err) => console.error(`bench:soak — deleting its Redis keys: ${err}`))
  await admin.end().catch(() => {})
  await db.drop().catch(() => {})
  rmSync(dir, { recursive: true, force: true })
}

// ── readings ─────────────────────────────────────────────────────────────────────────────────

/** One reading of a running node; undefined when it is not running or has just gone. */
async function readNode(n: ClusterNode): Promise<Reading | undefined> {
  const pid = n.proc?.pid
  if (!pid) return undefined
  try {
    const [metrics, clients, backends] = await Promise.all([scrape(n.socket), redis.client('LIST') as Promise<string>, admin<{ port: number }[]>`select client_port as port from pg_stat_activity where datname = ${dbName}`])
    const { fds, peers } = sockets(pid)
    const redisPorts = peers.get(REDIS_PORT) ?? new Set<number>()
    const pgPorts = peers.get(PG_PORT) ?? new Set<number>()
    let redisCount = 0
    const names = new Map<string, number>()
    for (const line of clients.split('\n')) {
      const port = Number(/\baddr=\S+:(\d+)\b/.exec(line)?.[1])
      if (!redisPorts.has(port)) continue
      redisCount++
      const name = clientName(/\bname=(\S*)/.exec(line)?.[1] ?? '')
      names.set(name, (names.get(name) ?? 0) + 1)
    }
    clientNames.set(n.id, names)
    return {
      rss: rssOf(pid) / 2 ** 20,
      heap: metrics.get('nodejs_heap_size_used_bytes')! / 2 ** 20,
      loopP99: metrics.get('nodejs_eventloop_lag_p99_seconds')! * 1000,
      pg: backends.filter((b) => pgPorts.has(b.port)).length,
      redis: redisCount,
      fds,
    }
  } catch (err) {
    if (n.proc?.pid === pid) console.error(`bench:soak — reading ${n.id}: ${err instanceof Error ? err.message : String(err)}`)
    return undefined
  }
}

/**
 * The live heap (unless BENCH_SOAK_HEAP=0): each node preloads a hook (BUN_OPTIONS=--preload,
 * written here; the server has no such hook of its own) that, on SIGUSR2, runs a full
 * collection, takes a heap snapshot and writes the heap's size, the summed sizes of the
 * snapshot's objects and the objects counted by type (bun:jsc heapStats) to a file; the bench
 * asks once a minute, after that minute's readings. The snapshot pauses the node about a second
 * and its arrays are garbage at once (a second collection follows). The types whose counts grew
 * most after the warm-up are printed at the end: where to look when the live heap grows.
 */
function heapHook(): Record<string, string> {
  const file = join(dir, 'heap-hook.ts')
  writeFileSync(
    file,
    `import { heapStats } from 'bun:jsc'
import { renameSync, writeFileSync } from 'node:fs'
process.on('SIGUSR2', () => {
  Bun.gc(true)
  const s = heapStats()
  // JSC's snapshot (version 3): nodes in fours — id, size, class name, flags.
  let snap = Bun.generateHeapSnapshot()
  let objects = 0
  for (let i = 1; i < snap.nodes.length; i += 4) objects += snap.nodes[i]
  snap = undefined
  Bun.gc(true)
  const out = process.env.SOAK_HEAP_DIR + '/heap-' + process.env.NODE_ID + '.json'
  writeFileSync(out + '.tmp', JSON.stringify({ heapSize: s.heapSize, objects, extra: s.extraMemorySize, types: s.objectTypeCounts }))
  renameSync(out + '.tmp', out)
})
`,
  )
  return { BUN_OPTIONS: `${process.env.BUN_OPTIONS ?? ''} --preload ${file}`.trim(), SOAK_HEAP_DIR: dir }
}

interface LiveHeap {
  /** heapSize after the collection, MB. */
  gc: number
  /** The sizes of the snapshot's objects (each with what it holds outside its cell), MB. */
  retained: number
}

async function liveHeap(n: ClusterNode, minute: number): Promise<LiveHeap | undefined> {
  const out = join(dir, `heap-${n.id}.json`)
  rmSync(out, { force: true })
  if (!n.proc) return undefined
  n.proc.kill('SIGUSR2')
  const end = performance.now() + 20_000
  while (!existsSync(out)) {
    if (performance.now() > end) return undefined
    await Bun.sleep(50)
  }
  const s = JSON.parse(readFileSync(out, 'utf8')) as { heapSize: number; objects: number; extra: number; types: Record<string, number> }
  const t = heapTypes.get(n.id) ?? {}
  if (minute === WARMUP + 1) t.first = s.types
  t.last = s.types
  heapTypes.set(n.id, t)
  return { gc: s.heapSize / 2 ** 20, retained: s.objects / 2 ** 20 }
}

// ── CPU ──────────────────────────────────────────────────────────────────────────────────────

/** The processes whose CPU is counted: each node's, and PostgreSQL's, Redis's and nginx's when they run on this machine. */
interface CpuRoots {
  nodes: (number | undefined)[]
  pg: number | undefined
  redis: number | undefined
  nginx: number | undefined
}

/** The pid if /proc has it under that command name (a server in a container or elsewhere has none here). */
function localPid(pid: number, comm: RegExp): number | undefined {
  try {
    return comm.test(readFileSync(`/proc/${pid}/comm`, 'utf8').trim()) ? pid : undefined
  } catch {
    return undefined
  }
}

async function cpuRootsOf(c: LocalCluster): Promise<CpuRoots> {
  const [{ pid }] = await admin<[{ pid: number }]>`select pg_backend_pid() as pid`
  const backend = procStats().get(pid)
  const info = await redis.info('server')
  const redisPid = Number(/^process_id:(\d+)/m.exec(info)?.[1])
  return {
    nodes: c.nodes.map((n) => n.proc?.pid),
    pg: backend ? localPid(backend.ppid, /^postgres/) : undefined,
    redis: Number.isInteger(redisPid) ? localPid(redisPid, /^redis/) : undefined,
    nginx: c.balancerPid,
  }
}

/** Every process's parent and CPU seconds: its own and those of its children that exited (fields 14–17 of /proc/<pid>/stat). */
function procStats(): Map<number, { ppid: number; cpu: number }> {
  const out = new Map<number, { ppid: number; cpu: number }>()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    let text: string
    try {
      text = readFileSync(`/proc/${name}/stat`, 'utf8')
    } catch {
      continue // exited since the listing
    }
    // After "pid (comm) ", field k of the man page is f[k - 3].
    const f = text.slice(text.lastIndexOf(')') + 2).split(' ')
    out.set(Number(name), { ppid: Number(f[1]), cpu: (Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14])) / TICKS })
  }
  return out
}

interface CpuTimes {
  nodes: (number | undefined)[]
  pg: number | undefined
  redis: number | undefined
  nginx: number | undefined
  bench: number
}

/** CPU seconds so far of each root with its children (a PostgreSQL backend, an nginx worker). */
function cpuTimes(roots: CpuRoots): CpuTimes {
  const all = procStats()
  const tree = (root: number | undefined) => {
    if (root === undefined || !all.has(root)) return undefined
    let total = all.get(root)!.cpu
    for (const p of all.values()) if (p.ppid === root) total += p.cpu
    return total
  }
  const u = process.cpuUsage()
  return { nodes: roots.nodes.map(tree), pg: tree(roots.pg), redis: tree(roots.redis), nginx: tree(roots.nginx), bench: (u.user + u.system) / 1e6 }
}

function cpuPerRequest(a: CpuTimes, b: CpuTimes, requests: number): CpuShare {
  const per = (x: number | undefined, y: number | undefined) => (x === undefined || y === undefined || requests === 0 ? NaN : ((y - x) * 1e6) / requests)
  return { nodes: b.nodes.map((y, i) => per(a.nodes[i], y)), pg: per(a.pg, b.pg), redis: per(a.redis, b.redis), nginx: per(a.nginx, b.nginx), bench: per(a.bench, b.bench) }
}

/** A Redis client's name, readable: BullMQ names its clients `<prefix><base64 of the queue>[:w:<worker>]`. */
function clientName(name: string): string {
  if (!name) return '(no name)'
  if (!name.startsWith(prefix)) return name
  const [queue, ...rest] = name.slice(prefix.length).split(':')
  const decoded = Buffer.from(queue!, 'base64').toString('utf8').replace(/\d+$/, 'N')
  return [`BullMQ ${decoded}`, ...rest].join(':')
}

/** The unlabelled samples of a node's /metrics (the ones read here have no labels). */
async function scrape(socket: string): Promise<Map<string, number>> {
  const r = await fetch('http://localhost/metrics', { unix: socket, signal: AbortSignal.timeout(10_000) } as RequestInit)
  if (r.status !== 200) throw new Error(`/metrics answered ${r.status}`)
  const out = new Map<string, number>()
  for (const line of (await r.text()).split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*) (\S+)$/.exec(line)
    if (m) out.set(m[1]!, Number(m[2]))
  }
  for (const name of ['nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_p99_seconds']) if (!out.has(name)) throw new Error(`/metrics has no ${name}`)
  return out
}

function rssOf(pid: number): number {
  const kb = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]
  if (!kb) throw new Error(`no VmRSS in /proc/${pid}/status`)
  return Number(kb) * 1024
}

/** The process's open fds, and the local ports of its TCP connections by remote port. */
function sockets(pid: number): { fds: number; peers: Map<number, Set<number>> } {
  const names = readdirSync(`/proc/${pid}/fd`)
  const inodes = new Set<string>()
  for (const fd of names) {
    try {
      const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
      if (m) inodes.add(m[1]!)
    } catch {
      // closed between the listing and the readlink
    }
  }
  const peers = new Map<number, Set<number>>()
  for (const table of ['tcp', 'tcp6']) {
    let text: string
    try {
      text = readFileSync(`/proc/${pid}/net/${table}`, 'utf8')
    } catch {
      continue
    }
    for (const line of text.split('\n').slice(1)) {
      // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
      const c = line.trim().split(/\s+/)
      if (c.length < 10 || !inodes.has(c[9]!)) continue
      const local = parseInt(c[1]!.split(':')[1]!, 16)
      const remote = parseInt(c[2]!.split(':')[1]!, 16)
      const set = peers.get(remote) ?? new Set()
      set.add(local)
      peers.set(remote, set)
    }
  }
  return { fds: names.length, peers }
}

/**
 * A minute of one node's readings: medians; the heap's lowest reading (the heap used is a saw
 * between collections, and its floor is what survives them); the worst event-loop p99.
 */
function summarise(rs: Reading[]): Reading | undefined {
  if (rs.length === 0) return undefined
  const med = (f: (r: Reading) => number) => percentile(rs.map(f), 50)
  return { rss: med((r) => r.rss), heap: Math.min(...rs.map((r) => r.heap)), pg: med((r) => r.pg), redis: med((r) => r.redis), fds: med((r) => r.fds), loopP99: Math.max(...rs.map((r) => r.loopP99)) }
}

// ── output ───────────────────────────────────────────────────────────────────────────────────

function cells(c: (string | number)[]): string {
  const widths = [4, 7, 8, 8, ...(HEAP_HOOK ? [7, 8] : []), 4, 6, 5, 12, 7, 9, 7, 8, 7, 5, 9, 6, 6, 6, 6]
  return c.map((x, i) => String(x).padStart(widths[i]!)).join(' ')
}

function header(): string {
  // The µs columns: CPU time per request of the minute (the node's, then PostgreSQL's, Redis's,
  // nginx's and this bench's).
  return cells(['min', 'node', 'RSS MB', 'heap MB', ...(HEAP_HOOK ? ['GC MB', 'live MB'] : []), 'PG', 'Redis', 'fds', 'loop p99 ms', 'µs/req', 'requests', 'failed', 'p99 ms', 'DB MB', 'load', 'bench MB', 'PG µs', 'Rd µs', 'ngx µs', 'bn µs'])
}

function print(row: Row): string[] {
  return cluster!.nodes.map((n, i) => {
    const r = row.nodes[i]
    const live = HEAP_HOOK ? [row.live[i]?.gc.toFixed(1) ?? '-', row.live[i]?.retained.toFixed(1) ?? '-'] : []
    const us = (x: number) => (Number.isFinite(x) ? x.toFixed(0) : '-')
    const node = r ? [r.rss.toFixed(1), r.heap.toFixed(1), ...live, r.pg, r.redis, r.fds, r.loopP99.toFixed(1)] : ['-', '-', ...live, '-', '-', '-', '-']
    const c = row.cpu
    const whole = i === 0 ? [row.requests, row.failed, row.p99.toFixed(1), row.dbMb.toFixed(0), row.loadAvg.toFixed(2), row.benchRss.toFixed(1), us(c.pg), us(c.redis), us(c.nginx), us(c.bench)] : Array(10).fill('')
    return cells([i === 0 ? row.minute : '', n.id, ...node, us(c.nodes[i] ?? NaN), ...whole]).trimEnd()
  })
}

/**
 * Least-squares slope of y over x, its standard error (from the residuals; 0 with fewer than
 * three points), and the mean of y.
 */
function fit(points: [number, number][]): { slope: number; se: number; mean: number } {
  const n = points.length
  const mx = points.reduce((a, p) => a + p[0], 0) / n
  const my = points.reduce((a, p) => a + p[1], 0) / n
  let sxy = 0
  let sxx = 0
  for (const [x, y] of points) {
    sxy += (x - mx) * (y - my)
    sxx += (x - mx) ** 2
  }
  const slope = sxx === 0 ? NaN : sxy / sxx
  const residuals = points.reduce((a, [x, y]) => a + (y - my - slope * (x - mx)) ** 2, 0)
  return { slope, se: n > 2 && sxx > 0 ? Math.sqrt(residuals / (n - 2) / sxx) : 0, mean: my }
}

function report(v: Awaited<ReturnType<MixedLoad['verify']>>): void {
  const after = rows.filter((r) => r.minute > WARMUP)
  console.log(`\nSlopes over minutes ${WARMUP + 1}–${MINUTES} (after ${WARMUP} minute${WARMUP === 1 ? '' : 's'} of warm-up), least squares, per hour, ± twice their standard error.`)
  console.log('PASS: the slope is within the tolerance; FAIL: above it by more than the noise (slope − 2 SE > tolerance);')
  console.log('unclear: above it, but within the noise (run longer: the error shrinks with the minutes measured).\n')
  const widths = [18, 11, 10, 18, 34, 7]
  const line = (c: (string | number)[]) => c.map((x, i) => String(x).padEnd(widths[i]!)).join(' ').trimEnd()
  console.log(line(['series', 'node', 'mean', 'slope /h', 'tolerance /h', 'verdict']))
  const hours = (r: Row) => r.t / 3600
  // The fitted line spans the first to the last measured minute.
  const window = after.length >= 2 ? hours(after.at(-1)!) - hours(after[0]!) : NaN
  let failed = 0
  let unclear = 0
  const cpuPts = (f: (c: CpuShare) => number | undefined): [number, number][] => after.flatMap((r) => (Number.isFinite(f(r.cpu)) ? [[hours(r), f(r.cpu)!] as [number, number]] : []))
  const series = (name: string, node: string, values: [number, number][], tol: { share?: number; rise?: number } | undefined, unit: string) => {
    if (values.length < 2) {
      console.log(line([name, node, '', '', '', 'n/a (fewer than 2 minutes after the warm-up)']))
      return
    }
    const { slope, se, mean } = fit(values)
    const slopeText = `${slope >= 0 ? '+' : ''}${slope.toFixed(2)} ± ${(2 * se).toFixed(2)}`
    if (!tol) return console.log(line([name, node, `${mean.toFixed(1)}${unit}`, slopeText, '(shown, not judged)']))
    const limit = tol.rise !== undefined ? tol.rise / window : tol.share! * mean
    // Two points fit any line exactly (no error to judge it by): never a verdict on them.
    const verdict = values.length < 3 ? 'unclear' : slope <= limit ? 'PASS' : slope - 2 * se > limit ? 'FAIL' : 'unclear'
    if (verdict === 'FAIL') failed++
    if (verdict === 'unclear') unclear++
    const tolText = tol.rise !== undefined ? `≤ ${limit.toFixed(2)} (a rise of ${tol.rise} in ${(window * 60).toFixed(0)} min)` : `≤ ${limit.toFixed(2)} (${tol.share! * 100} % of mean)`
    console.log(line([name, node, `${mean.toFixed(1)}${unit}`, slopeText, tolText, verdict]))
  }
  cluster!.nodes.forEach((n, i) => {
    const pts = (f: (x: Reading) => number): [number, number][] => after.flatMap((r) => (r.nodes[i] ? [[hours(r), f(r.nodes[i]!)] as [number, number]] : []))
    series('RSS', n.id, pts((x) => x.rss), TOLERANCE.rss, ' MB')
    // With the live heap measured, the sampled one is only shown: its saw between collections
    // moves a minute's lowest reading by several MB either way (bench/soak.ts's first runs).
    series('JS heap used', n.id, pts((x) => x.heap), HEAP_HOOK ? undefined : TOLERANCE.heap, ' MB')
    if (HEAP_HOOK) {
      const lives = (f: (l: LiveHeap) => number) => after.flatMap((r) => (r.live[i] !== undefined ? [[hours(r), f(r.live[i]!)] as [number, number]] : []))
      series('heap after GC', n.id, lives((l) => l.gc), undefined, ' MB')
      series('live heap', n.id, lives((l) => l.retained), TOLERANCE.heap, ' MB')
    }
    series('PG connections', n.id, pts((x) => x.pg), TOLERANCE.count, '')
    series('Redis conns', n.id, pts((x) => x.redis), TOLERANCE.count, '')
    series('open fds', n.id, pts((x) => x.fds), TOLERANCE.count, '')
    series('loop p99', n.id, pts((x) => x.loopP99), TOLERANCE.latency, ' ms')
    series('CPU per request', n.id, cpuPts((c) => c.nodes[i]), undefined, ' µs')
  })
  for (const [name, f] of [['PostgreSQL', (c: CpuShare) => c.pg], ['Redis', (c: CpuShare) => c.redis], ['nginx', (c: CpuShare) => c.nginx], ['this bench', (c: CpuShare) => c.bench]] as const) {
    series(`CPU per request`, name, cpuPts(f), undefined, ' µs')
  }
  // The bench does the same work for every request whatever the servers do, so its own CPU per
  // request moves only with the machine (other tenants, clock speed): each part's share divided
  // by it climbs only if that part's work per request does.
  const relative = (f: (c: CpuShare) => number | undefined) => cpuPts((c) => (f(c) ?? NaN) / c.bench)
  cluster!.nodes.forEach((n, i) => series('  ÷ the bench\'s', n.id, relative((c) => c.nodes[i]), undefined, '×'))
  series('  ÷ the bench\'s', 'PostgreSQL', relative((c) => c.pg), undefined, '×')
  series('load p99', 'all', after.map((r) => [hours(r), r.p99]), TOLERANCE.latency, ' ms')
  const kinds = [...new Set(after.flatMap((r) => [...r.kinds.keys()]))].sort()
  for (const k of kinds) series(`  ${k} p99`, 'all', after.flatMap((r) => (r.kinds.has(k) ? [[hours(r), r.kinds.get(k)!] as [number, number]] : [])), undefined, ' ms')
  series('database size', 'all', after.map((r) => [hours(r), r.dbMb]), undefined, ' MB')
  series('load average', 'machine', after.map((r) => [hours(r), r.loadAvg]), undefined, '')
  if (HEAP_HOOK) {
    for (const [id, t] of heapTypes) {
      if (!t.first || !t.last) continue
      const grew = Object.entries(t.last)
        .map(([type, n]) => [type, n - (t.first![type] ?? 0)] as const)
        .filter(([, d]) => d > 0)
        .sort((a, b) => b[1] - a[1])
        .slice(0, 12)
      console.log(`\n${id}: objects whose count grew most from minute ${WARMUP + 1} to ${MINUTES} (after a full collection): ${grew.map(([type, d]) => `${type} +${d}`).join(', ') || 'none'}`)
    }
  }
  const benchFit = after.length >= 2 ? fit(after.map((r) => [hours(r), r.benchRss])) : undefined
  console.log(`\nThis bench's own RSS: ${rows[0]!.benchRss.toFixed(1)} MB after minute 1, ${rows.at(-1)!.benchRss.toFixed(1)} MB at the end${benchFit ? ` (slope ${benchFit.slope >= 0 ? '+' : ''}${benchFit.slope.toFixed(2)} MB/h after the warm-up)` : ''}; it keeps one minute of latencies, not every request.`)
  for (const [id, names] of [...clientNames].sort((a, b) => a[0].localeCompare(b[0]))) console.log(`Redis clients of ${id} at its last reading, by name: ${[...names].sort((a, b) => b[1] - a[1]).map(([name, k]) => `${k}× ${name}`).join(', ')}`)
  console.log(`requests: ${totals.requests}, failed ${totals.failed}${failures.size ? `: ${[...failures].map(([k, n]) => `${n}× ${k}`).join('; ')}` : ''}`)
  console.log(`acknowledged writes: ${v.acked}, lost ${v.lost} (goal 0) ${v.lost === 0 ? 'PASS' : 'FAIL'}; events received by subscribers: ${v.events}, missed ${v.missed} (goal 0) ${v.missed === 0 ? 'PASS' : 'FAIL'}; subscriber resumes: ${load!.reconnects}`)
  console.log(`load average ${load0.toFixed(2)} → ${loadavg()[0]!.toFixed(2)}`)
  const ok = failed === 0 && v.lost === 0 && v.missed === 0
  const why = [
    failed > 0 ? `${failed} series grow${failed === 1 ? 's' : ''} past ${failed === 1 ? 'its' : 'their'} tolerance` : 'no series grows past its tolerance after the warm-up',
    ...(unclear > 0 ? [`${unclear} unclear (within the noise of ${after.length} minutes)`] : []),
    ...(v.lost > 0 || v.missed > 0 ? ['writes lost or events missed'] : []),
  ]
  console.log(`\nsoak: ${ok ? (unclear > 0 ? 'PASS, with series unclear' : 'PASS') : 'FAIL'} — ${why.join('; ')}`)
  if (!ok) process.exitCode = 1
}
