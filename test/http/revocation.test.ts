/**
 * Session revocation across nodes: two servers on one database and one Redis. Node B has the
 * session cached as live; a logout on node A must make B refuse the token at once.
 */
import { afterAll, describe, expect, test } from 'bun:test'
import { loadConfig } from '../../src/config.ts'
import { createLogger } from '../../src/core/logger.ts'
import { startServer, type RunningServer } from '../../src/server.ts'
import { tempDataDir } from '../support/app.ts'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { service } from '../support/services.ts'
import { until } from '../support/until.ts'

const redisUrl = service('redis', 'test/http/revocation.test.ts')

describe.if(Boolean(redisUrl))('revocation across nodes', () => {
  let db: TestDatabase
  const servers: RunningServer[] = []
  let dataDir: Awaited<ReturnType<typeof tempDataDir>> | undefined
  afterAll(async () => {
    for (const s of servers) await s.stop()
    await db?.drop()
    await dataDir?.[Symbol.asyncDispose]()
  })

  test('logout, password change and deactivation on one node apply on the other at once', async () => {
    db = await testDatabase()
    dataDir = await tempDataDir()
    const prefix = `test-${crypto.randomUUID()}`
    const env = {
      NODE_ENV: 'test', PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'silent', BCRYPT_ROUNDS: '4', JWT_SECRET: 'rev-test-'.padEnd(48, 'x'), DATABASE_URL: db.url, REDIS_URL: redisUrl!, REDIS_PREFIX: `${prefix}:`,
      ADMIN_PASSWORD: 'AdminPass123!', RATE_LIMIT_MAX_REQUESTS: '100000', AUTH_RATE_LIMIT_MAX_REQUESTS: '100000', DATA_DIR: dataDir.path,
    }
    for (const nodeId of ['rev-a', 'rev-b']) servers.push(await startServer(loadConfig({ ...env, NODE_ID: nodeId }), { logger: createLogger('silent'), features: [], queuePrefix: prefix }))
    const [a, b] = servers as [RunningServer, RunningServer]
    const call = (s: RunningServer, method: string, path: string, token?: string, body?: unknown) =>
      s.app.handle(new Request(`http://localhost${path}`, { method, headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) }, body: body ? JSON.stringify(body) : undefined }))
    const register = async (email: string) => {
      const r = await call(a, 'POST', '/api/auth/register', undefined, { email, password: 'SecurePass123!', firstName: 'R', lastName: 'T' })
      return ((await r.json()) as any).data as { token: string; user: { id: string } }
    }

    // Logout on A.
    const u1 = await register('rev1@example.com')
    expect((await call(b, 'GET', '/api/auth/me', u1.token)).status).toBe(200) // B caches the session as live
    expect((await call(a, 'POST', '/api/auth/logout', u1.token)).status).toBe(200)
    await until(async () => (await call(b, 'GET', '/api/auth/me', u1.token)).status === 401, 'the revocation to reach the other node', 5_000)

    // Password change on B revokes the session A knows.
    const u2 = await register('rev2@example.com')
    expect((await call(a, 'GET', '/api/auth/me', u2.token)).status).toBe(200)
    expect((await call(b, 'POST', '/api/auth/change-password', u2.token, { currentPassword: 'SecurePass123!', newPassword: 'OtherPass456!' })).status).toBe(200)
    await until(async () => (await call(a, 'GET', '/api/auth/me', u2.token)).status === 401, 'the revocation to reach the other node', 5_000)

    // Deactivation by an admin on A; the user's live token on B stops working.
    const u3 = await register('rev3@example.com')
    expect((await call(b, 'GET', '/api/auth/me', u3.token)).status).toBe(200)
    const admin = ((await (await call(a, 'POST', '/api/auth/login', undefined, { email: 'admin@quadrax.local', password: 'AdminPass123!' })).json()) as any).data.token
    expect((await call(a, 'DELETE', `/api/users/${u3.user.id}`, admin)).status).toBe(200)
    await until(async () => (await call(b, 'GET', '/api/auth/me', u3.token)).status === 401, 'the revocation to reach the other node', 5_000)
  })
})

