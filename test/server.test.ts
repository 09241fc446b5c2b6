/**
 * Boot: first admin, JWT secret kept in DATA_DIR, production refusals, several nodes at once;
 * one server per port; database outages survived without a restart; logs as JSON lines.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { createHash } from 'node:crypto'
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pino from 'pino'
import { loadConfig } from '../src/config.ts'
import { resolveJwtSecret, startServer } from '../src/server.ts'
import { absentDockerSocket } from './support/app.ts'
import { testDatabase } from './support/db.ts'
import { tcpProxy } from './support/tcp-proxy.ts'
import { until } from './support/until.ts'

const dirs: string[] = []
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })))
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'qboot-'))
  dirs.push(d)
  return d
}

async function waitForHealth(url: string, proc: Bun.Subprocess, deadlineMs = 30_000): Promise<void> {
  await until(
    async () => {
      if (proc.exitCode !== null) throw new Error(`server exited with ${proc.exitCode}`)
      return (await fetch(`${url}/health`).catch(() => undefined))?.status === 200
    },
    'the server to become healthy',
    deadlineMs,
    50,
  )
}

async function freePort(): Promise<number> {
  const s = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const p = s.port
  s.stop(true)
  return p
}

describe('boot', () => {
  test('JWT secret: generated once outside production and kept in DATA_DIR', () => {
    const dir = tmp()
    const c = loadConfig({ DATA_DIR: dir })
    const a = resolveJwtSecret(c)
    expect(a.length).toBeGreaterThanOrEqual(32)
    expect(existsSync(join(dir, 'jwt-secret'))).toBe(true)
    expect(resolveJwtSecret(c)).toBe(a)
    expect(readFileSync(join(dir, 'jwt-secret'), 'utf8').trim()).toBe(a)
  })

  test('production without JWT_SECRET stops boot with a clear message (one JSON line)', async () => {
    const proc = Bun.spawn([process.execPath, 'src/main.ts'], { cwd: join(import.meta.dir, '..'), env: { ...process.env, NODE_ENV: 'production', JWT_SECRET: '' }, stderr: 'pipe', stdout: 'pipe' })
    expect(await proc.exited).toBe(1)
    const lines = (await new Response(proc.stdout).text()).trim().split('\n')
    expect(lines.map((l) => JSON.parse(l))).toEqual([expect.objectContaining({ level: 60, msg: expect.stringContaining('JWT_SECRET is required when NODE_ENV=production') })])
  })

  test('three servers started at once on one database all come up; migrations applied once; one admin', async () => {
    await using db = await testDatabase({ migrate: false })
    const dir = tmp()
    const ports = await Promise.all([freePort(), freePort(), freePort()])
    // REDIS_URL may be set (CI): rate-limit counters and queues of this test stay its own.
    const prefix = `test-${crypto.randomUUID().slice(0, 8)}:`
    const procs = ports.map((port) =>
      Bun.spawn([process.execPath, 'src/main.ts'], {
        cwd: join(import.meta.dir, '..'),
        env: { ...process.env, NODE_ENV: 'test', DATABASE_URL: db.url, PORT: String(port), HOST: '127.0.0.1', DATA_DIR: dir, JWT_SECRET: 'j'.repeat(40), ADMIN_PASSWORD: 'AdminPass123!', BCRYPT_ROUNDS: '4', LOG_LEVEL: 'warn', REDIS_PREFIX: prefix },
        stdout: 'pipe',
        stderr: 'pipe',
      }),
    )
    try {
      await Promise.all(ports.map((p, i) => waitForHealth(`http://127.0.0.1:${p}`, procs[i]!)))
      // Every file of sql/ applied exactly once: its number, its file name, and the sha256 of
      // its content (computed here, not by the code under test) recorded.
      const dir = join(import.meta.dir, '..', 'sql')
      const files = readdirSync(dir)
        .filter((f) => f.endsWith('.sql'))
        .sort()
        .map((name) => ({ version: Number(/^(\d{4})_/.exec(name)?.[1]), name, checksum: createHash('sha256').update(readFileSync(join(dir, name))).digest('hex') }))
      expect(files.length).toBeGreaterThan(0)
      const applied = await db.sql<{ version: number; name: string; checksum: string }[]>`select version, name, checksum from schema_migrations order by version`
      expect(applied.map((r) => ({ version: r.version, name: r.name, checksum: r.checksum }))).toEqual(files)
      const admins = await db.sql`select count(*)::int as n from users where role = 'ADMIN'`
      expect(admins[0]!.n).toBe(1)
      // A token from one node works on another (shared secret, shared sessions).
      const login = await fetch(`http://127.0.0.1:${ports[0]}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'admin@quadrax.local', password: 'AdminPass123!' }) })
      const { data } = (await login.json()) as { data: { token: string } }
      const me = await fetch(`http://127.0.0.1:${ports[2]}/api/auth/me`, { headers: { authorization: `Bearer ${data.token}` } })
      expect(me.status).toBe(200)
    } finally {
      for (const p of procs) p.kill('SIGTERM')
      const codes = await Promise.all(procs.map((p) => p.exited))
      expect(codes).toEqual([0, 0, 0]) // graceful shutdown on SIGTERM
    }
  })
})

const ROOT = join(import.meta.dir, '..')

interface ServerProcess {
  proc: Bun.Subprocess<'ignore', 'pipe', 'pipe'>
  /** Every stdout line so far. */
  lines: string[]
  /** The parsed stdout lines so far (a line that is not JSON fails the test that reads it). */
  events(): { level: number; msg: string; [k: string]: unknown }[]
  stderr(): Promise<string>
}

