/**
 * One runtime node for the cluster tests: a real process hosting the counter kind in cluster
 * mode. It takes asks over a small HTTP control channel on a port it prints (as JSON) on its
 * first stdout line, so a test can ask through any node.
 *
 *   DATABASE_URL, REDIS_URL (required), NODE_ID, CLUSTER_SHARDS, CLUSTER_LEASE_TTL_MS,
 *   ACTOR_PREFIX (Redis key / queue prefix), LOG_LEVEL
 *
 *   POST /ask    {kind, id, message, messageId?, timeout?} → {ok: true, reply} | {ok: false, error}
 *   GET  /status → clusterStatus() + {activeTurns, fencedBatches, liveActors}
 *   SIGTERM      → graceful stop, exit 0
 */
import { createLogger } from '../../src/core/logger.ts'
import { AppError } from '../../src/core/errors.ts'
import { connect } from '../../src/store/db.ts'
import { createActorSystem } from '../../src/actors/runtime/index.ts'
import { counter } from './counter.ts'

const env = process.env
if (!env.DATABASE_URL || !env.REDIS_URL) throw new Error('node.ts needs DATABASE_URL and REDIS_URL')
const nodeId = env.NODE_ID ?? `node-${process.pid}`
const logger = createLogger(env.LOG_LEVEL ?? 'warn', { node: nodeId })
const sql = connect(env.DATABASE_URL, { max: 6, name: nodeId })
const system = createActorSystem({
  sql,
  redis: env.REDIS_URL,
  logger,
  queuePrefix: env.ACTOR_PREFIX ?? 'quadrax-test',
  config: {
    nodeId,
    shards: Number(env.CLUSTER_SHARDS ?? 16),
    leaseTtlMs: Number(env.CLUSTER_LEASE_TTL_MS ?? 1000),
    reminderPollMs: 200,
    commitConcurrency: 3,
  },
})
system.register(counter)
await system.start()

interface AskBody {
  kind: string
  id: string
  message: unknown
  messageId?: string
  timeout?: number
}

const server = Bun.serve({
  hostname: '127.0.0.1',
  port: 0,
  async fetch(req) {
    const path = new URL(req.url).pathname
    if (req.method === 'POST' && path === '/ask') {
      const b = (await req.json()) as AskBody
      try {
        const reply = await system.ask(b.kind, b.id, b.message, { messageId: b.messageId, timeout: b.timeout })
        return Response.json({ ok: true, reply })
      } catch (err) {
        const e = err as Error
        return Response.json({ ok: false, error: { name: e.name, message: e.message, code: err instanceof AppError ? err.code : undefined } })
      }
    }
    if (path === '/status') {
      const fenced = (await system.metrics.fencedBatches.get()).values[0]?.value ?? 0
      return Response.json({ ...(await system.clusterStatus()), activeTurns: system.activeTurns, fencedBatches: fenced, local: system.liveActors() })
    }
    return new Response('not found', { status: 404 })
  },
})

process.on('SIGTERM', () => {
  void (async () => {
    await system.stop()
    server.stop(true)
    await sql.end({ timeout: 5 })
    process.exit(0)
  })()
})

console.log(JSON.stringify({ port: server.port, nodeId }))
