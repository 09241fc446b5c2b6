/**
 * Assemble and start one server node: database (embedded when no DATABASE_URL), migrations,
 * first admin, Redis (when REDIS_URL), stores, auth, the HTTP app. `main.ts` calls this
 * with the environment; tests and benchmarks call it with their own config.
 */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { join, resolve } from 'node:path'
import type { Config } from './config.ts'
import { createLogger, type Logger } from './core/logger.ts'
import { PG, pgCode } from './core/errors.ts'
import { Metrics } from './core/metrics.ts'
import { createApp, CORE_READS, type RouteModule } from './http/app.ts'
import { cachedReadRoutes, mergeRoutes } from './http/native.ts'
import { AuthService } from './auth/service.ts'
import { SessionRegistry } from './auth/sessions.ts'
import type { AppDeps, HealthProbe, ResolvedConfig } from './http/context.ts'
import { ResponseCache } from './http/plugins/cache.ts'
import { connect, type Sql } from './store/db.ts'
import { startEmbedded, type EmbeddedDatabase } from './store/embedded.ts'
import { migrate } from './store/migrate.ts'
import { MemoryRateLimitStore, RedisRateLimitStore } from './store/rate-limit.ts'
import { createRedis, type Redis } from './store/redis.ts'
import { MemoryCacheStore, RedisCacheStore } from './store/response-cache.ts'
import * as users from './store/users.ts'
import { readOutbox } from './store/outbox.ts'
import { createActorSystem, type RuntimeConfig } from './actors/runtime/index.ts'
import { FEATURES, type Feature, type FeatureFactory } from './features.ts'
import { Hub } from './ws/hub.ts'
import { wsRoutes } from './ws/routes.ts'
import { MemoryTicketStore, RedisTicketStore } from './auth/tickets.ts'

export interface RunningServer {
  url: string
  port: number
  deps: AppDeps
  app: ReturnType<typeof createApp>
  /** Stop accepting, finish in-flight requests, close pools (bounded by SHUTDOWN_TIMEOUT_MS). */
  stop(): Promise<void>
}

export interface StartOptions {
  /** Extra route modules (tests). */
  modules?: RouteModule[]
  /** Features to install instead of FEATURES (tests may narrow them down). */
  features?: FeatureFactory[]
  /** Actor runtime settings beyond what the config sets (tests shorten timeouts). */
  actorConfig?: Partial<RuntimeConfig>
  /** Prefix of this node's Redis keys and BullMQ queues (tests use a unique one). */
  queuePrefix?: string
  logger?: Logger
  /** Print the first-boot banner (admin password, Swagger URL) on stdout. */
  banner?: boolean
  /** Extra work to do when stopping, before pools close (e.g. the actor system). */
  onStop?: Array<() => Promise<void>>
  refreshReuseGraceMs?: number
}

/** JWT_SECRET, or (outside production) one generated once and kept in DATA_DIR. */
export function resolveJwtSecret(config: Readonly<Config>): string {
  if (config.jwt.secret) return config.jwt.secret
  if (config.isProduction) throw new Error('JWT_SECRET is required in production')
  const dir = resolve(config.dataDir)
  const file = join(dir, 'jwt-secret')
  if (existsSync(file)) {
    const s = readFileSync(file, 'utf8').trim()
    if (s.length >= 32) return s
  }
  mkdirSync(dir, { recursive: true })
  const secret = Buffer.from(crypto.getRandomValues(new Uint8Array(48))).toString('base64url')
  writeFileSync(file, secret + '\n', { mode: 0o600 })
  return secret
}

