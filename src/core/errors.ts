/**
 * One base error with a snake_case code. Only errors marked `expose` reach the client as
 * they are; everything else becomes a 500 carrying the request id, logged with its stack.
 */
export interface ErrorDetail {
  field: string
  message: string
}

export class AppError extends Error {
  readonly code: string
  readonly status: number
  readonly details: ErrorDetail[]
  readonly expose: boolean
  readonly headers: Record<string, string>

  constructor(
    code: string,
    message: string,
    opts: { status?: number; details?: ErrorDetail[]; cause?: unknown; expose?: boolean; headers?: Record<string, string> } = {},
  ) {
    super(message, { cause: opts.cause })
    this.name = new.target.name
    this.code = code
    this.status = opts.status ?? 500
    this.details = opts.details ?? []
    this.expose = opts.expose ?? (this.status < 500 || this.status === 503)
    this.headers = opts.headers ?? {}
  }
}

export class ValidationError extends AppError {
  constructor(message = 'Validation failed', details: ErrorDetail[] = []) {
    super('validation_failed', message, { status: 400, details })
  }
}
export class UnauthorizedError extends AppError {
  constructor(message = 'Authentication required') {
    super('unauthorized', message, { status: 401 })
  }
}
export class ForbiddenError extends AppError {
  constructor(message = 'You do not have permission to do this') {
    super('forbidden', message, { status: 403 })
  }
}
export class NotFoundError extends AppError {
  constructor(what = 'Resource') {
    super('not_found', `${what} not found`, { status: 404 })
  }
}
export class ConflictError extends AppError {
  constructor(message: string, details: ErrorDetail[] = []) {
    super('conflict', message, { status: 409, details })
  }
}
export class UnsupportedMediaTypeError extends AppError {
  constructor(message: string) {
    super('unsupported_media_type', message, { status: 415 })
  }
}
export class UnprocessableError extends AppError {
  constructor(message: string, details: ErrorDetail[] = [], cause?: unknown) {
    super('unprocessable', message, { status: 422, details, cause })
  }
}
export class RateLimitedError extends AppError {
  constructor(message: string, retryAfterSeconds: number, details: ErrorDetail[] = []) {
    super('rate_limited', message, { status: 429, details, headers: { 'retry-after': String(retryAfterSeconds) } })
  }
}
export class ServiceUnavailableError extends AppError {
  constructor(message: string) {
    super('service_unavailable', message, { status: 503 })
  }
}

/** PostgreSQL SQLSTATE codes we branch on (postgres.js exposes them as `err.code`). */
export const PG = {
  uniqueViolation: '23505',
  foreignKeyViolation: '23503',
  serializationFailure: '40001',
  invalidTextRepresentation: '22P02',
} as const

/** Socket and connection errors of a postgres.js query: the database could not be reached. */
export const DB_UNREACHABLE = new Set(['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN', 'CONNECT_TIMEOUT', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED'])

/** A database failure a retry may get past: the connection (DB_UNREACHABLE), the server going away or full, a conflict. */
export function transientDbError(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code
  if (typeof code !== 'string') return false
  if ((err as Error).name === 'PostgresError') return /^(08|57P0|53300|40001|40P01)/.test(code)
  return DB_UNREACHABLE.has(code)
}

export function pgCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err ? String((err as { code: unknown }).code) : undefined
}
