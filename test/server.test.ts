/** Boot: first admin, JWT secret kept in DATA_DIR, production refusals, several nodes at once. */
import { afterAll, describe, expect, test } from 'bun:test'
import { createHash } from 'node:crypto'
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig } from '../src/config.ts'
import { resolveJwtSecret } from '../src/server.ts'
import { testDatabase } from './support/db.ts'
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

  test('production without JWT_SECRET stops boot with a clear message', async () => {
    const proc = Bun.spawn([process.execPath, 'src/main.ts'], { cwd: join(import.meta.dir, '..'), env: { ...process.env, NODE_ENV: 'production', JWT_SECRET: '' }, stderr: 'pipe', stdout: 'pipe' })
    expect(await proc.exited).toBe(1)
    expect(await new Response(proc.stderr).text()).toContain('JWT_SECRET is required when NODE_ENV=production')
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
