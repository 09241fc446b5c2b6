/**
 * npm run bench:http — the API server next to a raw Bun.serve baseline, same machine, same
 * load generator, same connection count, in one invocation. Prints requests/s, p50/p99 and
 * the ratio to the baseline for GET /health, authenticated GET /api/auth/me and an
 * authenticated paginated list (GET /api/users as admin).
 *
 * Next to requests/s, each server's CPU time per request (every thread, from /proc): the steadier
 * figure when other work shares the machine, as the "CPU × raw" column.
 *
 * Env: BENCH_DURATION (s, default 10), BENCH_CONNECTIONS (default 50), DATABASE_URL (a
 * throw-away database is created there and dropped; unset: embedded PostgreSQL).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { benchDatabase } from './support/db.ts'
import { freePort, load, loadTool, versusBaseline, waitHealthy } from './support/load.ts'
import { startBenchServer } from './support/server.ts'

const duration = Number(process.env.BENCH_DURATION ?? 10)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50)
const dataDir = mkdtempSync(join(tmpdir(), 'quadrax-bench-'))

const benchDb = await benchDatabase()
const databaseUrl = benchDb.url

const rawPort = await freePort()
const raw = Bun.spawn([process.execPath, join(import.meta.dir, 'support/raw-server.ts')], { env: { ...process.env, PORT: String(rawPort) }, stdout: 'ignore', stderr: 'inherit' })
// Started here, awaited below: a signal that arrives while it boots must still stop it.
const starting = startBenchServer({ dataDir, databaseUrl })
starting.catch(() => {}) // awaited below; a failed start stops its own server

/**
 * Everything this run started or made goes, however it ends (an error, Ctrl-C, SIGTERM, also
 * while the server is still booting): the servers, the throw-away database, and the data
 * directory with the embedded cluster in it (startBenchServer's stop removes the cluster
 * where it really lives).
 */
let cleaning: Promise<void> | undefined
const cleanup = () =>
  (cleaning ??= (async () => {
    raw.kill()
    await Promise.all([starting.then((api) => api.stop(), () => {}), raw.exited])
    await benchDb.drop()
    rmSync(dataDir, { recursive: true, force: true })
  })())
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => void cleanup().finally(() => process.exit(130)))
}

try {
  const api = await starting
  const base = api.base
  await waitHealthy(`http://127.0.0.1:${rawPort}/`, raw)
  const post = (path: string, body: unknown, token?: string) =>
    fetch(base + path, { method: 'POST', headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) }, body: JSON.stringify(body) }).then((r) => r.json() as Promise<any>)
  for (let i = 0; i < 60; i++) await post('/api/auth/register', { email: `user${i}@bench.local`, password: 'BenchUser123!', firstName: 'Bench', lastName: `User${i}` })
  const user = (await post('/api/auth/login', { email: 'user0@bench.local', password: 'BenchUser123!' })).data.token as string
  const admin = (await post('/api/auth/login', { email: 'admin@bench.local', password: 'BenchAdmin123!' })).data.token as string

  const opts = { connections, durationSeconds: duration }
  // Warm up every target (JIT, caches), then measure the baseline first and last to bracket drift.
  for (const u of [`http://127.0.0.1:${rawPort}/`, `${base}/health`]) await load(u, { ...opts, durationSeconds: 2 })
  await load(`${base}/api/auth/me`, { ...opts, durationSeconds: 2, headers: { authorization: `Bearer ${user}` } })

  const rawOpts = { ...opts, pid: raw.pid }
  const apiOpts = { ...opts, pid: api.proc.pid }
  const baseline1 = await load(`http://127.0.0.1:${rawPort}/`, rawOpts)
  const rows: [string, Awaited<ReturnType<typeof load>>][] = []
  rows.push(['GET /health (checks PostgreSQL)', await load(`${base}/health`, apiOpts)])
  rows.push(['GET /api/auth/me (authenticated)', await load(`${base}/api/auth/me`, { ...apiOpts, headers: { authorization: `Bearer ${user}` } })])
  rows.push(['GET /api/users?limit=20 (admin list)', await load(`${base}/api/users?limit=20`, { ...apiOpts, headers: { authorization: `Bearer ${admin}` } })])
  const baseline2 = await load(`http://127.0.0.1:${rawPort}/`, rawOpts)

  console.log(`\nbench:http — ${loadTool}, ${connections} connections, ${duration} s per target; LOG_LEVEL=warn; rate limits raised out of the way`)
  const table = versusBaseline(baseline1, baseline2, 40)
  table.row('raw Bun.serve hello (baseline, before)', baseline1)
  for (const [name, r] of rows) table.row(name, r)
  table.row('raw Bun.serve hello (baseline, after)', baseline2)
  console.log(`\ntarget: authenticated GET /api/auth/me ≥ 0.50× raw — measured ${table.ratio(rows[1]![1])}`)
} finally {
  await cleanup()
}
