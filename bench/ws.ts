/**
 * npm run bench:ws — events per second delivered to 1,000 sockets subscribed to one topic,
 * and p99 publish-to-receive latency, through the platform (actor turn → outbox → hub →
 * Bun publish) next to a raw Bun.serve WebSocket publish of the same frames, in one run.
 *
 * Env: BENCH_SOCKETS (1000), BENCH_EVENTS (events per run, 2000), DATABASE_URL (a throw-away
 * database is created there; unset: embedded PostgreSQL).
 */
import postgres from 'postgres'
import { join } from 'node:path'
import { loadConfig } from '../src/config.ts'
import { createLogger } from '../src/core/logger.ts'
import { startServer } from '../src/server.ts'
import { startEmbedded } from '../src/store/embedded.ts'
import { beacon } from '../test/ws/beacon.ts'
import { fmt } from './support/load.ts'
import { mkdtempSync, rmSync, chmodSync } from 'node:fs'
import { tmpdir } from 'node:os'

const SOCKETS = Number(process.env.BENCH_SOCKETS ?? 1000)
const EVENTS = Number(process.env.BENCH_EVENTS ?? 2000)
const BATCH = 50 // events per actor turn (one outbox insert each)
const now = () => performance.timeOrigin + performance.now()

async function runClients(url: string, subscribe: string | undefined, token: string | undefined, publish: () => Promise<void>) {
  const proc = Bun.spawn([process.execPath, join(import.meta.dir, 'support/ws-clients.ts')], {
    env: { ...process.env, URL: url, SOCKETS: String(SOCKETS), EXPECT: String(EVENTS), SUBSCRIBE: subscribe ?? '', TOKEN: token ?? '' },
    stdout: 'pipe',
    stderr: 'inherit',
  })
  const reader = proc.stdout.getReader()
  let buf = ''
  const lines = async function* () {
    for (;;) {
      const { done, value } = await reader.read()
      if (done) return
      buf += new TextDecoder().decode(value)
      let i
      while ((i = buf.indexOf('\n')) >= 0) {
        yield JSON.parse(buf.slice(0, i))
        buf = buf.slice(i + 1)
      }
    }
  }
  const it = lines()
  await it.next() // ready
  const t0 = now()
  await publish()
  const published = now() - t0
  const { value: result } = await it.next()
  await proc.exited
  return { ...(result as { received: number; seconds: number; p50: number; p99: number }), publishMs: published }
}

// Raw baseline: Bun.serve publishing the same frames to the same clients.
async function baseline() {
  const server = Bun.serve({
    port: 0,
    hostname: '127.0.0.1',
    fetch: (req, s) => (s.upgrade(req) ? undefined : new Response('no', { status: 400 })),
    websocket: {
      open: (ws) => {
        ws.subscribe('t')
      },
      message() {},
    },
  })
  try {
    return await runClients(`ws://127.0.0.1:${server.port}/`, undefined, undefined, async () => {
      for (let i = 0; i < EVENTS; i++) {
        server.publish('t', JSON.stringify({ op: 'event', topic: 't', seq: i + 1, type: 'tick', data: { n: i, sentAt: now() }, at: new Date().toISOString() }))
        if (i % BATCH === BATCH - 1) await new Promise((r) => setImmediate(r))
      }
    })
  } finally {
    server.stop(true)
  }
}

async function platform() {
  let adminUrl = process.env.DATABASE_URL
  let dir: string | undefined
  let embedded: Awaited<ReturnType<typeof startEmbedded>> | undefined
  if (!adminUrl) {
    dir = mkdtempSync(join(tmpdir(), 'quadrax-bench-ws-'))
    chmodSync(dir, 0o755)
    embedded = await startEmbedded({ dir: join(dir, 'pg'), persistent: false })
    adminUrl = embedded.url
  }
  const name = `bench_ws_${crypto.randomUUID().replaceAll('-', '').slice(0, 10)}`
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} })
  await admin.unsafe(`create database ${name}`)
  const u = new URL(adminUrl)
  u.pathname = `/${name}`
  const config = loadConfig({
    NODE_ENV: 'production', PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'warn', JWT_SECRET: 'bench-'.padEnd(40, 'x'), BCRYPT_ROUNDS: '4',
    DATABASE_URL: u.toString(), ADMIN_PASSWORD: 'BenchAdmin123!', RATE_LIMIT_MAX_REQUESTS: '1000000000', AUTH_RATE_LIMIT_MAX_REQUESTS: '1000000000',
    WS_MAX_CONNECTIONS_PER_USER: String(SOCKETS + 10), WS_MAX_BUFFERED_BYTES: String(64 * 1024 * 1024), DATA_DIR: join(tmpdir(), 'quadrax-bench-ws-data'),
  })
  const s = await startServer(config, { logger: createLogger('warn'), features: [() => ({ name: 'bench', actors: [beacon] })] })
  try {
    const login = (await (await fetch(`${s.url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: config.admin.email, password: 'BenchAdmin123!' }) })).json()) as { data: { token: string; user: { id: string } } }
    const topic = `user:${login.data.user.id}`
    return await runClients(s.url.replace('http', 'ws') + '/ws', JSON.stringify({ op: 'subscribe', topic }), login.data.token, async () => {
      // Each event carries its emit time; latency runs from the emitting turn to the client.
      for (let i = 0; i < EVENTS; i += BATCH) await s.http.actors.ask('beacon', 'b', { type: 'emit', topic, count: BATCH, from: i, stamp: true })
    })
  } finally {
    await s.stop()
    await admin.unsafe(`drop database if exists ${name} with (force)`)
    await admin.end()
    await embedded?.stop()
    if (dir) rmSync(dir, { recursive: true, force: true })
  }
}

const raw = await baseline()
const ours = await platform()
const rate = (r: { received: number; seconds: number }) => r.received / r.seconds
console.log(`\nbench:ws — ${SOCKETS} sockets on one topic, ${EVENTS} events (${BATCH} per actor turn through the outbox)`)
console.log(`${'path'.padEnd(44)} ${'deliveries/s'.padStart(13)} ${'p50 ms'.padStart(8)} ${'p99 ms'.padStart(8)} ${'× raw'.padStart(7)}`)
for (const [name, r] of [['raw Bun.serve publish (baseline)', raw], ['platform: actor → outbox → hub → publish', ours]] as const) {
  console.log(`${name.padEnd(44)} ${fmt(rate(r)).padStart(13)} ${fmt(r.p50, 2).padStart(8)} ${fmt(r.p99, 2).padStart(8)} ${(rate(r) / rate(raw)).toFixed(2).padStart(7)}`)
}
console.log(`\ntarget: ≥ 0.70× the raw rate — measured ${(rate(ours) / rate(raw)).toFixed(2)}×`)
process.exit(0)
