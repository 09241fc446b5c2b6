/**
 * Configuration: read the environment once, validate it with TypeBox, freeze it.
 *
 * Bun loads `.env`, `.env.<NODE_ENV>` (`.env.development`, `.env.production`, `.env.test`)
 * and `.env.local` by itself before any code runs, in that order of precedence
 * (https://bun.sh/docs/runtime/env), which is exactly how the guide describes its
 * `.env` files; real environment variables win over all of them.
 */
import { resolve } from 'node:path'
import type { TSchema } from '@sinclair/typebox'
import { Value } from '@sinclair/typebox/value'
import { EnvSchema, type Env } from './config-env.ts'


export interface Config {
  port: number
  host: string
  /** SO_REUSEPORT on the listener: several processes may share PORT (off: a busy port stops the boot). */
  reusePort: boolean
  /**
   * A Unix socket path to listen on instead of HOST:PORT (UNIX_SOCKET), for a balancer on the
   * same host: scripts/cluster.ts takes a node out of nginx's upstream by unlinking a link to it.
   */
  unixSocket: string | undefined
  env: Env['NODE_ENV']
  isProduction: boolean
  frontendUrl: string
  jwt: { secret: string | undefined; accessTtlSeconds: number; refreshTtlSeconds: number }
  bcryptRounds: number
  databaseUrl: string | undefined
  databasePoolMax: number
  dataDir: string
  redisUrl: string | undefined
  /** Prefix of every Redis key this deployment writes (several deployments may share a Redis). */
  redisPrefix: string
  dockerHost: string | undefined
  maxFileSize: number
  uploadDir: string
  /** DataKits: storage quota, sandboxed query limits, DuckDB resources (0 threads = auto). */
  datakits: {
    storageQuotaBytes: number
    /** An organisation's storage ceiling when a platform admin set none (ORG_DEFAULT_STORAGE_BYTES). */
    orgStorageQuotaBytes: number
    queryTimeoutMs: number
    queryMaxRows: number
    duckdbThreads: number
    duckdbMemoryLimit: string
    profileConcurrency: number
    queryConcurrency: number
    /** Fairness: slots one user may hold, and interactive operations one user may have waiting (more: 429). */
    queryConcurrencyPerUser: number
    queryQueuePerUser: number
    profileConcurrencyPerUser: number
    /** Resident memory of one query / profiling worker process (MiB); bytes of a query's JSON rows and of its export file. */
    queryMemoryMb: number
    profileMemoryMb: number
    queryMaxBytes: number
    /** Bytes of JSON rows one user's previews and queries may answer with a second (past queryMaxBytes at once, the next waits). */
    queryBytesPerSecond: number
    /** Bytes a second one user's DataKit downloads (files, exports) are streamed at, together. */
    downloadBytesPerSecond: number
    exportMaxBytes: number
    profileTimeoutMs: number
    /** What an uploaded dataset may be: decompressed bytes (gzip), rows, columns. */
    maxDecompressedBytes: number
    maxRows: number
    maxColumns: number
  }
  openai: { apiKey: string | undefined; baseUrl: string | undefined; model: string; maxRetries: number; timeoutMs: number; idleTimeoutMs: number }
  /** The AI assistant: prompt budget, reply cap, per-user daily token budget (0 = unlimited). */
  ai: { contextTokens: number; maxReplyTokens: number; dailyTokenBudget: number }
  /** E-mail: off while `host` is undefined (SMTP_HOST unset). `secure`: TLS from the first byte (else STARTTLS when offered). */
  smtp: { host: string | undefined; port: number; user: string | undefined; pass: string | undefined; from: string; secure: boolean }
  /** Mail delivery: waits between attempts (doubling from base, at most max), attempts per job, when a failing mail is given up, how often the sweep looks for mail and notifications a node missed. */
  mail: { retryBaseMs: number; retryMaxMs: number; attemptsPerJob: number; giveUpMs: number; sweepIntervalMs: number }
  /** How long an e-mailed password-reset link works; requests to forgot- and reset-password per client source. */
  passwordReset: { ttlMinutes: number; rateLimit: { windowMs: number; max: number } }
  /** How long an organisation's invitation link works (hours). */
  orgInvitations: { ttlHours: number }
  logLevel: Env['LOG_LEVEL']
  sentryDsn: string | undefined
  /** Bearer token /metrics requires; undefined: /metrics is open (scraped on a private network). */
  metricsToken: string | undefined
  rateLimit: { windowMs: number; max: number }
  /** Requests per client IP (or IPv6 /64) to each credential endpoint. */
  authRateLimit: { login: { windowMs: number; max: number }; register: { windowMs: number; max: number }; refresh: { windowMs: number; max: number } }
  /**
   * Failed-login throttling (the rules: src/auth/login-throttle.ts). `pair`: one account from
   * one source, with exponential backoff; `source`: one source across accounts; `account`: one
   * account from every source, which slows sources that never signed in to it.
   */
  login: {
    pair: { free: number; baseMs: number; maxMs: number; windowMs: number }
    source: { maxFailures: number; windowMs: number }
    account: { maxFailures: number; windowMs: number; slowIntervalMs: number; trustedSourceTtlMs: number }
  }
  trustProxy: boolean
  /** The audit log: recorded at all (off only for benchmarks), and days events are kept (0: forever). */
  audit: { enabled: boolean; retentionDays: number }
  corsOrigins: readonly string[]
  cacheTtlSeconds: number
  shutdownTimeoutMs: number
  /**
   * On SIGTERM, how long the server goes on serving while /health (readiness) answers 503, so a
   * balancer stops sending before the listener closes (SHUTDOWN_DRAIN_DELAY_MS).
   */
  drainDelayMs: number
  admin: { email: string; password: string | undefined }
  cluster: { nodeId: string | undefined; shards: number; leaseTtlMs: number }
  /** Workstations: image allow-list (first = default), idle culling (0 s = off; CPU above the threshold counts as activity). */
  workstations: { images: readonly string[]; idleTimeoutSeconds: number; idleCpuPercent: number }
  /**
   * The Python data-science image (undefined: the tag scripts/python-image.sh builds, computed
   * at start) and the image lists it joins when the engine has it: WORKSTATION_IMAGES and
   * TRAINING_IMAGES each when left unset (a list given explicitly is taken as given).
   */
  pythonImage: { image: string | undefined; joinWorkstations: boolean; joinTraining: boolean }
  /** VMs: OS image allow-list (first = default) and the engine runtime they run under. */
  vms: { images: readonly string[]; runtime: string }
  /** Default per-user compute quota over running workstations and VMs (admins override per user). */
  quota: { running: number; cpu: number; memoryMb: number }
  /** An organisation's compute ceiling over its members' org workstations and VMs when a platform admin set none. */
  orgQuota: { running: number; cpu: number; memoryMb: number }
  pipelines: { stepConcurrency: number; scheduleMinIntervalSeconds: number }
  /** CodeSheets: cells per sheet (and executions one sheet may have waiting), bytes of one cell's source and of its outputs, of an imported .ipynb, and how long a kernel may take to start. */
  codesheets: { maxCells: number; maxSourceBytes: number; maxOutputBytes: number; maxImportBytes: number; kernelStartTimeoutMs: number }
  terminal: { reattachGraceMs: number }
  /** Models: artifact directory, container-run image allow-list, run timeouts (default, max), runs executing at once per node, queued+running runs per user, rows a built-in run may read. */
  models: { dir: string; trainingImages: readonly string[]; defaultTimeoutSeconds: number; maxTimeoutSeconds: number; concurrency: number; maxActiveRunsPerUser: number; maxRows: number; concurrencyPerUser: number; logMaxBytes: number; outputBytesPerSecond: number; outputLinesPerSecond: number }
  /** Container output read into the server: bytes per line (longer ones come in pieces), per GET …/logs, per WS log follow. */
  containerLogs: { lineMaxBytes: number; tailMaxBytes: number; followMaxBytes: number }
  ws: { maxPayloadBytes: number; maxConnectionsPerUser: number; messagesPerSecond: number; idleTimeoutSeconds: number; maxBufferedBytes: number; maxReplay: number; ticketTtlMs: number }
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

const UNITS: Record<string, number> = { B: 1, KB: 1024, MB: 1024 ** 2, GB: 1024 ** 3, TB: 1024 ** 4 }

/** "100MB" → 104857600. Bare numbers are bytes. */
export function parseSize(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB)?\s*$/i.exec(text)
  if (!m) throw new ConfigError(`not a size: ${text}`)
  return Math.floor(Number(m[1]) * UNITS[(m[2] ?? 'B').toUpperCase()]!)
}

