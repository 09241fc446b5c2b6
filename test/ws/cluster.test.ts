/** Cluster mode: a client on node A sees the events of actors on node B (Redis fan-out). */
import { afterAll, describe, expect, test } from 'bun:test'
import { join } from 'node:path'
import { testDatabase, type TestDatabase } from '../support/db.ts'
import { service } from '../support/services.ts'
import { wsClient } from '../support/ws.ts'

const redisUrl = service('redis', 'test/ws/cluster.test.ts')

async function startNode(db: TestDatabase, nodeId: string, prefix: string): Promise<{ url: string; proc: Bun.Subprocess }> {
  const proc = Bun.spawn([process.execPath, join(import.meta.dir, 'cluster-node.ts')], {
    env: {
      ...process.env,
      NODE_ENV: 'test', PORT: '0', HOST: '127.0.0.1', LOG_LEVEL: 'warn', DATABASE_URL: db.url, REDIS_URL: redisUrl!, NODE_ID: nodeId, QUEUE_PREFIX: prefix, REDIS_PREFIX: `${prefix}:`,
      JWT_SECRET: 'cluster-test-'.padEnd(48, 'x'), ADMIN_PASSWORD: 'AdminPass123!', BCRYPT_ROUNDS: '4', CLUSTER_SHARDS: '16', CLUSTER_LEASE_TTL_MS: '2000',
      RATE_LIMIT_MAX_REQUESTS: '100000', AUTH_RATE_LIMIT_MAX_REQUESTS: '100000',
    },
    stdout: 'pipe',
    stderr: 'inherit',
  })
  const reader = proc.stdout.getReader()
  let text = ''
  const deadline = Date.now() + 30_000
  while (!/listening (\S+)/.test(text)) {
    if (Date.now() > deadline) throw new Error(`node ${nodeId} did not start: ${text}`)
    const { done, value } = await reader.read()
    if (done) throw new Error(`node ${nodeId} exited: ${text}`)
    text += new TextDecoder().decode(value)
  }
  reader.releaseLock()
  return { url: /listening (\S+)/.exec(text)![1]!, proc }
}

describe.if(Boolean(redisUrl))('cluster', () => {
  const procs: Bun.Subprocess[] = []
  let db: TestDatabase
  afterAll(async () => {
    for (const p of procs) p.kill('SIGTERM')
    await Promise.all(procs.map((p) => p.exited))
    await db?.drop()
  })

  test('events of actors on any node reach a socket on another node, in order', async () => {
    db = await testDatabase()
    const prefix = `test-${crypto.randomUUID()}`
    const a = await startNode(db, 'ws-node-a', prefix)
    procs.push(a.proc)
    const b = await startNode(db, 'ws-node-b', prefix)
    procs.push(b.proc)
    const login = async (url: string) =>
      ((await (await fetch(`${url}/api/auth/login`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ email: 'admin@quadrax.local', password: 'AdminPass123!' }) })).json()) as any).data
    const session = await login(a.url)
    const topic = `user:${session.user.id}`
    const client = await wsClient(a.url, session.token)
    client.send({ op: 'subscribe', topic, since: 0 })
    await client.next((m) => m.op === 'ack')
    // 20 beacons spread over the shards of both nodes, all asked through node B.
    for (let i = 0; i < 20; i++) {
      const r = await fetch(`${b.url}/test/emit`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ beacon: `beacon-${i}`, topic, count: 5, from: i * 5 }) })
      expect(r.status).toBe(200)
    }
    await client.next((m) => m.op === 'event' && m.seq === 100, 30_000)
    const seqs = client.messages.filter((m) => m.op === 'event').map((m) => m.seq)
    expect(seqs).toEqual(Array.from({ length: 100 }, (_, i) => i + 1))
    const cluster = await (await fetch(`${a.url}/api/admin/cluster`, { headers: { authorization: `Bearer ${session.token}` } })).json() as any
    expect(cluster.success).toBe(true)
    client.close()
  })
})