/** Create the first admin when there is none. Returns the generated password, if one was generated. */
export async function ensureAdmin(sql: Sql, auth: AuthService, config: Readonly<Config>): Promise<{ email: string; password?: string } | undefined> {
  if ((await users.countAdmins(sql)) > 0) return undefined
  const generated = config.admin.password ? undefined : `Qx-${Buffer.from(crypto.getRandomValues(new Uint8Array(15))).toString('base64url')}9!`
  const password = config.admin.password ?? generated!
  const existing = await users.findSecretByEmail(sql, config.admin.email)
  if (existing) {
    await users.update(sql, existing.id, { role: 'ADMIN', isActive: true })
    return { email: config.admin.email }
  }
  try {
    await users.insert(sql, { email: config.admin.email, firstName: 'Admin', lastName: 'User', role: 'ADMIN', passwordHash: await auth.hashPassword(password) })
  } catch (err) {
    // Several nodes booting at once: another one created the admin first.
    if (pgCode(err) === PG.uniqueViolation) return undefined
    throw err
  }
  return { email: config.admin.email, password: generated }
}

async function dockerPing(dockerHost: string): Promise<void> {
  const u = new URL(dockerHost)
  const res =
    u.protocol === 'unix:'
      ? await fetch('http://docker/_ping', { unix: u.pathname } as RequestInit)
      : await fetch(`${u.protocol === 'tcp:' ? 'http:' : u.protocol}//${u.host}/_ping`)
  if (!res.ok) throw new Error(`engine answered ${res.status}`)
}

export function dockerHostOf(config: Readonly<Config>): string | undefined {
  if (config.dockerHost) return config.dockerHost
  return existsSync('/var/run/docker.sock') ? 'unix:///var/run/docker.sock' : undefined
}