/** `src/main.ts` in its own process, as `npm start` runs it, with `env` over the test's defaults. */
function spawnServer(env: Record<string, string | undefined>): ServerProcess {
  const e: Record<string, string | undefined> = { ...process.env, NODE_ENV: 'test', HOST: '127.0.0.1', JWT_SECRET: 'j'.repeat(40), ADMIN_PASSWORD: 'AdminPass123!', BCRYPT_ROUNDS: '4', LOG_LEVEL: 'info', REDIS_URL: undefined, DOCKER_HOST: undefined, ...env }
  for (const k of Object.keys(e)) if (e[k] === undefined) delete e[k]
  const proc = Bun.spawn([process.execPath, 'src/main.ts'], { cwd: ROOT, env: e as Record<string, string>, stdout: 'pipe', stderr: 'pipe', stdin: 'ignore' })
  const lines: string[] = []
  void (async () => {
    let rest = ''
    for await (const chunk of proc.stdout) {
      const parts = (rest + new TextDecoder().decode(chunk)).split('\n')
      rest = parts.pop()!
      lines.push(...parts.filter(Boolean))
    }
    if (rest) lines.push(rest)
  })()
  return { proc, lines, events: () => lines.map((l) => JSON.parse(l)), stderr: () => new Response(proc.stderr).text() }
}

/** The process's exit code, or 'started' if it came up instead. */
async function exitOrStart(s: ServerProcess): Promise<number | 'started'> {
  return until(() => (s.proc.exitCode !== null ? s.proc.exitCode : s.lines.some((l) => l.includes('"server started"')) ? 'started' : undefined), 'the server to exit or start', 30_000)
}