/** "a:1, b:2" → ["a:1", "b:2"]; at least one image, each a plain image reference. */
function imageList(name: string, csv: string): string[] {
  const images = [...new Set(csv.split(',').map((s) => s.trim()).filter(Boolean))]
  if (images.length === 0) throw new ConfigError(`${name} is empty: expected a comma-separated list of images, the first being the default`)
  for (const i of images) {
    if (!/^[a-z0-9][a-z0-9._\/:@-]{0,254}$/.test(i)) throw new ConfigError(`${name} contains ${JSON.stringify(i)}: expected image references like registry/name:tag`)
  }
  return images
}

/** One plain image reference. */
function onlyImage(name: string, text: string): string {
  const [image, ...more] = imageList(name, text)
  if (more.length) throw new ConfigError(`${name}=${JSON.stringify(text)} is invalid: expected one image reference`)
  return image!
}

function describe(schema: TSchema): string {
  if (schema.anyOf) return `one of ${schema.anyOf.map((s: TSchema) => JSON.stringify(s.const)).join(', ')}`
  if (schema.type === 'integer') {
    const range = [schema.minimum !== undefined && `>= ${schema.minimum}`, schema.maximum !== undefined && `<= ${schema.maximum}`].filter(Boolean)
    return `an integer${range.length ? ' ' + range.join(' and ') : ''}`
  }
  if (schema.type === 'boolean') return 'true or false'
  if (schema.pattern) return `a value matching ${schema.pattern}`
  return `a ${schema.type}`
}

