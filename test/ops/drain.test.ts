/**
 * Graceful drain on SIGTERM (issue 18), on `src/main.ts` in its own process as `npm start`
 * runs it: readiness (/health) answers 503 `draining` at once while the node goes on serving
 * for SHUTDOWN_DRAIN_DELAY_MS; liveness (/health/live) stays 200; new sockets are refused
 * with 503; a request in flight finishes; live sockets close with 1012; the process exits 0.
 */
import { afterAll, expect, test } from 'bun:test'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { testDatabase } from '../support/db.ts'
import { until } from '../support/until.ts'
import { wsClient } from '../support/ws.ts'

const ROOT = join(import.meta.dir, '..', '..')
const dirs: string[] = []
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })))

async function freePort(): Promise<number> {
  const s = Bun.listen({ hostname: '127.0.0.1', port: 0, socket: { data() {} } })
  const p = s.port
  s.stop(true)
  return p
}

test('SIGTERM: readiness 503 at once, liveness 200, still serving during the delay, in-flight request finishes, sockets closed 1012, exit 0', async () => {
  await using db = await testDatabase({ migrate: false })
  const dir = mkdtempSync(join(tmpdir(), 'qdrain-'))
  dirs.push(dir)
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const env: Record<string, string | undefined> = {
    ...process.env,
    NODE_ENV: 'test',
    HOST: '127.0.0.1',
    PORT: String(port),
    DATABASE_URL: db.url,
    DATA_DIR: dir,
    JWT_SECRET: 'd'.repeat(40),
    ADMIN_PASSWORD: 'AdminPass123!',
    BCRYPT_ROUNDS: '4',
    LOG_LEVEL: 'warn',
    REDIS_PREFIX: `test-${crypto.randomUUID().slice(0, 8)}:`,
    DOCKER_HOST: undefined,
    // Longer than any check below takes: the test cuts it short with a second SIGTERM.
    SHUTDOWN_DRAIN_DELAY_MS: '60000',
    SHUTDOWN_TIMEOUT_MS: '20000',
  }
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k]
  const proc = Bun.spawn([process.execPath, 'src/main.ts'], { cwd: ROOT, env: env as Record<string, string>, stdout: 'ignore', stderr: 'inherit' })
  try {
    await until(async () => (await fetch(`${base}/health`).catch(() => undefined))?.status === 200, 'the server to be ready', 30_000, 50)
    const login = await fetch(`${base}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'admin@quadrax.local', password: 'AdminPass123!' }) })
    const { data } = (await login.json()) as { data: { token: string; user: { id: string } } }
    const auth = { authorization: `Bearer ${data.token}` }

    const live = await wsClient(base, data.token)
    live.send({ op: 'subscribe', topic: `user:${data.user.id}`, since: 0, id: 's' })
    await live.next((m) => m.op === 'ack' && m.id === 's')

    // A request in flight: its body arrives in two parts, the second after the SIGTERM.
    let sendRest!: () => void
    const body = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new TextEncoder().encode('{"firstName":'))
        sendRest = () => {
          c.enqueue(new TextEncoder().encode('"Drained"}'))
          c.close()
        }
      },
    })
    const inFlight = fetch(`${base}/api/users/${data.user.id}`, { method: 'PATCH', headers: { ...auth, 'content-type': 'application/json' }, body, duplex: 'half' } as RequestInit)

    proc.kill('SIGTERM')
    const health = await until(
      async () => {
        const r = await fetch(`${base}/health`)
        return r.status === 503 ? ((await r.json()) as { status: string }) : undefined
      },
      'readiness to answer 503',
      10_000,
      20,
    )
    expect(health.status).toBe('draining')
    const liveness = await fetch(`${base}/health/live`)
    expect(liveness.status).toBe(200)
    expect(await liveness.json()).toMatchObject({ status: 'alive' })
    // Still serving: the balancer may send a few more before it sees the 503.
    const me = await fetch(`${base}/api/auth/me`, { headers: auth })
    expect(me.status).toBe(200)
    // A new socket goes to another node: refused here.
    const ticket = await fetch(`${base}/api/ws/ticket`, { method: 'POST', headers: auth })
    expect(ticket.status).toBe(200)
    const { data: issued } = (await ticket.json()) as { data: { ticket: string } }
    const upgrade = await fetch(`${base}/ws?ticket=${issued.ticket}`, { headers: { connection: 'Upgrade', upgrade: 'websocket', 'sec-websocket-version': '13', 'sec-websocket-key': btoa('0123456789abcdef') } })
    expect(upgrade.status).toBe(503)
    expect(((await upgrade.json()) as { error: string }).error).toContain('stopping')
    // The socket that was open stays open while the node drains.
    expect(live.ws.readyState).toBe(WebSocket.OPEN)

    // A second SIGTERM ends the delay: the listener closes, the socket gets 1012 (service
    // restart: resume elsewhere), and the request in flight is still answered.
    proc.kill('SIGTERM')
    expect(await live.closed).toEqual({ code: 1012, reason: 'server shutting down' })
    await until(async () => (await fetch(`${base}/health/live`).catch(() => undefined)) === undefined, 'the listener to close', 10_000, 20)
    expect(proc.exitCode).toBeNull()
    sendRest()
    const done = await inFlight
    expect(done.status).toBe(200)
    expect(((await done.json()) as { data: { firstName: string } }).data.firstName).toBe('Drained')
    expect(await proc.exited).toBe(0)
  } finally {
    if (proc.exitCode === null) proc.kill('SIGTERM')
  }
}, 60_000)