async function login(base: string, password = 'AdminPass123!'): Promise<Response> {
  return fetch(`${base}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'admin@quadrax.local', password }) })
}

describe('one server per port', () => {
  test('a second server on a busy port refuses to start with a clear message; the first keeps every request', async () => {
    await using db = await testDatabase({ migrate: false })
    const port = await freePort()
    const env = { DATABASE_URL: db.url, PORT: String(port), DATA_DIR: tmp(), REDIS_PREFIX: `test-${crypto.randomUUID().slice(0, 8)}:` }
    const first = spawnServer(env)
    try {
      await waitForHealth(`http://127.0.0.1:${port}`, first.proc)
      const second = spawnServer(env)
      // Elysia's Bun adapter listens with SO_REUSEPORT by default: the second used to bind
      // and take half of the connections.
      expect(await exitOrStart(second)).toBe(1)
      const fatal = second.events().find((e) => e.level === 60)
      expect(fatal?.msg).toBe(
        `Failed to start: port ${port} on 127.0.0.1 is already in use, most likely by another QUADRAX server: stop it, or set PORT to a free port ` +
          '(REUSE_PORT=true lets several processes share one port on purpose; the kernel then splits connections between them)',
      )
      const before = first.events().filter((e) => e.msg === 'request').length
      for (let i = 0; i < 20; i++) expect((await fetch(`http://127.0.0.1:${port}/health`)).status).toBe(200)
      // Every one of them reached the first server.
      await until(() => first.events().filter((e) => e.msg === 'request').length === before + 20, 'the first server to log the 20 requests')
    } finally {
      first.proc.kill('SIGTERM')
      expect(await first.proc.exited).toBe(0)
    }
  }, 60_000)

  test('REUSE_PORT=true: two servers share the port on purpose', async () => {
    await using db = await testDatabase({ migrate: false })
    const port = await freePort()
    const env = { DATABASE_URL: db.url, PORT: String(port), DATA_DIR: tmp(), REUSE_PORT: 'true', REDIS_PREFIX: `test-${crypto.randomUUID().slice(0, 8)}:` }
    const a = spawnServer(env)
    try {
      await waitForHealth(`http://127.0.0.1:${port}`, a.proc)
      const b = spawnServer(env)
      try {
        expect(await exitOrStart(b)).toBe('started')
      } finally {
        b.proc.kill('SIGTERM')
        expect(await b.proc.exited).toBe(0)
      }
    } finally {
      a.proc.kill('SIGTERM')
      expect(await a.proc.exited).toBe(0)
    }
  }, 60_000)
})

describe('a Unix socket (UNIX_SOCKET)', () => {
  test('serves on the socket; a second server on it refuses to start; a socket left by a killed server is taken over', async () => {
    await using db = await testDatabase({ migrate: false })
    const path = join(tmp(), 'api.sock')
    const env = { DATABASE_URL: db.url, UNIX_SOCKET: path, DATA_DIR: tmp(), REDIS_PREFIX: `test-${crypto.randomUUID().slice(0, 8)}:` }
    const health = () => fetch('http://localhost/health', { unix: path } as RequestInit).then((r) => r.status, () => 0)
    const first = spawnServer(env)
    await until(async () => (first.proc.exitCode !== null ? 'exited' : (await health()) === 200 || undefined), 'the server to answer on its socket', 30_000, 50)
    const second = spawnServer(env)
    expect(await exitOrStart(second)).toBe(1)
    expect(second.events().find((e) => e.level === 60)?.msg).toBe(`Failed to start: the Unix socket ${path} is already in use, most likely by another QUADRAX server: stop it, or set UNIX_SOCKET to another path`)
    expect(await health()).toBe(200)
    first.proc.kill('SIGKILL')
    await first.proc.exited
    expect(existsSync(path)).toBe(true) // left behind
    const third = spawnServer(env)
    try {
      expect(await exitOrStart(third)).toBe('started')
      expect(await health()).toBe(200)
    } finally {
      third.proc.kill('SIGTERM')
      expect(await third.proc.exited).toBe(0)
    }
  }, 60_000)
})