export async function startServer(config: Readonly<Config>, opts: StartOptions = {}): Promise<RunningServer> {
  const logger = opts.logger ?? createLogger(config.logLevel)
  const secret = resolveJwtSecret(config)
  const resolved = { ...config, jwt: { ...config.jwt, secret } } as ResolvedConfig

  let embedded: EmbeddedDatabase | undefined
  let databaseUrl = config.databaseUrl
  if (!databaseUrl) {
    const t0 = performance.now()
    embedded = await startEmbedded({ dir: join(resolve(config.dataDir), 'postgres'), onLog: (m) => logger.debug({ pg: String(m) }, 'embedded postgres') })
    databaseUrl = embedded.url
    logger.info({ ms: Math.round(performance.now() - t0), dir: join(config.dataDir, 'postgres') }, 'embedded PostgreSQL started')
  }
  const sql = connect(databaseUrl, { max: config.databasePoolMax, name: 'quadrax' })
  const { applied } = await migrate(sql)
  if (applied.length) logger.info({ applied }, 'migrations applied')

  let redis: Redis | undefined
  let redisSub: Redis | undefined
  if (config.redisUrl) {
    redis = createRedis(config.redisUrl)
    redisSub = createRedis(config.redisUrl)
    await redis.ping()
  }

  const metrics = new Metrics()
  const prefix = config.redisPrefix
  const registry = new SessionRegistry(sql, { logger, redis: redis && redisSub ? { pub: redis, sub: redisSub, prefix } : undefined })
  await registry.start()
  const auth = new AuthService(sql, resolved, registry, { refreshReuseGraceMs: opts.refreshReuseGraceMs })
  const cache = new ResponseCache(redis ? new RedisCacheStore(redis, `${prefix}cache:`) : new MemoryCacheStore(), metrics, config.cacheTtlSeconds)
  const rateLimits = redis ? new RedisRateLimitStore(redis, `${prefix}rl:`) : new MemoryRateLimitStore()
  const dockerHost = dockerHostOf(config)
  const probes: HealthProbe[] = [
    { name: 'database', check: async () => void (await sql`select 1`) },
    { name: 'redis', check: redis ? async () => void (await redis!.ping()) : undefined },
    { name: 'docker', check: dockerHost ? () => dockerPing(dockerHost) : undefined },
  ]
  const actors = createActorSystem({
    sql,
    redis: config.redisUrl,
    logger,
    metrics,
    queuePrefix: opts.queuePrefix ?? prefix.replace(/:+$/, ''),
    config: { nodeId: config.cluster.nodeId, shards: config.cluster.shards, leaseTtlMs: config.cluster.leaseTtlMs, ...opts.actorConfig },
  })
  const hub = new Hub(
    {
      subscribe: (listener) => actors.subscribe(listener),
      read: (topic, after, limit) => readOutbox(sql, topic, after, limit),
      head: async (topic) => {
        const [row] = await sql<{ seq: number }[]>`select seq from actor_outbox_topics where topic = ${topic}`
        return row?.seq ?? 0
      },
    },
    { maxReplay: config.ws.maxReplay, maxBufferedBytes: config.ws.maxBufferedBytes, logger },
  )
  registry.onRevoked((ids) => hub.closeSessions(ids))
  const tickets = redis ? new RedisTicketStore(redis, `${prefix}wsticket:`) : new MemoryTicketStore()
  const deps: AppDeps = { config: resolved, sql, redis, logger, metrics, auth, rateLimits, cache, probes, actors, hub, tickets }

  const features: Feature[] = []
  for (const factory of opts.features ?? FEATURES) features.push(await factory(deps))
  for (const f of features) {
    for (const kind of f.actors ?? []) actors.register(kind)
    for (const [kind, fn] of Object.entries(f.topics ?? {})) hub.authorize(kind, fn)
    probes.push(...(f.probes ?? []))
  }
  await actors.start()

  const admin = await ensureAdmin(sql, auth, config)
  const app = createApp(deps, {
    modules: [wsRoutes(deps, hub, tickets), ...features.flatMap((f) => f.routes ?? []), ...(opts.modules ?? [])],
    uploadPaths: features.flatMap((f) => f.uploadPaths ?? []),
  })
  const fallback = (request: Request) => app.fetch(request)
  const nativeRoutes = mergeRoutes(
    cachedReadRoutes(deps, [...CORE_READS, ...features.flatMap((f) => f.cachedReads ?? [])], fallback),
    ...features.map((f) => f.nativeRoutes?.({ fetch: fallback }) ?? {}),
  )
  // Elysia merges these over its own routes on Bun's router when it listens.
  if (Object.keys(nativeRoutes).length) app.config.serve = { ...app.config.serve, routes: nativeRoutes } as typeof app.config.serve
  app.listen({ port: config.port, hostname: config.host, maxRequestBodySize: Math.max(config.maxFileSize + 1024 * 1024, 2 * 1024 * 1024) })
  const server = app.server!
  hub.start((topic, message) => void server.publish(topic, message))
  for (const f of features) await f.start?.()
  const host = config.host === '0.0.0.0' ? 'localhost' : config.host
  const url = `http://${host}:${server.port}`

  if (opts.banner) {
    if (admin?.password) {
      console.log(`\nFirst admin account created: ${admin.email}\nGenerated password (shown once, change it after logging in): ${admin.password}\n`)
    } else if (admin) {
      console.log(`\nFirst admin account: ${admin.email} (password from ADMIN_PASSWORD)\n`)
    }
    console.log(`QUADRAX ML API listening on ${url}\nSwagger UI: ${url}/swagger   OpenAPI: ${url}/swagger/json\n`)
  }
  logger.info({ url, embedded: Boolean(embedded), redis: Boolean(redis) }, 'server started')

  let stopping: Promise<void> | undefined
  const stop = () =>
    (stopping ??= (async () => {
      const deadline = new Promise<void>((r) => setTimeout(r, config.shutdownTimeoutMs).unref?.())
      const graceful = (async () => {
        for (const f of [...features].reverse()) await f.stop?.().catch((err) => logger.error({ err, feature: f.name }, 'feature stop failed'))
        hub.stop()
        await server.stop(false) // stop accepting; resolves when in-flight requests are done
        for (const f of opts.onStop ?? []) await f()
        await actors.stop() // finish turns in progress, passivate, release leases
      })()
      await Promise.race([graceful, deadline])
      server.stop(true)
      await sql.end({ timeout: 5 })
      redis?.disconnect()
      redisSub?.disconnect()
      await embedded?.stop()
      logger.info('server stopped')
    })())

  return { url, port: server.port!, deps, app, stop }
}
