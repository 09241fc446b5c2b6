/**
 * Error reporting to Sentry (SENTRY_DSN), with @sentry/bun: a route's unhandled error (its
 * 500), an unhandled promise rejection and an exception nothing caught, each with what leads
 * to its log lines (the request id, method and path). Without SENTRY_DSN the SDK is not even
 * loaded and every call is a no-op.
 *
 * Only the integrations that shape an error event are installed: the SDK's defaults also wrap
 * Bun.serve, fetch, http and the console, which costs every request and writes to the console
 * around our JSON logs. Nothing personal is sent (no headers, bodies, query strings or IPs).
 */
import type { Logger } from './logger.ts'

type SentryModule = typeof import('@sentry/bun')

/** The SDK is one per process: the servers of a process share it (the last DSN given wins). */
let active: { sentry: SentryModule; dsn: string; holders: number } | undefined

export interface ErrorReportingOptions {
  dsn: string | undefined
  environment: string
  release?: string
}

/**
 * Start reporting when a DSN is given. Returns what stops it (flushing what is queued, at
 * most `timeoutMs`); a no-op without a DSN.
 */
export async function startErrorReporting(opts: ErrorReportingOptions): Promise<(timeoutMs?: number) => Promise<void>> {
  if (!opts.dsn) return async () => {}
  if (active?.dsn !== opts.dsn) {
    await active?.sentry.close(2000)
    const sentry = await import('@sentry/bun')
    sentry.init({
      dsn: opts.dsn,
      environment: opts.environment,
      release: opts.release,
      defaultIntegrations: false,
      integrations: [sentry.linkedErrorsIntegration(), sentry.dedupeIntegration(), sentry.functionToStringIntegration(), sentry.nodeContextIntegration()],
    })
    active = { sentry, dsn: opts.dsn, holders: 0 }
  }
  const held = active!
  held.holders++
  let stopped = false
  return async (timeoutMs = 2000) => {
    if (stopped) return
    stopped = true
    if (--held.holders > 0 || active !== held) return
    active = undefined
    await held.sentry.close(timeoutMs)
  }
}

export interface ErrorContext {
  /** The request's id (X-Request-Id), tagged `request_id`: the same as on its log lines. */
  requestId?: string
  method?: string
  /** The path, without the query string (which may carry a ticket or a token). */
  path?: string
  /** How the error was caught: `http.server` (a route's 500), `unhandledRejection`, `uncaughtException`. */
  mechanism: string
}

/** Send `err` to Sentry, if reporting is on. Never throws. */
export function reportError(err: unknown, context: ErrorContext): void {
  const sentry = active?.sentry
  if (!sentry) return
  try {
    sentry.withScope((scope) => {
      scope.setTag('mechanism', context.mechanism)
      if (context.requestId) scope.setTag('request_id', context.requestId)
      if (context.method && context.path) scope.setContext('request', { method: context.method, path: context.path })
      sentry.captureException(err, { mechanism: { type: context.mechanism, handled: false } })
    })
  } catch {
    // Reporting must never turn into another failure.
  }
}

/**
 * The process-wide handler of unhandled promise rejections: logged (one JSON line) and
 * reported; with a handler the process keeps running (without one, it would exit).
 */
export function watchUnhandledRejections(logger: Logger): void {
  process.on('unhandledRejection', (reason) => {
    logger.error({ err: reason }, 'unhandled rejection')
    reportError(reason, { mechanism: 'unhandledRejection' })
  })
}

/**
 * The process-wide handler of an exception nothing caught: logged (one JSON line, fatal),
 * reported and sent (waiting at most `flushMs` for Sentry), then the process exits with 1 as
 * it would have without a handler: its state is unknown, a supervisor (Docker's restart
 * policy, systemd) starts a fresh one.
 */
export function exitOnUncaughtException(logger: Logger, flushMs = 2000): void {
  process.on('uncaughtException', (err) => {
    logger.fatal({ err }, 'uncaught exception; exiting')
    reportError(err, { mechanism: 'uncaughtException' })
    const sentry = active?.sentry
    void (sentry ? sentry.flush(flushMs).catch(() => false) : Promise.resolve(true)).finally(() => process.exit(1))
  })
}