describe('database outages', () => {
  test('a server whose embedded PostgreSQL is stopped from outside brings it back and answers again, without a restart', async () => {
    const dir = tmp()
    chmodSync(dir, 0o755) // the cluster stays in place (as root it is run by the postgres user)
    const port = await freePort()
    const s = spawnServer({ DATABASE_URL: undefined, PORT: String(port), DATA_DIR: dir })
    const base = `http://127.0.0.1:${port}`
    try {
      await waitForHealth(base, s.proc)
      expect((await login(base)).status).toBe(200)
      // What `npm run db:seed` used to do to a running server's cluster (a fast shutdown).
      const postmaster = Number(readFileSync(join(dir, 'postgres', 'postmaster.pid'), 'utf8').split('\n')[0])
      process.kill(postmaster, 'SIGINT')
      await until(() => s.events().some((e) => e.msg === 'embedded PostgreSQL exited unexpectedly; restarting it'), 'the server to see its database go')
      await until(async () => (await fetch(`${base}/health`)).status === 200 && (await login(base)).status === 200, 'the server to answer again', 30_000, 50)
      expect(s.events().some((e) => e.msg === 'embedded PostgreSQL restarted')).toBe(true)
    } finally {
      s.proc.kill('SIGTERM')
      expect(await s.proc.exited).toBe(0)
    }
  }, 60_000)

  test('PostgreSQL unreachable, then back: 503 in the envelope meanwhile, the reminder poller backs off and logs sparsely, then everything answers again', async () => {
    await using db = await testDatabase({ migrate: false })
    const target = new URL(db.url)
    await using proxy = tcpProxy({ host: target.hostname, port: Number(target.port) })
    const via = new URL(db.url)
    via.port = String(proxy.port)
    const events: { level: number; msg: string; failures?: number; retryInMs?: number }[] = []
    const logger = pino({ level: 'debug' }, { write: (line: string) => void events.push(JSON.parse(line)) })
    const config = loadConfig({ NODE_ENV: 'test', PORT: '0', HOST: '127.0.0.1', DATABASE_URL: via.toString(), DATA_DIR: tmp(), JWT_SECRET: 'j'.repeat(40), ADMIN_PASSWORD: 'AdminPass123!', BCRYPT_ROUNDS: '4', LOG_LEVEL: 'debug', AUTH_RATE_LIMIT_MAX_REQUESTS: '1000' })
    const pollMs = 20
    const server = await startServer(config, { logger, actorConfig: { reminderPollMs: pollMs }, localDockerSocket: absentDockerSocket() })
    try {
      expect((await login(server.url)).status).toBe(200)
      proxy.cut()
      const cutAt = events.length
      const down = await login(server.url)
      expect(down.status).toBe(503)
      expect(down.headers.get('retry-after')).toBe('5')
      expect(await down.json()).toEqual({ success: false, error: 'The database is unavailable; try again shortly', details: [], requestId: down.headers.get('x-request-id') })
      // A user who keeps trying through the outage: past LOGIN_LOCKOUT_THRESHOLD (5) attempts,
      // none of which could be evaluated, so none may count towards a wait afterwards.
      for (let i = 0; i < 5; i++) expect((await login(server.url)).status).toBe(503)

      const polls = () => events.filter((e) => e.msg === 'reminder poll failed; backing off')
      await until(() => polls().some((e) => e.failures === 6), 'six failed reminder polls', 30_000)
      // Each failure waits twice as long as the one before; only the 1st, 2nd and 4th are warnings.
      expect(polls().slice(0, 6).map((e) => [e.failures, e.retryInMs, e.level])).toEqual([
        [1, pollMs * 2, 40],
        [2, pollMs * 4, 40],
        [3, pollMs * 8, 20],
        [4, pollMs * 16, 40],
        [5, pollMs * 32, 20],
        [6, pollMs * 64, 20],
      ])

      // Nothing else complained meanwhile (no loop logging a warning per tick).
      const loud = events.slice(cutAt).filter((e) => e.level >= 40)
      // The audit log holds the refused requests' events and says so, as sparsely as the poller.
      const auditRetry = 'audit events could not be written yet (database unavailable); retrying'
      expect([...new Set(loud.map((e) => e.msg))].sort()).toEqual([auditRetry, 'database unavailable', 'reminder poll failed; backing off'])
      expect(loud.filter((e) => e.msg === auditRetry).length).toBeLessThanOrEqual(3)
      expect(loud.filter((e) => e.msg === 'database unavailable')).toHaveLength(6) // one per refused request
      proxy.restore()
      await until(async () => (await fetch(`${server.url}/health`)).status === 200, 'the server to answer again', 30_000, 50)
      // The first login after it works (not a 429 for the attempts the outage refused).
      expect((await login(server.url)).status).toBe(200)
      await until(() => events.some((e) => e.msg === 'reminder poll recovered'), 'the poller to recover', 30_000)
    } finally {
      await server.stop()
    }
  }, 60_000)
})

/**
 * The keys of every object in a JSON text, checked for repeats (JSON.parse keeps the last of
 * two equal keys without a word). Returns the first repeated key, or undefined.
 */
