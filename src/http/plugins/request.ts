/**
 * The request's frame: id, client IP, timing, structured log line and metrics, CORS,
 * security headers, body limits, and gzip of large responses.
 */
import type { Elysia } from 'elysia'
import type { Server } from 'bun'
import { AppError } from '../../core/errors.ts'
import type { AppDeps } from '../context.ts'

interface RequestMeta {
  id: string
  start: number
  ip: string
}

const metas = new WeakMap<Request, RequestMeta>()
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

export function requestMeta(request: Request): RequestMeta {
  let m = metas.get(request)
  if (!m) {
    m = { id: crypto.randomUUID(), start: performance.now(), ip: '127.0.0.1' }
    metas.set(request, m)
  }
  return m
}

export function clientIp(request: Request): string {
  return requestMeta(request).ip
}

/** The helmet defaults, minus the ones that only matter to HTML pages we do not serve. */
export const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin',
  'origin-agent-cluster': '?1',
  'referrer-policy': 'no-referrer',
  'strict-transport-security': 'max-age=15552000; includeSubDomains',
  'x-content-type-options': 'nosniff',
  'x-dns-prefetch-control': 'off',
  'x-download-options': 'noopen',
  'x-frame-options': 'SAMEORIGIN',
  'x-permitted-cross-domain-policies': 'none',
  'x-xss-protection': '0',
}
// The Swagger UI page loads its script and styles from a CDN.
const SWAGGER_CSP = "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https:; frame-ancestors 'none'"

const JSON_BODY_LIMIT = 1024 * 1024
const GZIP_MIN = 1024

export interface RequestFrameOptions {
  /** Paths (prefixes) whose bodies are uploads: exempt from the JSON size and type rules. */
  uploadPaths?: string[]
}

export function requestFrame(deps: AppDeps, opts: RequestFrameOptions = {}) {
  const { config, logger, metrics } = deps
  const origins = new Set(config.corsOrigins)
  const anyOrigin = origins.has('*')
  const uploadPaths = opts.uploadPaths ?? []

  const corsHeaders = (origin: string | null): Record<string, string> | undefined => {
    if (!origin || !(anyOrigin || origins.has(origin))) return undefined
    return {
      'access-control-allow-origin': origin,
      'access-control-allow-credentials': 'true',
      'access-control-expose-headers': 'X-Request-Id, ETag, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset',
      vary: 'Origin',
    }
  }

  return (app: Elysia) =>
    app
      .onRequest(({ request, set, server }) => {
        const given = request.headers.get('x-request-id')
        const s = server as Server<unknown> | null
        let ip = s?.requestIP(request)?.address ?? '127.0.0.1'
        if (config.trustProxy) {
          const fwd = request.headers.get('x-forwarded-for')
          if (fwd) ip = fwd.split(',')[0]!.trim() || ip
        }
        const meta: RequestMeta = { id: given && REQUEST_ID.test(given) ? given : crypto.randomUUID(), start: performance.now(), ip }
        metas.set(request, meta)
        const h = set.headers as Record<string, string>
        Object.assign(h, SECURITY_HEADERS)
        h['x-request-id'] = meta.id
        const origin = request.headers.get('origin')
        const cors = corsHeaders(origin)
        if (cors) Object.assign(h, cors)
        const url = request.url
        const pathStart = url.indexOf('/', 8)
        const q = url.indexOf('?', pathStart)
        const path = q === -1 ? url.slice(pathStart) : url.slice(pathStart, q)
        if (path.startsWith('/swagger')) h['content-security-policy'] = SWAGGER_CSP

        if (request.method === 'OPTIONS' && request.headers.has('access-control-request-method')) {
          if (!cors) return new Response(null, { status: 403, headers: h })
          h['access-control-allow-methods'] = 'GET, POST, PUT, PATCH, DELETE, OPTIONS'
          h['access-control-allow-headers'] = request.headers.get('access-control-request-headers') ?? 'Authorization, Content-Type'
          h['access-control-max-age'] = '600'
          return new Response(null, { status: 204, headers: h })
        }

        const method = request.method
        if (method === 'POST' || method === 'PUT' || method === 'PATCH') {
          if (uploadPaths.some((p) => path.startsWith(p))) return
          const len = Number(request.headers.get('content-length') ?? 0)
          if (len > JSON_BODY_LIMIT) throw new AppError('payload_too_large', `Request body exceeds ${JSON_BODY_LIMIT} bytes`, { status: 413 })
          const type = request.headers.get('content-type')
          if (len > 0 && type && !type.toLowerCase().startsWith('application/json')) {
            throw new AppError('unsupported_media_type', 'Content-Type must be application/json', { status: 415 })
          }
        }
      })
      .mapResponse(({ request, responseValue, set }) => {
        if (responseValue instanceof Response || responseValue === undefined || responseValue === null) return
        if (typeof responseValue !== 'object' && typeof responseValue !== 'string') return
        const body = typeof responseValue === 'string' ? responseValue : JSON.stringify(responseValue)
        const h = set.headers as Record<string, string>
        h['content-type'] ??= typeof responseValue === 'string' ? 'text/plain; charset=utf-8' : 'application/json'
        return encode(request, body, set.status as number | undefined, h)
      })
      .onAfterResponse(({ request, route, set }) => {
        const meta = metas.get(request)
        if (!meta) return
        const seconds = (performance.now() - meta.start) / 1000
        const status = typeof set.status === 'number' ? set.status : 200
        const r = route || 'unmatched'
        metrics.httpDuration.observe({ method: request.method, route: r, status: String(status) }, seconds)
        if (logger.isLevelEnabled('info')) {
          logger.info({ reqId: meta.id, method: request.method, route: r, status, ms: Math.round(seconds * 1e5) / 100, ip: meta.ip }, 'request')
        }
      })
}

/** A response for `body`, gzipped when it is large enough and the client accepts gzip. */
export function encode(request: Request, body: string, status: number | undefined, headers: Record<string, string>): Response {
  if (body.length >= GZIP_MIN && /\bgzip\b/.test(request.headers.get('accept-encoding') ?? '')) {
    headers['content-encoding'] = 'gzip'
    headers.vary = headers.vary ? `${headers.vary}, Accept-Encoding` : 'Accept-Encoding'
    return new Response(Bun.gzipSync(body), { status: status ?? 200, headers })
  }
  return new Response(body, { status: status ?? 200, headers })
}
