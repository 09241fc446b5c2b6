/**
 * Every error leaves as the guide's envelope: `{ success: false, error, details }`.
 * TypeBox validation failures become 400s with one detail per field, using the schema's
 * own `error` text where it has one ("Invalid email format").
 */
import type { Elysia, ValidationError as ElysiaValidationError } from 'elysia'
import { AppError, type ErrorDetail } from '../../core/errors.ts'
import type { AppDeps } from '../context.ts'
import { encode, requestMeta } from './request.ts'

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

export function validationDetails(err: ElysiaValidationError, where: string): ErrorDetail[] {
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

export function errorHandler(deps: AppDeps) {
  return (app: Elysia) =>
    app.onError(({ code, error: raised, request, set }) => {
      const meta = requestMeta(request)
      // Elysia wraps what a body parser throws in a ParseError; our own errors keep their status.
      const cause = (raised as { cause?: unknown }).cause
      const error = code === 'PARSE' && cause instanceof AppError ? cause : raised
      const headers = { ...(set.headers as Record<string, string>), 'content-type': 'application/json' }
      let status = 500
      let body: string
      if (error instanceof AppError && error.expose) {
        status = error.status
        Object.assign(headers, error.headers)
        body = envelope(error.message, error.details)
      } else if (code === 'VALIDATION') {
        status = 400
        const err = error as ElysiaValidationError
        const where = err.type === 'body' ? 'body' : err.type
        body = envelope('Validation failed', validationDetails(err, where))
      } else if (code === 'NOT_FOUND') {
        status = 404
        body = envelope('Route not found', [])
      } else if (code === 'PARSE') {
        status = 400
        body = envelope('Malformed request body', [{ field: 'body', message: 'Body could not be parsed as JSON' }])
      } else {
        deps.logger.error({ err: error, reqId: meta.id, method: request.method, url: request.url }, 'unhandled error')
        body = envelope('Internal server error', [], meta.id)
      }
      set.status = status
      return encode(request, body, status, headers)
    })
}
