/**
 * Every error leaves as the guide's envelope: `{ success: false, error, details }`.
 * TypeBox validation failures become 400s with one detail per field, using the schema's
 * own `error` text where it has one ("Invalid email format").
 */
import type { Elysia, ValidationError as ElysiaValidationError } from 'elysia'
import { reportError } from '../../core/error-reporting.ts'
import { AppError, DB_UNREACHABLE, type ErrorDetail } from '../../core/errors.ts'
import type { HttpDeps } from '../context.ts'
import { encode } from './request.ts'

type ValueErrorLike = { path: string; message: string; schema?: { error?: unknown; format?: string; minLength?: number; maxLength?: number }; value?: unknown }

function field(path: string): string {
  return path.replace(/^\//, '').replaceAll('/', '.') || 'body'
}

function friendly(e: ValueErrorLike): string {
  const custom = e.schema?.error
  if (typeof custom === 'string') return custom
  if (e.value === undefined) return 'Required'
  if (e.schema?.format === 'email') return 'Invalid email format'
  return e.message
}

function validationDetails(err: ElysiaValidationError, where: string): ErrorDetail[] {
  const seen = new Set<string>()
  const out: ErrorDetail[] = []
  let all: ValueErrorLike[] = []
  try {
    all = err.all as ValueErrorLike[]
  } catch {
    all = []
  }
  for (const e of all) {
    if (!e || typeof e.path !== 'string') continue
    const f = field(e.path)
    if (seen.has(f)) continue
    seen.add(f)
    out.push({ field: where === 'body' ? f : `${where}.${f}`.replace(/\.body$/, ''), message: friendly(e) })
  }
  if (out.length === 0) out.push({ field: where, message: 'Invalid value' })
  return out
}

const envelope = (error: string, details: ErrorDetail[], requestId?: string) =>
  JSON.stringify({ success: false, error, details, ...(requestId ? { requestId } : {}) })

/**
 * The response for an error raised outside Elysia's pipeline (a route served ahead of it):
 * an exposed AppError keeps its status, message, details and headers; anything else is a
 * logged 500 with the request id and no internals, as in the handler below.
 */
export function errorResponse(deps: HttpDeps, request: Request, error: unknown, own: Record<string, string>): Response {
  const headers: Record<string, string> = { ...own, 'content-type': 'application/json' }
  closeIfUnread(request, headers)
  if (error instanceof AppError && error.expose) {
    Object.assign(headers, error.headers)
    // A refused body (upload limit, storage quota): close the connection rather than read and
    // drop the rest of it, so the client stops sending at once.
    if (error.status === 413) headers.connection = 'close'
    // A client error that a failure on our side led to (unreadable data, an engine's
    // refusal): the client gets the words it can act on, the log gets the cause.
    if (error.cause !== undefined) deps.logger.warn({ err: error.cause, reqId: own['x-request-id'] ?? deps.frame.meta(request).id, code: error.code }, error.message)
    return encode(request, envelope(error.message, error.details), error.status, headers)
  }
  // The id the response carries (a route served ahead of the pipeline keeps no meta on the request).
  const id = own['x-request-id'] ?? deps.frame.meta(request).id
  if (databaseUnavailable(error)) {
    // Not a bug of ours: the database is down or restarting, and the pool reconnects by itself
    // when it is back. Say so, and when to try again, rather than a 500.
    deps.logger.warn({ err: { type: (error as Error).name, code: (error as { code?: string }).code, message: (error as Error).message }, reqId: id }, 'database unavailable')
    headers['retry-after'] = '5'
    return encode(request, envelope('The database is unavailable; try again shortly', [], id), 503, headers)
  }
  deps.logger.error({ err: error, reqId: id, method: request.method, url: request.url }, 'unhandled error')
  reportError(error, { requestId: id, method: request.method, path: pathOf(request.url), mechanism: 'http.server' })
  return encode(request, envelope('Internal server error', [], id), 500, headers)
}

/** A request URL's path, without its query string. */
function pathOf(url: string): string {
  const start = url.indexOf('/', url.indexOf('//') + 2)
  if (start === -1) return '/'
  const q = url.indexOf('?', start)
  return url.slice(start, q === -1 ? undefined : q)
}

/**
 * An error answered before the request's body was read (a 401 on an upload, a 404 with a
 * body) closes the connection: keeping it alive would mean reading the rest of a body that
 * may be gigabytes long, only to drop it.
 */
function closeIfUnread(request: Request, headers: Record<string, string>): void {
  if (request.bodyUsed) return
  const declared = request.headers.get('content-length')
  if (declared !== null ? declared !== '0' : request.headers.has('transfer-encoding')) headers.connection = 'close'
}

/** SQLSTATEs of a server going away or full: class 08 (connection exception), 57P01-03 (shutdown, crash, starting up), 53300 (too many connections). */
const SQLSTATE_DOWN = /^(08[0-9A-Z]{3}|57P0[123]|53300)$/

/** Is this (or what caused it) the database being unreachable, rather than a bug? */
function databaseUnavailable(error: unknown): boolean {
  let e = error as { code?: unknown; name?: unknown; cause?: unknown } | undefined
  for (let depth = 0; e && typeof e === 'object' && depth < 5; depth++, e = e.cause as typeof e) {
    if (typeof e.code !== 'string') continue
    if (e.name === 'PostgresError' ? SQLSTATE_DOWN.test(e.code) : 'query' in e && DB_UNREACHABLE.has(e.code)) return true
  }
  return false
}

export function errorHandler(deps: HttpDeps) {
  return (app: Elysia) =>
    app.onError(({ code, error: raised, request, set, route }) => {
      // Elysia wraps what a body parser throws in a ParseError; our own errors keep their status.
      const cause = (raised as { cause?: unknown }).cause
      const error = code === 'PARSE' && cause instanceof AppError ? cause : raised
      const own = set.headers as Record<string, string>
      let res: Response
      if ((error instanceof AppError && error.expose) || !(code === 'VALIDATION' || code === 'NOT_FOUND' || code === 'PARSE')) {
        res = errorResponse(deps, request, error, own)
      } else {
        const headers: Record<string, string> = { ...own, 'content-type': 'application/json' }
        closeIfUnread(request, headers)
        let body: string
        if (code === 'VALIDATION') {
          const err = error as ElysiaValidationError
          const where = err.type === 'body' ? 'body' : err.type
          body = envelope('Validation failed', validationDetails(err, where))
        } else if (code === 'NOT_FOUND') {
          body = envelope('Route not found', [])
        } else {
          body = envelope('Malformed request body', [{ field: 'body', message: 'Body could not be parsed as JSON' }])
        }
        res = encode(request, body, code === 'NOT_FOUND' ? 404 : 400, headers)
      }
      set.status = res.status
      deps.frame.finish(request, route || 'unmatched', res.status)
      return res
    })
}
