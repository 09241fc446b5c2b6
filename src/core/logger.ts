import pino, { type Logger } from 'pino'

export type { Logger }

/** Structured JSON logs on stdout (pino). Secrets never reach a log line. */
export function createLogger(level: string, bindings: Record<string, unknown> = {}): Logger {
  return pino({
    level,
    base: { pid: process.pid, ...bindings },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: ['password', '*.password', 'token', '*.token', 'refreshToken', '*.refreshToken', 'authorization', '*.authorization'], censor: '[redacted]' },
  })
}