/** The configuration as the server runs with it: the JWT secret resolved (see resolveJwtSecret in server.ts). */
export type ResolvedConfig = Readonly<Config> & { jwt: Config['jwt'] & { secret: string } }

/**
 * Validate `env` (default: process.env) and return a frozen Config.
 * A bad value throws a ConfigError naming the variable and what was expected.
 */
export function loadConfig(source: Record<string, string | undefined> = process.env): Readonly<Config> {
  const raw: Record<string, unknown> = {}
  for (const key of Object.keys(EnvSchema.properties)) {
    const v = source[key]
    if (v !== undefined && v !== '') raw[key] = v
  }
  const withDefaults = Value.Default(EnvSchema, raw)
  const converted = Value.Convert(EnvSchema, withDefaults) as Record<string, unknown>
  for (const [key, schema] of Object.entries(EnvSchema.properties) as [string, TSchema][]) {
    const v = converted[key]
    if (v === undefined) continue
    if (!Value.Check(schema, v)) {
      throw new ConfigError(`${key}=${JSON.stringify(raw[key])} is invalid: expected ${describe(schema)}`)
    }
  }
  const e = converted as Env
  const isProduction = e.NODE_ENV === 'production'
  if (e.JWT_SECRET !== undefined && e.JWT_SECRET.length < 32) {
    throw new ConfigError('JWT_SECRET is too short: expected at least 32 characters')
  }
  if (isProduction && !e.JWT_SECRET) {
    throw new ConfigError('JWT_SECRET is required when NODE_ENV=production: expected at least 32 characters')
  }
  let frontendOrigin: string
  try {
    const u = new URL(e.FRONTEND_URL!)
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('not http(s)')
    frontendOrigin = u.origin
  } catch {
    throw new ConfigError(`FRONTEND_URL=${JSON.stringify(e.FRONTEND_URL)} is invalid: expected the web app's http(s) URL, like https://app.example.com`)
  }
  // The web app may call the API (CORS) and open live sessions (the WebSocket Origin check)
  // unless CORS_ORIGIN says otherwise.
  const corsOrigins = (e.CORS_ORIGIN ?? frontendOrigin).split(',').map((s) => s.trim()).filter(Boolean)
  for (const o of corsOrigins) {
    if (o !== '*' && !/^https?:\/\/[^/\s]+$/.test(o)) {
      throw new ConfigError(`CORS_ORIGIN contains ${JSON.stringify(o)}: expected a comma-separated list of origins like https://app.example.com (or *)`)
    }
  }
  if (e.METRICS_TOKEN !== undefined && e.METRICS_TOKEN !== '' && e.METRICS_TOKEN.length < 16) {
    throw new ConfigError('METRICS_TOKEN is too short: expected at least 16 characters (or unset, for an open /metrics)')
  }
  if (e.LOGIN_FAILURE_WINDOW_MS < e.LOGIN_LOCKOUT_MS) {
    // A pair's failures would be forgotten before its longest wait is over.
    throw new ConfigError(`LOGIN_FAILURE_WINDOW_MS=${e.LOGIN_FAILURE_WINDOW_MS} is invalid: expected at least LOGIN_LOCKOUT_MS (${e.LOGIN_LOCKOUT_MS})`)
  }
  if (e.ADMIN_PASSWORD !== undefined && e.ADMIN_PASSWORD.length < 8) {
    throw new ConfigError('ADMIN_PASSWORD is too short: expected at least 8 characters')
  }
  return Object.freeze({
    port: e.PORT,
    host: e.HOST!,
    reusePort: e.REUSE_PORT,
    unixSocket: e.UNIX_SOCKET ? resolve(e.UNIX_SOCKET) : undefined,
    env: e.NODE_ENV,
    isProduction,
    frontendUrl: e.FRONTEND_URL!,
    jwt: Object.freeze({ secret: e.JWT_SECRET, accessTtlSeconds: e.JWT_ACCESS_TTL_SECONDS, refreshTtlSeconds: e.JWT_REFRESH_TTL_SECONDS }),
    bcryptRounds: e.BCRYPT_ROUNDS,
    databaseUrl: e.DATABASE_URL,
    databasePoolMax: e.DATABASE_POOL_MAX,
    // Folders are absolute from here on: DataKit workers and containers run elsewhere (their
    // own working directory, a bind mount), where a relative path means another folder.
    dataDir: resolve(e.DATA_DIR!),
    redisUrl: e.REDIS_URL,
    redisPrefix: e.REDIS_PREFIX,
    dockerHost: e.DOCKER_HOST,
    maxFileSize: parseSize(e.MAX_FILE_SIZE),
    uploadDir: resolve(e.UPLOAD_DIR!),
    datakits: Object.freeze({
      storageQuotaBytes: parseSize(e.USER_STORAGE_QUOTA_BYTES),
      orgStorageQuotaBytes: parseSize(e.ORG_DEFAULT_STORAGE_BYTES),
      queryTimeoutMs: e.DATAKIT_QUERY_TIMEOUT_MS,
      queryMaxRows: e.DATAKIT_QUERY_MAX_ROWS,
      duckdbThreads: e.DATAKIT_DUCKDB_THREADS,
      duckdbMemoryLimit: e.DATAKIT_DUCKDB_MEMORY_LIMIT.replace(/\s+/g, ''),
      profileConcurrency: e.DATAKIT_PROFILE_CONCURRENCY,
      queryConcurrency: e.DATAKIT_QUERY_CONCURRENCY,
      queryConcurrencyPerUser: e.DATAKIT_QUERY_CONCURRENCY_PER_USER,
      queryQueuePerUser: e.DATAKIT_QUERY_QUEUE_PER_USER,
      profileConcurrencyPerUser: e.DATAKIT_PROFILE_CONCURRENCY_PER_USER,
      queryMemoryMb: e.DATAKIT_QUERY_MEMORY_MB,
      profileMemoryMb: e.DATAKIT_PROFILE_MEMORY_MB,
      queryMaxBytes: parseSize(e.DATAKIT_QUERY_MAX_BYTES),
      queryBytesPerSecond: e.DATAKIT_QUERY_BYTES_PER_SECOND,
      downloadBytesPerSecond: e.DATAKIT_DOWNLOAD_BYTES_PER_SECOND,
      exportMaxBytes: parseSize(e.DATAKIT_EXPORT_MAX_BYTES),
      profileTimeoutMs: e.DATAKIT_PROFILE_TIMEOUT_MS,
      maxDecompressedBytes: parseSize(e.DATAKIT_MAX_DECOMPRESSED_BYTES),
      maxRows: e.DATAKIT_MAX_ROWS,
      maxColumns: e.DATAKIT_MAX_COLUMNS,
    }),
    openai: Object.freeze({
      apiKey: e.OPENAI_API_KEY,
      baseUrl: e.OPENAI_BASE_URL,
      model: e.OPENAI_MODEL!,
      maxRetries: e.OPENAI_MAX_RETRIES,
      timeoutMs: e.OPENAI_TIMEOUT_MS,
      idleTimeoutMs: e.OPENAI_IDLE_TIMEOUT_MS,
    }),
    ai: Object.freeze({ contextTokens: e.AI_CONTEXT_TOKENS, maxReplyTokens: e.AI_MAX_REPLY_TOKENS, dailyTokenBudget: e.AI_DAILY_TOKEN_BUDGET }),
    smtp: Object.freeze({ host: e.SMTP_HOST, port: e.SMTP_PORT, user: e.SMTP_USER, pass: e.SMTP_PASS, from: e.SMTP_FROM!, secure: e.SMTP_SECURE }),
    mail: Object.freeze({
      retryBaseMs: e.MAIL_RETRY_BASE_MS,
      retryMaxMs: Math.max(e.MAIL_RETRY_MAX_MS, e.MAIL_RETRY_BASE_MS),
      attemptsPerJob: e.MAIL_RETRY_ATTEMPTS,
      giveUpMs: e.MAIL_GIVE_UP_HOURS * 3_600_000,
      sweepIntervalMs: e.MAIL_SWEEP_INTERVAL_MS,
    }),
    passwordReset: Object.freeze({
      ttlMinutes: e.PASSWORD_RESET_TTL_MINUTES,
      rateLimit: Object.freeze({
        windowMs: e.AUTH_PASSWORD_RESET_RATE_LIMIT_WINDOW_MS ?? e.AUTH_RATE_LIMIT_WINDOW_MS,
        max: e.AUTH_PASSWORD_RESET_RATE_LIMIT_MAX_REQUESTS ?? e.AUTH_RATE_LIMIT_MAX_REQUESTS,
      }),
    }),
    orgInvitations: Object.freeze({ ttlHours: e.ORG_INVITATION_TTL_HOURS }),
    logLevel: e.LOG_LEVEL,
    sentryDsn: e.SENTRY_DSN,
    metricsToken: e.METRICS_TOKEN || undefined,
    rateLimit: Object.freeze({ windowMs: e.RATE_LIMIT_WINDOW_MS, max: e.RATE_LIMIT_MAX_REQUESTS }),
    authRateLimit: Object.freeze({
      login: Object.freeze({ windowMs: e.AUTH_LOGIN_RATE_LIMIT_WINDOW_MS ?? e.AUTH_RATE_LIMIT_WINDOW_MS, max: e.AUTH_LOGIN_RATE_LIMIT_MAX_REQUESTS ?? e.AUTH_RATE_LIMIT_MAX_REQUESTS }),
      register: Object.freeze({ windowMs: e.AUTH_REGISTER_RATE_LIMIT_WINDOW_MS ?? e.AUTH_RATE_LIMIT_WINDOW_MS, max: e.AUTH_REGISTER_RATE_LIMIT_MAX_REQUESTS ?? e.AUTH_RATE_LIMIT_MAX_REQUESTS }),
      refresh: Object.freeze({ windowMs: e.AUTH_REFRESH_RATE_LIMIT_WINDOW_MS, max: e.AUTH_REFRESH_RATE_LIMIT_MAX_REQUESTS }),
    }),
    login: Object.freeze({
      pair: Object.freeze({ free: e.LOGIN_LOCKOUT_THRESHOLD, baseMs: e.LOGIN_BACKOFF_BASE_MS, maxMs: e.LOGIN_LOCKOUT_MS, windowMs: e.LOGIN_FAILURE_WINDOW_MS }),
      source: Object.freeze({ maxFailures: e.LOGIN_SOURCE_MAX_FAILURES, windowMs: e.LOGIN_SOURCE_WINDOW_MS }),
      account: Object.freeze({ maxFailures: e.LOGIN_ACCOUNT_MAX_FAILURES, windowMs: e.LOGIN_ACCOUNT_WINDOW_MS, slowIntervalMs: e.LOGIN_ACCOUNT_SLOW_INTERVAL_MS, trustedSourceTtlMs: e.LOGIN_TRUSTED_SOURCE_TTL_MS }),
    }),
    trustProxy: e.TRUST_PROXY,
    audit: Object.freeze({ enabled: e.AUDIT_ENABLED, retentionDays: e.AUDIT_RETENTION_DAYS }),
    corsOrigins: Object.freeze(corsOrigins),
    cacheTtlSeconds: e.CACHE_TTL_SECONDS,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    drainDelayMs: e.SHUTDOWN_DRAIN_DELAY_MS ?? (e.REDIS_URL ? 2_000 : 0),
    admin: Object.freeze({ email: e.ADMIN_EMAIL!, password: e.ADMIN_PASSWORD }),
    cluster: Object.freeze({ nodeId: e.NODE_ID, shards: e.CLUSTER_SHARDS, leaseTtlMs: e.CLUSTER_LEASE_TTL_MS }),
    workstations: Object.freeze({ images: Object.freeze(imageList('WORKSTATION_IMAGES', e.WORKSTATION_IMAGES!)), idleTimeoutSeconds: e.WORKSTATION_IDLE_TIMEOUT, idleCpuPercent: e.WORKSTATION_IDLE_CPU_PERCENT }),
    pythonImage: Object.freeze({
      image: e.PYTHON_IMAGE === undefined ? undefined : onlyImage('PYTHON_IMAGE', e.PYTHON_IMAGE),
      // Value.Default filled `raw` in: whether a list was given is read from the source.
      joinWorkstations: !source.WORKSTATION_IMAGES,
      joinTraining: !source.TRAINING_IMAGES,
    }),
    vms: Object.freeze({ images: Object.freeze(imageList('VM_IMAGES', e.VM_IMAGES!)), runtime: e.VM_RUNTIME }),
    quota: Object.freeze({ running: e.QUOTA_MAX_RUNNING, cpu: e.QUOTA_MAX_CPU, memoryMb: e.QUOTA_MAX_MEMORY_MB }),
    orgQuota: Object.freeze({ running: e.ORG_DEFAULT_MAX_RUNNING, cpu: e.ORG_DEFAULT_MAX_CPU, memoryMb: e.ORG_DEFAULT_MAX_MEMORY_MB }),
    pipelines: Object.freeze({ stepConcurrency: e.PIPELINE_STEP_CONCURRENCY, scheduleMinIntervalSeconds: e.PIPELINE_SCHEDULE_MIN_INTERVAL_SECONDS }),
    codesheets: Object.freeze({
      maxCells: e.CODESHEET_MAX_CELLS,
      maxSourceBytes: e.CODESHEET_MAX_SOURCE_BYTES,
      maxOutputBytes: e.CODESHEET_MAX_OUTPUT_BYTES,
      maxImportBytes: e.CODESHEET_MAX_IMPORT_BYTES,
      kernelStartTimeoutMs: e.CODESHEET_KERNEL_START_TIMEOUT_MS,
    }),
    terminal: Object.freeze({ reattachGraceMs: e.TERMINAL_REATTACH_GRACE_MS }),
    models: Object.freeze({
      dir: resolve(e.MODEL_DIR!),
      trainingImages: Object.freeze(imageList('TRAINING_IMAGES', e.TRAINING_IMAGES!)),
      defaultTimeoutSeconds: Math.min(e.TRAINING_TIMEOUT_SECONDS, e.TRAINING_MAX_TIMEOUT_SECONDS),
      maxTimeoutSeconds: e.TRAINING_MAX_TIMEOUT_SECONDS,
      concurrency: e.TRAINING_CONCURRENCY,
      maxActiveRunsPerUser: e.TRAINING_MAX_ACTIVE_RUNS,
      maxRows: e.TRAINING_MAX_ROWS,
      concurrencyPerUser: Math.min(e.TRAINING_CONCURRENCY_PER_USER, e.TRAINING_CONCURRENCY),
      logMaxBytes: e.TRAINING_LOG_MAX_BYTES,
      outputBytesPerSecond: e.TRAINING_OUTPUT_BYTES_PER_SECOND,
      outputLinesPerSecond: e.TRAINING_OUTPUT_LINES_PER_SECOND,
    }),
    containerLogs: Object.freeze({
      lineMaxBytes: e.CONTAINER_LOG_LINE_MAX_BYTES,
      tailMaxBytes: e.CONTAINER_LOG_TAIL_MAX_BYTES,
      followMaxBytes: e.CONTAINER_LOG_FOLLOW_MAX_BYTES,
    }),
    ws: Object.freeze({
      maxPayloadBytes: e.WS_MAX_PAYLOAD_BYTES,
      maxConnectionsPerUser: e.WS_MAX_CONNECTIONS_PER_USER,
      messagesPerSecond: e.WS_MESSAGES_PER_SECOND,
      idleTimeoutSeconds: e.WS_IDLE_TIMEOUT_SECONDS,
      maxBufferedBytes: e.WS_MAX_BUFFERED_BYTES,
      maxReplay: e.WS_MAX_REPLAY,
      ticketTtlMs: e.WS_TICKET_TTL_MS,
    }),
  })
}
