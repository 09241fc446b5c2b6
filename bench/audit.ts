/**
 * npm run bench:audit — what the audit log costs: requests/s of a state-changing route
 * (PATCH /api/models/:id, a new description each time: an actor turn that writes) on a server
 * with the audit log on (AUDIT_ENABLED=true, the default: one audit event per request, hashed
 * into the chain) next to the same route on a server with it off, in one invocation. Both
 * servers run side by side (each with its own throw-away database on the same PostgreSQL)
 * and are loaded in turn, alternating which goes first each round, then both at once (then
 * whatever else the machine runs weighs on both alike: the steadier comparison on a shared
 * machine). The requests rotate over BENCH_MODELS models, so no single model's mailbox is the
 * limit: the server is.
 *
 * Next to requests/s, each server's CPU time per request (every thread, from /proc): the
 * steadier figure on a shared machine. Target: audit on ≥ 0.9× audit off.
 *
 * Env: BENCH_DURATION (s per measurement, default 10), BENCH_CONNECTIONS (default 50),
 * BENCH_MODELS (default 32), BENCH_ROUNDS (default 6), DATABASE_URL (throw-away databases are
 * created there and dropped; unset: each server starts an embedded PostgreSQL),
 * BENCH_TOOL=wrk|autocannon.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { benchDatabase, type BenchDatabase } from './support/db.ts'
import { cpuOf, fmt, loadTool, type LoadResult } from './support/load.ts'
import { startBenchServer, type BenchServer } from './support/server.ts'

const duration = Number(process.env.BENCH_DURATION ?? 10)
const connections = Number(process.env.BENCH_CONNECTIONS ?? 50)
const modelCount = Number(process.env.BENCH_MODELS ?? 32)
const rounds = Number(process.env.BENCH_ROUNDS ?? 6)
const dir = mkdtempSync(join(tmpdir(), 'quadrax-bench-audit-'))

interface Target {
  name: string
  db: BenchDatabase
  server: Promise<BenchServer>
  token?: string
  models?: string[]
  results: LoadResult[]
}

async function target(name: string, enabled: boolean): Promise<Target> {
  const db = await benchDatabase()
  const dataDir = join(dir, name.replace(' ', '-'))
  mkdirSync(dataDir)
  const server = startBenchServer({ dataDir, databaseUrl: db.url, extra: { AUDIT_ENABLED: String(enabled) } })
  server.catch(() => {}) // awaited below; a failed start stops its own server
  return { name, db, server, results: [] }
}

const on = await target('audit on', true)
const off = await target('audit off', false)
const targets = [on, off]

/** Everything this run started or made goes, however it ends (an error, Ctrl-C, SIGTERM). */
let cleaning: Promise<void> | undefined
const cleanup = () =>
  (cleaning ??= (async () => {
    await Promise.all(targets.map((t) => t.server.then((s) => s.stop(), () => {})))
    await Promise.all(targets.map((t) => t.db.drop()))
    rmSync(dir, { recursive: true, force: true })
  })())
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.once(signal, () => void cleanup().finally(() => process.exit(130)))

/** Load PATCH /api/models/<id> on `base`, the id rotating over `ids`, each request a new description. */
async function patchLoad(base: string, token: string, ids: string[], seconds: number, pid: number): Promise<LoadResult> {
  const cpu0 = cpuOf(pid)
  const r = loadTool === 'wrk' ? await wrk(base, token, ids, seconds) : await autocannon(base, token, ids, seconds)
  r.cpuUs = ((cpuOf(pid) - cpu0) * 1000) / (r.rps * seconds)
  return r
}

async function wrk(base: string, token: string, ids: string[], seconds: number): Promise<LoadResult> {
  const script = join(dir, `wrk-${crypto.randomUUID()}.lua`)
  writeFileSync(
    script,
    `local ids = {${ids.map((id) => JSON.stringify(id)).join(',')}}\nlocal i = 0\n` +
      `wrk.headers["authorization"] = "Bearer ${token}"\nwrk.headers["content-type"] = "application/json"\n` +
      `request = function()\n  i = i + 1\n  return wrk.format("PATCH", "/api/models/" .. ids[(i % #ids) + 1], nil, '{"description":"bench ' .. i .. '"}')\nend\n`,
  )
  const p = Bun.spawn([Bun.which('wrk')!, '-t2', `-c${connections}`, `-d${seconds}s`, '--latency', '-s', script, base], { stdout: 'pipe', stderr: 'inherit' })
  const out = await new Response(p.stdout).text()
  await p.exited
  const ms = (text: string) => {
    const m = /([\d.]+)(us|ms|s)/.exec(text)
    return m ? Number(m[1]) * (m[2] === 'us' ? 0.001 : m[2] === 's' ? 1000 : 1) : NaN
  }
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? NaN),
    p50: ms(/\s50%\s+(\S+)/.exec(out)?.[1] ?? ''),
    p99: ms(/\s99%\s+(\S+)/.exec(out)?.[1] ?? ''),
    non2xx: Number(/Non-2xx or 3xx responses:\s+(\d+)/.exec(out)?.[1] ?? 0),
  }
}

