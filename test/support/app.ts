/**
 * A real server for a test file: its own database and data directory, port 0, fast bcrypt.
 *
 *   const t = await testServer()
 *   afterAll(() => t.stop())
 *   const res = await t.call('GET', '/api/auth/me', { token })
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { loadConfig, type Config } from '../../src/config.ts'
import { createLogger } from '../../src/core/logger.ts'
import { startServer, type RunningServer, type StartOptions } from '../../src/server.ts'
import { testDatabase, type TestDatabase } from './db.ts'

export interface TestServer {
  server: RunningServer
  db: TestDatabase
  config: Readonly<Config>
  url: string
  /** Through app.handle (no socket). */
  call(method: string, path: string, opts?: { token?: string; body?: unknown; headers?: Record<string, string> }): Promise<Response>
  json<T = any>(method: string, path: string, opts?: { token?: string; body?: unknown; headers?: Record<string, string> }): Promise<{ status: number; body: T; headers: Headers }>
  /** Register a user (and log them in); returns the login result. */
  user(opts?: { role?: 'ADMIN' | 'USER' | 'VIEWER'; email?: string; password?: string }): Promise<{ id: string; email: string; password: string; token: string; refreshToken: string }>
  admin(): Promise<{ id: string; email: string; password: string; token: string; refreshToken: string }>
  stop(): Promise<void>
}

export const PASSWORD = 'SecurePass123!'

/**
 * A socket path that does not exist, for `StartOptions.localDockerSocket`: with DOCKER_HOST
 * unset, a server then has no container engine even on a host with /var/run/docker.sock.
 * Its directory was made by mkdtemp (a name no one else holds) and removed at once.
 */
export function absentDockerSocket(): string {
  const dir = mkdtempSync(join(tmpdir(), 'quadrax-no-docker-'))
  rmSync(dir, { recursive: true })
  return join(dir, 'docker.sock')
}

/** A DATA_DIR of the caller's own (for tests that boot servers themselves), removed on dispose. */
export async function tempDataDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await mkdtemp(join(tmpdir(), 'quadrax-test-data-'))
  return { path, [Symbol.asyncDispose]: () => rm(path, { recursive: true, force: true }) }
}

export async function testServer(env: Record<string, string> = {}, opts: StartOptions = {}): Promise<TestServer> {
  const db = await testDatabase()
  // Each server its own DATA_DIR (DuckDB's spill files, a generated JWT secret), removed by
  // stop(); a test that passes DATA_DIR keeps its own and removes it itself.
  const dataDir = env.DATA_DIR === undefined ? await mkdtemp(join(tmpdir(), 'quadrax-test-data-')) : undefined
  const removeDataDir = async () => {
    if (dataDir) await rm(dataDir, { recursive: true, force: true })
  }
  const config = loadConfig({
    NODE_ENV: 'test',
    PORT: '0',
    HOST: '127.0.0.1',
    LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'silent',
    BCRYPT_ROUNDS: '4',
    JWT_SECRET: 'test-secret-'.padEnd(48, 'x'),
    RATE_LIMIT_MAX_REQUESTS: '100000',
    AUTH_RATE_LIMIT_MAX_REQUESTS: '100000',
    ADMIN_EMAIL: 'admin@test.local',
    ADMIN_PASSWORD: 'AdminPass123!',
    DATA_DIR: dataDir,
    // Redis is shared by every test run on the machine: keys of this server stay its own.
    REDIS_PREFIX: `test-${crypto.randomUUID().slice(0, 8)}:`,
    ...env,
    DATABASE_URL: db.url,
  })
  const server = await startServer(config, { logger: createLogger(config.logLevel), ...opts }).catch(async (err: unknown) => {
    await removeDataDir()
    throw err
  })
  const call = (method: string, path: string, o: { token?: string; body?: unknown; headers?: Record<string, string> } = {}) => {
    const headers: Record<string, string> = { ...(o.headers ?? {}) }
    if (o.token) headers.authorization = `Bearer ${o.token}`
    let body: string | undefined
    if (o.body !== undefined) {
      headers['content-type'] ??= 'application/json'
      body = typeof o.body === 'string' ? o.body : JSON.stringify(o.body)
    }
    return server.app.handle(new Request(`http://localhost${path}`, { method, headers, body }))
  }
  const json = async (method: string, path: string, o: { token?: string; body?: unknown; headers?: Record<string, string> } = {}) => {
    const res = await call(method, path, o)
    const text = await res.text()
    return { status: res.status, body: text ? JSON.parse(text) : null, headers: res.headers }
  }
  let n = 0
  const login = async (email: string, password: string) => {
    const r = await json('POST', '/api/auth/login', { body: { email, password } })
    if (r.status !== 200) throw new Error(`login failed: ${r.status} ${JSON.stringify(r.body)}`)
    return r.body.data
  }
  const user: TestServer['user'] = async (o = {}) => {
    const email = o.email ?? `user${++n}-${crypto.randomUUID().slice(0, 8)}@example.com`
    const password = o.password ?? PASSWORD
    const r = await json('POST', '/api/auth/register', { body: { email, password, firstName: 'Test', lastName: `User${n}` } })
    if (r.status !== 201) throw new Error(`register failed: ${r.status} ${JSON.stringify(r.body)}`)
    const id = r.body.data.user.id as string
    if (o.role && o.role !== 'USER') {
      await db.sql`update users set role = ${o.role} where id = ${id}`
      await server.http.auth.registry.invalidateUser(id)
    }
    const l = await login(email, password)
    return { id, email, password, token: l.token, refreshToken: l.refreshToken }
  }
  const admin: TestServer['admin'] = async () => {
    const l = await login(config.admin.email, config.admin.password!)
    return { id: l.user.id, email: config.admin.email, password: config.admin.password!, token: l.token, refreshToken: l.refreshToken }
  }
  return {
    server,
    db,
    config,
    url: server.url,
    call,
    json,
    user,
    admin,
    stop: async () => {
      await server.stop()
      await db.drop()
      await removeDataDir()
    },
  }
}
