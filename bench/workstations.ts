/**
 * npm run bench:workstations — how long a workstation takes to run, next to raw dockerode on
 * the same engine, same image, same hardened container, in the same run (interleaved, so load
 * from anything else on the machine hits both alike).
 *
 *   raw (A)    dockerode: create the home volume, create the container (the platform's hardened
 *              HostConfig), start it — timed until start() returns.
 *   raw (B)    dockerode: start a container created beforehand (what the platform's start does).
 *   start      POST /api/workstations/:id/start → the RUNNING event on a WebSocket, for a
 *              workstation whose container already exists (the platform creates it when the
 *              workstation is created: CREATING → STOPPED).
 *   create+start  POST /api/workstations → STOPPED event, then POST start → RUNNING event: the
 *              platform doing everything raw does, plus its bookkeeping.
 *
 * p50 and p95 over BENCH_STARTS (default 20) of each. Target (issue 4): start ≤ 1.3 × raw (A);
 * the ratio to (B) is the platform's own overhead on a start.
 * Needs DOCKER_HOST (scripts/docker-up.sh) and uses DATABASE_URL for a throw-away database
 * (dropped after; unset: embedded PostgreSQL).
 */
import Dockerode from 'dockerode'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../src/config.ts'
import { createLogger } from '../src/core/logger.ts'
import { hardenedHostConfig, labelsFor } from '../src/engines/containers/docker-spec.ts'
import { startServer } from '../src/server.ts'
import { workstationsFeature } from '../src/features/workstations.ts'
import { benchDatabase } from './support/db.ts'

const dockerHost = process.env.DOCKER_HOST
if (!dockerHost) {
  console.error('bench:workstations needs DOCKER_HOST (run scripts/docker-up.sh and export its last line)')
  process.exit(2)
}
const image = process.env.QUADRAX_TEST_IMAGE ?? 'quadrax/busybox:test'
const starts = Number(process.env.BENCH_STARTS ?? 20)
const resources = { cpu: 0.5, memory: 64, storage: 0, gpu: false }
const benchOwner = crypto.randomUUID()
const url = new URL(dockerHost)
const docker = url.protocol === 'unix:' ? new Dockerode({ socketPath: url.pathname }) : new Dockerode({ host: url.hostname, port: Number(url.port || 2375) })

const benchDb = await benchDatabase()
const databaseUrl = benchDb.url
const dataDir = mkdtempSync(join(tmpdir(), 'quadrax-bench-ws-'))
const config = loadConfig({
  NODE_ENV: 'production',
  PORT: '0',
  HOST: '127.0.0.1',
  LOG_LEVEL: 'warn',
  JWT_SECRET: 'bench-'.padEnd(48, 'x'),
  ADMIN_EMAIL: 'admin@bench.local',
  ADMIN_PASSWORD: 'BenchAdmin123!',
  BCRYPT_ROUNDS: '4',
  DATA_DIR: dataDir,
  DOCKER_HOST: dockerHost,
  WORKSTATION_IMAGES: image,
  WORKSTATION_IDLE_TIMEOUT: '0',
  QUOTA_MAX_RUNNING: String(starts * 2 + 10),
  QUOTA_MAX_CPU: '100000',
  QUOTA_MAX_MEMORY_MB: '100000000',
  RATE_LIMIT_MAX_REQUESTS: '1000000000',
  AUTH_RATE_LIMIT_MAX_REQUESTS: '1000000000',
  ...(databaseUrl ? { DATABASE_URL: databaseUrl } : {}),
})
const server = await startServer(config, { logger: createLogger('warn'), features: [workstationsFeature] })
let adminId: string | undefined

const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!
}