function repeatedKey(text: string): string | undefined {
  let i = 0
  const ws = () => {
    while (/\s/.test(text[i] ?? '')) i++
  }
  const str = (): string => {
    const start = i
    i++
    while (text[i] !== '"') i += text[i] === '\\' ? 2 : 1
    i++
    return JSON.parse(text.slice(start, i))
  }
  const value = (): string | undefined => {
    ws()
    const c = text[i]
    if (c === '{') {
      i++
      const keys = new Set<string>()
      for (ws(); text[i] !== '}'; ws()) {
        if (text[i] === ',') i++, ws()
        const k = str()
        if (keys.has(k)) return k
        keys.add(k)
        ws()
        i++ // ':'
        const inner = value()
        if (inner !== undefined) return inner
      }
      i++
      return undefined
    }
    if (c === '[') {
      i++
      for (ws(); text[i] !== ']'; ws()) {
        if (text[i] === ',') i++
        const inner = value()
        if (inner !== undefined) return inner
      }
      i++
      return undefined
    }
    if (c === '"') return void str()
    while (i < text.length && !/[,\]}\s]/.test(text[i]!)) i++
    return undefined
  }
  return value()
}

describe('logs', () => {
  test('every line a server writes, from the first boot to SIGTERM, is one JSON object with each key once; the banner is there', async () => {
    await using db = await testDatabase({ migrate: false })
    const port = await freePort()
    // No ADMIN_PASSWORD: the first boot generates one and says it once.
    const s = spawnServer({ DATABASE_URL: db.url, PORT: String(port), DATA_DIR: tmp(), ADMIN_PASSWORD: undefined, LOG_LEVEL: 'debug', FRONTEND_URL: 'https://app.example.com/quadrax/', REDIS_PREFIX: `test-${crypto.randomUUID().slice(0, 8)}:` })
    const base = `http://127.0.0.1:${port}`
    await waitForHealth(base, s.proc)
    await fetch(`${base}/api/nope`)
    await fetch(`${base}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"email":' })
    s.proc.kill('SIGTERM')
    expect(await s.proc.exited).toBe(0)
    expect(await s.stderr()).toBe('')
    expect(s.lines.length).toBeGreaterThan(5)
    for (const line of s.lines) {
      expect(() => JSON.parse(line)).not.toThrow()
      expect([line, repeatedKey(line)]).toEqual([line, undefined])
    }
    const msgs = s.events().map((e) => e.msg)
    const created = s.events().find((e) => e.msg.startsWith('First admin account created: admin@quadrax.local; generated password'))
    expect(typeof created?.generatedPassword).toBe('string')
    // The web app's link is FRONTEND_URL's.
    expect(msgs).toContain(`QUADRAX ML API listening on http://127.0.0.1:${port}; Swagger UI: http://127.0.0.1:${port}/swagger; OpenAPI: http://127.0.0.1:${port}/swagger/json; web app: https://app.example.com/quadrax/`)
    expect(msgs.at(-1)).toBe('server stopped')
  }, 60_000)

  test('a child logger that names a key its parent has (component) writes it once, its own value', async () => {
    const code = `
      import { createLogger } from ${JSON.stringify(join(ROOT, 'src/core/logger.ts'))}
      const actors = createLogger('info').child({ component: 'actors', node: 'n1' })
      const kind = actors.child({ component: 'datakit' })
      kind.info('one')
      kind.child({ datakit: 'd1' }).warn('two')
    `
    const proc = Bun.spawn([process.execPath, '-e', code], { cwd: ROOT, stdout: 'pipe' })
    const lines = (await new Response(proc.stdout).text()).trim().split('\n')
    expect(await proc.exited).toBe(0)
    expect(lines.map(repeatedKey)).toEqual([undefined, undefined])
    expect(lines.map((l) => JSON.parse(l))).toEqual([
      expect.objectContaining({ component: 'datakit', node: 'n1', msg: 'one' }),
      expect.objectContaining({ component: 'datakit', node: 'n1', datakit: 'd1', msg: 'two' }),
    ])
  })
})
