/**
 * Every environment variable the server reads, with its default and bounds (TypeBox), for
 * ../config.ts to read once, validate and turn into the Config. `.env.example` lists the same.
 */
import { Type as T, type Static } from '@sinclair/typebox'

const Int = (opts: { default?: number; minimum?: number; maximum?: number } = {}) =>
  T.Integer({ minimum: 0, ...opts })
const Str = (def?: string) => (def === undefined ? T.Optional(T.String()) : T.String({ default: def }))
const Bool = (def: boolean) => T.Boolean({ default: def })

/** Every variable the server reads, with its default. `.env.example` lists the same. */
export const EnvSchema = T.Object({
  PORT: Int({ default: 3001, maximum: 65535 }),
  HOST: Str('0.0.0.0'),
  REUSE_PORT: Bool(false),
  // Listen on this Unix socket instead of HOST:PORT (a balancer on the same host).
  UNIX_SOCKET: Str(),
  NODE_ENV: T.Union([T.Literal('development'), T.Literal('production'), T.Literal('test')], { default: 'development' }),
  FRONTEND_URL: Str('http://localhost:5173'),

  JWT_SECRET: Str(),
  JWT_ACCESS_TTL_SECONDS: Int({ default: 900, minimum: 10 }),
  JWT_REFRESH_TTL_SECONDS: Int({ default: 30 * 24 * 3600, minimum: 60 }),
  BCRYPT_ROUNDS: Int({ default: 12, minimum: 4, maximum: 31 }),

  DATABASE_URL: Str(),
  DATABASE_POOL_MAX: Int({ default: 20, minimum: 1 }),
  DATA_DIR: Str('./data'),

  REDIS_URL: Str(),
  REDIS_PREFIX: T.String({ default: 'quadrax:', pattern: '^[A-Za-z0-9_.:-]{1,64}$' }),
  DOCKER_HOST: Str(),

  MAX_FILE_SIZE: T.String({ default: '100MB', pattern: '^\\s*\\d+(\\.\\d+)?\\s*(B|KB|MB|GB|TB)?\\s*$' }),
  UPLOAD_DIR: Str('./uploads'),
  USER_STORAGE_QUOTA_BYTES: T.String({ default: '10GB', pattern: '^\\s*\\d+(\\.\\d+)?\\s*(B|KB|MB|GB|TB)?\\s*$' }),
  ORG_DEFAULT_STORAGE_BYTES: T.String({ default: '100GB', pattern: '^\\s*\\d+(\\.\\d+)?\\s*(B|KB|MB|GB|TB)?\\s*$' }),
  DATAKIT_QUERY_TIMEOUT_MS: Int({ default: 10_000, minimum: 100 }),
  DATAKIT_QUERY_MAX_ROWS: Int({ default: 10_000, minimum: 1, maximum: 1_000_000 }),
  DATAKIT_DUCKDB_THREADS: Int({ default: 0, maximum: 256 }),
  DATAKIT_DUCKDB_MEMORY_LIMIT: T.String({ default: '1GB', pattern: '^\\s*\\d+(\\.\\d+)?\\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)\\s*$' }),
  DATAKIT_PROFILE_CONCURRENCY: Int({ default: 1, minimum: 1, maximum: 64 }),
  DATAKIT_QUERY_CONCURRENCY: Int({ default: 2, minimum: 1, maximum: 64 }),
  DATAKIT_QUERY_CONCURRENCY_PER_USER: Int({ default: 1, minimum: 1, maximum: 64 }),
  DATAKIT_QUERY_QUEUE_PER_USER: Int({ default: 16, minimum: 1, maximum: 10_000 }),
  DATAKIT_QUERY_MEMORY_MB: Int({ default: 512, minimum: 128 }),
  DATAKIT_QUERY_MAX_BYTES: T.String({ default: '8MB', pattern: '^\\s*\\d+(\\.\\d+)?\\s*(B|KB|MB|GB|TB)?\\s*$' }),
  DATAKIT_QUERY_BYTES_PER_SECOND: Int({ default: 8 * 1024 * 1024, minimum: 64 * 1024 }),
  DATAKIT_DOWNLOAD_BYTES_PER_SECOND: Int({ default: 64 * 1024 * 1024, minimum: 64 * 1024 }),
  DATAKIT_EXPORT_MAX_BYTES: T.String({ default: '1GB', pattern: '^\\s*\\d+(\\.\\d+)?\\s*(B|KB|MB|GB|TB)?\\s*$' }),
  DATAKIT_PROFILE_CONCURRENCY_PER_USER: Int({ default: 1, minimum: 1, maximum: 64 }),
  DATAKIT_PROFILE_MEMORY_MB: Int({ default: 1024, minimum: 128 }),
  DATAKIT_PROFILE_TIMEOUT_MS: Int({ default: 120_000, minimum: 1000 }),
  DATAKIT_MAX_DECOMPRESSED_BYTES: T.String({ default: '1GB', pattern: '^\\s*\\d+(\\.\\d+)?\\s*(B|KB|MB|GB|TB)?\\s*$' }),
  DATAKIT_MAX_ROWS: Int({ default: 20_000_000, minimum: 1 }),
  DATAKIT_MAX_COLUMNS: Int({ default: 1_000, minimum: 1, maximum: 100_000 }),

  OPENAI_API_KEY: Str(),
  OPENAI_BASE_URL: Str(),
  OPENAI_MODEL: Str('gpt-4o-mini'),
  OPENAI_MAX_RETRIES: Int({ default: 3, maximum: 10 }),
  OPENAI_TIMEOUT_MS: Int({ default: 120_000, minimum: 1000 }),
  OPENAI_IDLE_TIMEOUT_MS: Int({ default: 30_000, minimum: 100 }),
  AI_CONTEXT_TOKENS: Int({ default: 8_000, minimum: 256 }),
  AI_MAX_REPLY_TOKENS: Int({ default: 1_024, minimum: 16 }),
  AI_DAILY_TOKEN_BUDGET: Int({ default: 200_000 }),

  SMTP_HOST: Str(),
  SMTP_PORT: Int({ default: 587, maximum: 65535 }),
  SMTP_USER: Str(),
  SMTP_PASS: Str(),
  SMTP_FROM: Str('QUADRAX ML <no-reply@quadrax.local>'),
  SMTP_SECURE: Bool(false),
  // Notifications (src/features/notifications.ts): mail retries, the sweep, password resets.
  MAIL_RETRY_BASE_MS: Int({ default: 10_000, minimum: 10 }),
  MAIL_RETRY_MAX_MS: Int({ default: 3_600_000, minimum: 10 }),
  MAIL_RETRY_ATTEMPTS: Int({ default: 8, minimum: 1, maximum: 100 }),
  MAIL_GIVE_UP_HOURS: Int({ default: 72, minimum: 1 }),
  MAIL_SWEEP_INTERVAL_MS: Int({ default: 30_000, minimum: 50 }),
  PASSWORD_RESET_TTL_MINUTES: Int({ default: 30, minimum: 1, maximum: 1440 }),
  // Organisations (src/features/orgs.ts): how long an invitation's link works.
  ORG_INVITATION_TTL_HOURS: Int({ default: 168, minimum: 1, maximum: 8760 }),

  LOG_LEVEL: T.Union(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => T.Literal(l)), { default: 'info' }),
  SENTRY_DSN: Str(),
  METRICS_TOKEN: Str(),

  RATE_LIMIT_WINDOW_MS: Int({ default: 900_000, minimum: 1 }),
  RATE_LIMIT_MAX_REQUESTS: Int({ default: 100, minimum: 1 }),
  // The default of the login and register budgets below (it was once one budget for all three).
  AUTH_RATE_LIMIT_WINDOW_MS: Int({ default: 900_000, minimum: 1 }),
  AUTH_RATE_LIMIT_MAX_REQUESTS: Int({ default: 5, minimum: 1 }),
  AUTH_LOGIN_RATE_LIMIT_WINDOW_MS: T.Optional(Int({ minimum: 1 })),
  AUTH_LOGIN_RATE_LIMIT_MAX_REQUESTS: T.Optional(Int({ minimum: 1 })),
  AUTH_REGISTER_RATE_LIMIT_WINDOW_MS: T.Optional(Int({ minimum: 1 })),
  AUTH_REGISTER_RATE_LIMIT_MAX_REQUESTS: T.Optional(Int({ minimum: 1 })),
  AUTH_REFRESH_RATE_LIMIT_WINDOW_MS: Int({ default: 900_000, minimum: 1 }),
  AUTH_REFRESH_RATE_LIMIT_MAX_REQUESTS: Int({ default: 100, minimum: 1 }),
  AUTH_PASSWORD_RESET_RATE_LIMIT_WINDOW_MS: T.Optional(Int({ minimum: 1 })),
  AUTH_PASSWORD_RESET_RATE_LIMIT_MAX_REQUESTS: T.Optional(Int({ minimum: 1 })),
  // Login throttling (src/auth/login-throttle.ts): per account and source, per source, per account.
  LOGIN_LOCKOUT_THRESHOLD: Int({ default: 5, minimum: 1 }),
  LOGIN_BACKOFF_BASE_MS: Int({ default: 60_000, minimum: 1 }),
  LOGIN_LOCKOUT_MS: Int({ default: 900_000, minimum: 1 }),
  LOGIN_FAILURE_WINDOW_MS: Int({ default: 86_400_000, minimum: 1 }),
  LOGIN_SOURCE_MAX_FAILURES: Int({ default: 30, minimum: 1 }),
  LOGIN_SOURCE_WINDOW_MS: Int({ default: 900_000, minimum: 1 }),
  LOGIN_ACCOUNT_MAX_FAILURES: Int({ default: 50, minimum: 1 }),
  LOGIN_ACCOUNT_WINDOW_MS: Int({ default: 3_600_000, minimum: 1 }),
  LOGIN_ACCOUNT_SLOW_INTERVAL_MS: Int({ default: 30_000, minimum: 1 }),
  LOGIN_TRUSTED_SOURCE_TTL_MS: Int({ default: 30 * 24 * 3_600_000, minimum: 1 }),
  TRUST_PROXY: Bool(false),
  // The audit log (src/store/audit.ts): off only to measure what it costs (bench/audit.ts).
  AUDIT_ENABLED: Bool(true),
  AUDIT_RETENTION_DAYS: Int({ default: 0, maximum: 36_500 }),

  // Unset: FRONTEND_URL's origin.
  CORS_ORIGIN: Str(),
  CACHE_TTL_SECONDS: Int({ default: 300, minimum: 1 }),
  SHUTDOWN_TIMEOUT_MS: Int({ default: 10_000, minimum: 0 }),
  // Unset: 2000 with REDIS_URL (a node behind a balancer), 0 alone.
  SHUTDOWN_DRAIN_DELAY_MS: T.Optional(Int({ maximum: 60_000 })),

  ADMIN_EMAIL: Str('admin@quadrax.local'),
  ADMIN_PASSWORD: Str(),

  WS_MAX_PAYLOAD_BYTES: Int({ default: 65_536, minimum: 1024 }),
  WS_MAX_CONNECTIONS_PER_USER: Int({ default: 20, minimum: 1 }),
  WS_MESSAGES_PER_SECOND: Int({ default: 20, minimum: 1 }),
  WS_IDLE_TIMEOUT_SECONDS: Int({ default: 120, minimum: 10, maximum: 960 }),
  WS_MAX_BUFFERED_BYTES: Int({ default: 1_048_576, minimum: 16_384 }),
  WS_MAX_REPLAY: Int({ default: 10_000, minimum: 1 }),
  WS_TICKET_TTL_MS: Int({ default: 30_000, minimum: 1000 }),

  NODE_ID: Str(),
  CLUSTER_SHARDS: Int({ default: 64, minimum: 1, maximum: 4096 }),
  CLUSTER_LEASE_TTL_MS: Int({ default: 5_000, minimum: 500, maximum: 10_000 }),

  WORKSTATION_IMAGES: Str('quadrax/busybox:test'),
  WORKSTATION_IDLE_TIMEOUT: Int({ default: 3600 }),
  WORKSTATION_IDLE_CPU_PERCENT: T.Number({ default: 10, minimum: 0, maximum: 100_000 }),
  VM_IMAGES: Str('quadrax/busybox:test'),
  VM_RUNTIME: T.String({ default: 'runc', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' }),
  QUOTA_MAX_RUNNING: Int({ default: 4 }),
  QUOTA_MAX_CPU: T.Number({ default: 8, minimum: 0 }),
  QUOTA_MAX_MEMORY_MB: Int({ default: 16_384 }),
  // An organisation's compute ceiling when a platform admin set none (src/store/quotas.ts).
  ORG_DEFAULT_MAX_RUNNING: Int({ default: 20 }),
  ORG_DEFAULT_MAX_CPU: T.Number({ default: 64, minimum: 0 }),
  ORG_DEFAULT_MAX_MEMORY_MB: Int({ default: 131_072 }),
  TERMINAL_REATTACH_GRACE_MS: Int({ default: 60_000, minimum: 1000 }),
  MODEL_DIR: Str('./data/models'),
  TRAINING_IMAGES: Str('quadrax/busybox:test'),
  // The Python image (scripts/python-image.sh); unset: the tag computed from its package list.
  PYTHON_IMAGE: Str(),
  TRAINING_TIMEOUT_SECONDS: Int({ default: 3600, minimum: 1 }),
  TRAINING_MAX_TIMEOUT_SECONDS: Int({ default: 86_400, minimum: 1 }),
  TRAINING_CONCURRENCY: Int({ default: 2, minimum: 1, maximum: 64 }),
  TRAINING_MAX_ACTIVE_RUNS: Int({ default: 10, minimum: 1 }),
  TRAINING_MAX_ROWS: Int({ default: 1_000_000, minimum: 1 }),
  TRAINING_CONCURRENCY_PER_USER: Int({ default: 1, minimum: 1, maximum: 64 }),
  TRAINING_LOG_MAX_BYTES: Int({ default: 16 * 1024 * 1024, minimum: 1024 }),
  TRAINING_OUTPUT_BYTES_PER_SECOND: Int({ default: 8 * 1024 * 1024, minimum: 64 * 1024 }),
  TRAINING_OUTPUT_LINES_PER_SECOND: Int({ default: 10_000, minimum: 100 }),
  CONTAINER_LOG_LINE_MAX_BYTES: Int({ default: 16 * 1024, minimum: 256, maximum: 16 * 1024 * 1024 }),
  CONTAINER_LOG_TAIL_MAX_BYTES: Int({ default: 1024 * 1024, minimum: 1024 }),
  CONTAINER_LOG_FOLLOW_MAX_BYTES: Int({ default: 64 * 1024 * 1024, minimum: 1024 }),
  PIPELINE_STEP_CONCURRENCY: Int({ default: 8, minimum: 1, maximum: 1000 }),
  PIPELINE_SCHEDULE_MIN_INTERVAL_SECONDS: Int({ default: 60, minimum: 1 }),
  // CodeSheets (src/actors/codesheets/): cells per sheet, bytes of a cell's source and of its outputs, an import's file, a kernel's start.
  CODESHEET_MAX_CELLS: Int({ default: 1000, minimum: 1, maximum: 100_000 }),
  CODESHEET_MAX_SOURCE_BYTES: Int({ default: 512 * 1024, minimum: 1024, maximum: 16 * 1024 * 1024 }),
  CODESHEET_MAX_OUTPUT_BYTES: Int({ default: 2 * 1024 * 1024, minimum: 4096 }),
  CODESHEET_MAX_IMPORT_BYTES: Int({ default: 32 * 1024 * 1024, minimum: 1024 }),
  CODESHEET_KERNEL_START_TIMEOUT_MS: Int({ default: 60_000, minimum: 1000 }),
})
export type Env = Static<typeof EnvSchema>