try {
  const base = server.url
  const login = await (await fetch(`${base}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'admin@bench.local', password: 'BenchAdmin123!' }) })).json() as { data: { token: string; user: { id: string } } }
  const token = login.data.token
  const userId = login.data.user.id
  adminId = userId
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(base + path, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: body === undefined ? undefined : JSON.stringify(body) })
    const json = (await res.json()) as { data: { id: string; status: string } }
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`)
    return json.data
  }

  // Status events of every workstation of the user, as they arrive.
  const ws = new WebSocket(base.replace('http', 'ws') + '/ws', { headers: { authorization: `Bearer ${token}` } } as unknown as string[])
  const waiters = new Map<string, (at: number) => void>()
  const seen = new Map<string, number>()
  ws.onmessage = (e) => {
    const m = JSON.parse(String(e.data))
    if (m.op !== 'event' || m.type !== 'status') return
    const key = `${m.data.id}:${m.data.status}`
    const waiter = waiters.get(key)
    if (waiter) {
      waiters.delete(key)
      waiter(performance.now())
    } else seen.set(key, performance.now())
  }
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve()
    ws.onerror = () => reject(new Error('WebSocket failed'))
  })
  const acked = new Promise<void>((resolve) => {
    const prev = ws.onmessage!
    ws.onmessage = (e) => {
      if (JSON.parse(String(e.data)).op === 'ack') resolve()
      prev.call(ws, e)
    }
  })
  ws.send(JSON.stringify({ op: 'subscribe', topic: `user:${userId}` }))
  await acked
  /** Resolves with the arrival time of `status` for `id` (already arrived, or still to come). */
  const when = (id: string, status: string) =>
    new Promise<number>((resolve) => {
      const key = `${id}:${status}`
      const at = seen.get(key)
      if (at !== undefined) {
        seen.delete(key)
        resolve(at)
      } else waiters.set(key, resolve)
    })
  const body = (i: number) => ({ name: `bench-${i}`, description: 'benchmark workstation', function: 'DEVELOPMENT', resources })

  // Create, then start, one workstation: the platform doing all that raw does.
  const createAndStart = async (i: number): Promise<{ id: string; full: number }> => {
    const t0 = performance.now()
    const created = await api('POST', '/api/workstations', body(i))
    await when(created.id, 'STOPPED')
    const running = when(created.id, 'RUNNING')
    await api('POST', `/api/workstations/${created.id}/start`)
    await running
    return { id: created.id, full: performance.now() - t0 }
  }

  const rawCreate = async (name: string, i: number) => {
    await docker.createVolume({ Name: `${name}-home`, Labels: labelsFor('workstation', `bench-${i}`, benchOwner) })
    const c = await docker.createContainer({
      name,
      Image: image,
      Env: ['HOME=/home/quadrax'],
      WorkingDir: '/home/quadrax',
      User: '1000:1000',
      Labels: labelsFor('workstation', `bench-raw-${i}`, benchOwner),
      NetworkDisabled: true,
      StopTimeout: 10,
      HostConfig: hardenedHostConfig({ resources, runtime: 'runc', pidsLimit: 512, mounts: [{ Type: 'volume', Source: `${name}-home`, Target: '/home/quadrax', ReadOnly: false }] }),
    })
    return c
  }
  const rawName = (i: number, what: string) => `quadrax-bench-raw-${benchOwner.slice(0, 8)}-${what}-${i}`
  /** volume + create + start, timed. */
  const rawRun = async (i: number): Promise<number> => {
    const t0 = performance.now()
    const c = await rawCreate(rawName(i, 'full'), i)
    await c.start()
    return performance.now() - t0
  }
  /** start of a container created beforehand, timed. */
  const rawStarts = await Promise.all(Array.from({ length: starts }, (_, i) => rawCreate(rawName(i, 'start'), i)))
  const rawStart = async (i: number): Promise<number> => {
    const t0 = performance.now()
    await rawStarts[i]!.start()
    return performance.now() - t0
  }

  // Workstations for the start-only measure, created (and their containers made) up front.
  const ready: string[] = []
  for (let i = 0; i < starts; i++) {
    const created = await api('POST', '/api/workstations', body(i))
    ready.push(created.id)
  }
  await Promise.all(ready.map((id) => when(id, 'STOPPED')))
  // Warm-up (first engine calls, JIT) on both sides, not measured.
  await rawRun(-1)
  await createAndStart(-1)

  const raw: number[] = []
  const rawStart_: number[] = []
  const start: number[] = []
  const full: number[] = []
  for (let i = 0; i < starts; i++) {
    raw.push(await rawRun(i))
    rawStart_.push(await rawStart(i))
    const id = ready[i]!
    const running = when(id, 'RUNNING')
    const t0 = performance.now()
    await api('POST', `/api/workstations/${id}/start`)
    start.push((await running) - t0)
    full.push((await createAndStart(starts + i)).full)
  }
  ws.close()

  const row = (label: string, xs: number[], base?: number[]) => {
    const p50 = pct(xs, 50)
    const p95 = pct(xs, 95)
    const vs = base ? `${(p50 / pct(base, 50)).toFixed(2)}× / ${(p95 / pct(base, 95)).toFixed(2)}×` : 'baseline'
    return `${label.padEnd(46)} ${p50.toFixed(1).padStart(8)} ${p95.toFixed(1).padStart(8)}   ${vs}`
  }
  console.log(`\nworkstation start latency, ${starts} runs each (interleaved), image ${image}, engine ${dockerHost}\n`)
  console.log(`${'measure'.padEnd(46)} ${'p50 ms'.padStart(8)} ${'p95 ms'.padStart(8)}   p50 / p95 vs its raw baseline`)
  console.log(row('raw dockerode volume+create+start (A)', raw))
  console.log(row('raw dockerode start, container exists (B)', rawStart_))
  console.log(row('POST start → RUNNING event, vs A', start, raw))
  console.log(row('POST start → RUNNING event, vs B', start, rawStart_))
  console.log(row('POST create → STOPPED, start → RUNNING, vs A', full, raw))
  const ratio = pct(start, 50) / pct(raw, 50)
  console.log(`\ntarget (issue 4): POST start → RUNNING ≤ 1.3× raw create+start → ${ratio <= 1.3 ? 'met' : 'NOT met'} (${ratio.toFixed(2)}× at p50)`)
} finally {
  await server.stop()
  await cleanup()
  await benchDb.drop()
  rmSync(dataDir, { recursive: true, force: true })
}

/** Remove the raw containers (labelled with the bench's owner) and the platform's (owned by the bench admin). */
async function cleanup(): Promise<void> {
  for (const owner of [benchOwner, adminId].filter((o): o is string => o !== undefined)) {
    const label = [`quadrax.owner=${owner}`]
    const containers = await docker.listContainers({ all: true, filters: { label } })
    await Promise.all(containers.map((c) => docker.getContainer(c.Id).remove({ force: true, v: true }).catch(() => {})))
    const { Volumes } = await docker.listVolumes({ filters: { label } })
    await Promise.all((Volumes ?? []).map((v) => docker.getVolume(v.Name).remove().catch(() => {})))
  }
}