/** autocannon's API under Node (its CLI has no way to vary the path per request). */
async function autocannon(base: string, token: string, ids: string[], seconds: number): Promise<LoadResult> {
  const driver = join(dir, `autocannon-${crypto.randomUUID()}.cjs`)
  writeFileSync(
    driver,
    `const autocannon = require(${JSON.stringify(join(import.meta.dir, '../node_modules/autocannon'))})\n` +
      `const ids = ${JSON.stringify(ids)}\nlet i = 0\n` +
      `autocannon({ url: ${JSON.stringify(base)}, connections: ${connections}, duration: ${seconds},\n` +
      `  headers: { authorization: 'Bearer ${token}', 'content-type': 'application/json' },\n` +
      `  requests: [{ method: 'PATCH', setupRequest: (req) => { i++; return { ...req, path: '/api/models/' + ids[i % ids.length], body: JSON.stringify({ description: 'bench ' + i }) } } }],\n` +
      `}, (err, r) => { if (err) throw err; process.stdout.write(JSON.stringify({ rps: r.requests.average, p50: r.latency.p50, p99: r.latency.p99, non2xx: r.non2xx })) })\n`,
  )
  const p = Bun.spawn(['node', driver], { stdout: 'pipe', stderr: 'inherit' })
  const out = await new Response(p.stdout).text()
  await p.exited
  return JSON.parse(out) as LoadResult
}

/** The median (of an even count: the mean of the middle two). */
function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

try {
  for (const t of targets) {
    const api = await t.server
    await api.call('POST', '/api/auth/register', { email: 'bench@bench.local', password: 'BenchUser123!', firstName: 'Bench', lastName: 'User' })
    t.token = (await api.call('POST', '/api/auth/login', { email: 'bench@bench.local', password: 'BenchUser123!' })).token as string
    t.models = []
    for (let i = 0; i < modelCount; i++) t.models.push((await api.call('POST', '/api/models', { name: `bench-${i}`, type: 'REGRESSION' }, t.token)).id as string)
    await patchLoad(api.base, t.token, t.models, 5, api.proc.pid) // warm-up: JIT, pools, caches
  }
  for (let round = 0; round < rounds; round++) {
    for (const t of round % 2 === 0 ? targets : [...targets].reverse()) {
      const api = await t.server
      t.results.push(await patchLoad(api.base, t.token!, t.models!, duration, api.proc.pid))
    }
  }
  // Both at once: whatever else the machine is doing then weighs on both alike.
  const together = await Promise.all(
    targets.map(async (t) => {
      const api = await t.server
      return patchLoad(api.base, t.token!, t.models!, duration, api.proc.pid)
    }),
  )

  const load = await Bun.file('/proc/loadavg').text().then((s) => s.split(' ').slice(0, 3).join(' '), () => '?')
  console.log(`\nbench:audit — PATCH /api/models/:id (new description each request, over ${modelCount} models); ${loadTool}, ${connections} connections, ${duration} s per measurement; LOG_LEVEL=warn; load average ${load} on ${navigator.hardwareConcurrency} cores`)
  console.log(`${'server'.padEnd(10)} ${'run'.padEnd(14)} ${'req/s'.padStart(9)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'non-2xx'.padStart(8)} ${'CPU µs/req'.padStart(11)}`)
  const row = (t: Target, run: string, r: LoadResult) =>
    console.log(`${t.name.padEnd(10)} ${run.padEnd(14)} ${fmt(r.rps).padStart(9)} ${fmt(r.p50, 2).padStart(8)} ${fmt(r.p99, 2).padStart(8)} ${String(r.non2xx).padStart(8)} ${fmt(r.cpuUs!, 1).padStart(11)}`)
  for (let i = 0; i < rounds; i++) for (const t of i % 2 === 0 ? targets : [...targets].reverse()) row(t, `in turn, ${i + 1}`, t.results[i]!)
  targets.forEach((t, i) => row(t, 'side by side', together[i]!))
  // Each round's two runs are next to each other in time: their ratio is what drifts least
  // when the machine's other work comes and goes.
  const rpsRatios = on.results.map((r, i) => r.rps / off.results[i]!.rps)
  const cpuRatios = on.results.map((r, i) => off.results[i]!.cpuUs! / r.cpuUs!)

  // What the audited server recorded, and whether its chain is whole after the load.
  const apiOn = await on.server
  const admin = (await apiOn.call('POST', '/api/auth/login', { email: 'admin@bench.local', password: 'BenchAdmin123!' })).token as string
  const verified = await apiOn.call('GET', '/api/admin/audit/verify', undefined, admin)
  const started = performance.now()
  await apiOn.call('GET', '/api/admin/audit/verify', undefined, admin)
  const verifyMs = performance.now() - started

  const list = (xs: number[]) => xs.map((x) => x.toFixed(2)).join(', ')
  console.log(`\nin turn, req/s on ÷ off: median of rounds ${median(rpsRatios).toFixed(2)}× (${list(rpsRatios)}); CPU per request off ÷ on: ${median(cpuRatios).toFixed(2)}× (${list(cpuRatios)})`)
  console.log(`side by side, req/s: on ${fmt(together[0]!.rps)}, off ${fmt(together[1]!.rps)} → ${(together[0]!.rps / together[1]!.rps).toFixed(2)}×; CPU per request → ${(together[1]!.cpuUs! / together[0]!.cpuUs!).toFixed(2)}×`)
  console.log(`target: audit on ≥ 0.90× audit off`)
  console.log(`audit log after the load: ${verified.head.seq} events, chain ${verified.valid ? 'intact' : `BROKEN: ${verified.broken.message}`}; verified in ${fmt(verifyMs)} ms (${fmt((verified.checked / verifyMs) * 1000)} events/s)`)
} finally {
  await cleanup()
}
