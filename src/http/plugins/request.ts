/**
 * The request's frame: id, client IP, timing, structured log line and metrics, CORS,
 * security headers, body limits, and gzip of large responses.
 */
import type { Elysia } from 'elysia'
import type { Server } from 'bun'
import { gzip } from 'node:zlib'
import type { Config } from '../../config.ts'
import { AppError } from '../../core/errors.ts'
import type { Logger } from '../../core/logger.ts'
import type { Metrics } from '../../core/metrics.ts'
import type { AuditScope } from '../../store/audit.ts'

interface RequestMeta {
  id: string
  start: number
  /** Recorded (metric and log line) already: the error handler's response may pass mapResponse too. */
  done?: boolean
  /** Resolved on first use: most requests never need it. */
  ip: string | undefined
  server: Server<unknown> | null
  /** A request that may change something: its audit scope (./audit.ts). */
  audit?: AuditScope
}

const metas = new WeakMap<Request, RequestMeta>()
// Request ids: this process's random prefix and a counter — unique across nodes, and far
// cheaper than a UUID per request.
const ID_PREFIX = Buffer.from(crypto.getRandomValues(new Uint8Array(6))).toString('base64url')
let idCounter = 0
const nextRequestId = () => `${ID_PREFIX}-${(++idCounter).toString(36)}`
const REQUEST_ID = /^[A-Za-z0-9._:-]{1,128}$/

function metaOf(request: Request): RequestMeta {
  let m = metas.get(request)
  if (!m) {
    m = { id: nextRequestId(), start: performance.now(), ip: '127.0.0.1', server: null }
    metas.set(request, m)
  }
  return m
}

/** The client's IP: the socket's peer, or the first X-Forwarded-For hop when `trustProxy`. */
function ipOf(m: RequestMeta, request: Request, trustProxy: boolean): string {
  if (m.ip === undefined) {
    let ip = m.server?.requestIP(request)?.address ?? '127.0.0.1'
    if (trustProxy) {
      const fwd = request.headers.get('x-forwarded-for')
      if (fwd) ip = fwd.split(',')[0]!.trim() || ip
    }
    m.ip = ip
  }
  return m.ip
}

/** The helmet defaults, minus the ones that only matter to HTML pages we do not serve. */
const SECURITY_HEADERS: Record<string, string> = {
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
/**
 * The security headers as a ready-made Headers object: copying it is several times cheaper
 * than building a Response from a plain object of twenty entries, which was the largest
 * single cost of a small authenticated GET in the profile. Responses are built from a copy
 * (see `respond`), with the request's own headers (`set.headers`) added.
 */
const SECURITY_TEMPLATE = new Headers(SECURITY_HEADERS)

/**
 * The security headers and `fixed` as a template for `respond`, for answers whose other
 * headers repeat (a cached entry's ETag and type): each header a template carries is one
 * set less per response, and the sets are what a small response's headers cost.
 */
export function headerTemplate(fixed: Record<string, string>): Headers {
  return new Headers({ ...SECURITY_HEADERS, ...fixed })
}

/**
 * A Response with the security headers (or a `headerTemplate`), the request's own headers
 * and `status`.
 */
export function respond(body: ConstructorParameters<typeof Response>[0], status: number, own: Record<string, string>, template = SECURITY_TEMPLATE): Response {
  // Setting the request's own headers on the Response's copy of the template is a third
  // cheaper than filling a Headers copy first and handing that over (it is copied again).
  const res = new Response(body, { status, headers: template })
  const headers = res.headers
  for (const k in own) headers.set(k, own[k]!)
  return res
}

/** Add the security headers a handler's own Response lacks. */
function secure(res: Response): Response {
  for (const [k, v] of SECURITY_TEMPLATE) if (!res.headers.has(k)) res.headers.set(k, v)
  return res
}

/**
 * The Swagger UI's policy (src/http/docs.ts serves it from the installed package): nothing from
 * another host, no inline script. Inline styles stay allowed: Swagger UI sets style attributes.
 */
export const SWAGGER_CSP =
  "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

export const JSON_BODY_LIMIT = 1024 * 1024
const GZIP_MIN = 1024
/**
 * Bodies from this size on are gzipped on the thread pool instead of the event loop:
 * Bun.gzipSync takes about 20 µs a KiB of JSON at its level 6 here (170 ms for an 8 MB query
 * result), and every other request waited that long (issue 14, bench:abuse item 2: a user
 * fetching wide rows slowed another's `select 1` 2–3× at p99). Below it the synchronous call
 * costs less than the hand-off.
 */
const GZIP_OFF_LOOP_MIN = 64 * 1024

/**
 * The 413 of a JSON body past JSON_BODY_LIMIT, declared or read. It closes the connection:
 * otherwise the server reads (and drops) the rest of a body it has already refused, and the
 * client keeps sending it.
 */
function jsonBodyTooLarge(): AppError {
  return new AppError('payload_too_large', `The request body is larger than the JSON body limit of 1 MB (${JSON_BODY_LIMIT} bytes)`, {
    status: 413,
    details: [{ field: 'body', message: `Must be at most ${JSON_BODY_LIMIT} bytes` }],
    headers: { connection: 'close' },
  })
}

/** Does the request carry a body (declared length above 0, or a chunked one)? */
function hasBody(request: Request): boolean {
  const len = request.headers.get('content-length')
  return len !== null ? len !== '0' : request.headers.has('transfer-encoding')
}

export interface RequestFrameOptions {
  /** Paths (prefixes) whose bodies are uploads: exempt from the JSON size and type rules. */
  uploadPaths?: string[]
}

/**
 * What every response of this app carries and every request leaves behind, as functions the
 * Elysia hooks below and a route served ahead of Elysia (src/http/predict.ts) share.
 */
export interface Frame {
  /**
   * Start a request: its id (a valid X-Request-Id is kept), start time and socket. Returns
   * the headers its response carries besides the security headers (X-Request-Id, CORS), and
   * whether its Origin is allowed.
   */
  begin(request: Request, server: Server<unknown> | null): FrameStart
  /**
   * A finished request: its duration by route and status, the log line at info, and its audit
   * event when it may have changed something (once). `value`: what the handler answered.
   */
  finish(request: Request, route: string, status: number, value?: unknown): void
  /**
   * `begin` without remembering the request's meta (a WeakMap entry per request, which a
   * hot route served ahead of the pipeline measurably pays under load): the route keeps it
   * and hands it to `close`, the `finish` of such a request.
   */
  open(request: Request, server: Server<unknown> | null): FrameStart
  close(request: Request, meta: RequestMeta, route: string, status: number): void
  /** The request's meta (its id, start, socket), made on first use outside the pipeline. */
  meta(request: Request): RequestMeta
  /**
   * The client's IP: the socket's peer, or the first X-Forwarded-For hop when this app's
   * TRUST_PROXY is set (each app decides for itself: one server behind a proxy does not make
   * another trust a spoofable header).
   */
  clientIp(request: Request): string
}

/**
 * Told when a request that may change something (not GET, HEAD or OPTIONS) starts, and when
 * it ends with its status: the audit trail (./audit.ts).
 */
export interface FrameObserver {
  /** Its audit scope (undefined: not audited), handed back to `finished`. */
  started(request: Request, requestId: string, ip: string): AuditScope | undefined
  finished(request: Request, scope: AuditScope, route: string, status: number, value: unknown): void
}

interface FrameStart {
  meta: RequestMeta
  headers: Record<string, string>
  cors: boolean
}

/** The frame of one app (src/server.ts builds one per server and hands it to every route module). */
export function createFrame(deps: { config: Pick<Config, 'corsOrigins' | 'trustProxy'>; logger: Logger; metrics: Metrics; audit?: FrameObserver }): Frame {
  const { config, logger, metrics, audit } = deps
  const origins = new Set(config.corsOrigins)
  const anyOrigin = origins.has('*')
  const trustProxy = config.trustProxy
  const open = (request: Request, server: Server<unknown> | null): FrameStart => {
    const given = request.headers.get('x-request-id')
    const meta: RequestMeta = { id: given && REQUEST_ID.test(given) ? given : nextRequestId(), start: performance.now(), ip: undefined, server }
    const headers: Record<string, string> = { 'x-request-id': meta.id }
    const origin = request.headers.get('origin')
    const cors = !!origin && (anyOrigin || origins.has(origin))
    if (cors) {
      headers['access-control-allow-origin'] = origin!
      headers['access-control-allow-credentials'] = 'true'
      headers['access-control-expose-headers'] = 'X-Request-Id, ETag, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset'
      headers.vary = 'Origin'
    }
    return { meta, headers, cors }
  }
  const close = (request: Request, meta: RequestMeta, route: string, status: number, value?: unknown) => {
    if (meta.done) return
    meta.done = true
    if (meta.audit) audit!.finished(request, meta.audit, route, status, value)
    const seconds = (performance.now() - meta.start) / 1000
    const method = request.method
    metrics.httpDuration.observeRequest(method, route, status, seconds)
    if (logger.isLevelEnabled('info')) {
      logger.info({ reqId: meta.id, method, route, status, ms: Math.round(seconds * 1e5) / 100, ip: ipOf(meta, request, trustProxy) }, 'request')
    }
  }
  return {
    open,
    close,
    begin(request, server) {
      const started = open(request, server)
      const meta = started.meta
      metas.set(request, meta)
      // Only what may change something is audited: never a read (nor a CORS preflight).
      const method = request.method
      if (audit && method !== 'GET' && method !== 'HEAD' && method !== 'OPTIONS') meta.audit = audit.started(request, meta.id, ipOf(meta, request, trustProxy))
      return started
    },
    finish(request, route, status, value) {
      const meta = metas.get(request)
      if (meta) close(request, meta, route, status, value)
    },
    meta: metaOf,
    clientIp: (request) => ipOf(metaOf(request), request, trustProxy),
  }
}

/** A JSON body's Content-Type (parameters such as charset allowed). */
export function isJsonType(type: string | null): boolean {
  return type !== null && type.toLowerCase().startsWith('application/json')
}

export function requestFrame(frame: Frame, opts: RequestFrameOptions = {}) {
  const uploadPaths = opts.uploadPaths ?? []

  return (app: Elysia) =>
    app
      .onRequest(({ request, set, server }) => {
        const { headers, cors } = frame.begin(request, server as Server<unknown> | null)
        const h = set.headers as Record<string, string>
        Object.assign(h, headers)
        const url = request.url
        const pathStart = url.indexOf('/', 8)
        // Everything under /swagger (the UI served by src/http/docs.ts, the document) carries
        // the security headers with the UI's own CSP.
        if (url.startsWith('/swagger', pathStart)) Object.assign(h, SECURITY_HEADERS, { 'content-security-policy': SWAGGER_CSP })

        if (request.method === 'OPTIONS' && request.headers.has('access-control-request-method')) {
          if (!cors) {
            frame.finish(request, 'preflight', 403)
            return respond(null, 403, h)
          }
          h['access-control-allow-methods'] = 'GET, POST, PUT, PATCH, DELETE, OPTIONS'
          h['access-control-allow-headers'] = request.headers.get('access-control-request-headers') ?? 'Authorization, Content-Type'
          h['access-control-max-age'] = '600'
          frame.finish(request, 'preflight', 204)
          return respond(null, 204, h)
        }

        // Every body is bounded here or by its route, in the envelope: Bun's own cap
        // (maxRequestBodySize) is raised out of the way in src/server.ts because it answers a
        // bare 413 before the app sees the request. Uploads check their declared length
        // against MAX_FILE_SIZE themselves; every other body is JSON of at most JSON_BODY_LIMIT.
        const method = request.method
        if (method === 'GET' || method === 'HEAD') return
        if (uploadPaths.some((p) => url.startsWith(p, pathStart))) return
        const len = Number(request.headers.get('content-length') ?? 0)
        if (len > JSON_BODY_LIMIT) throw jsonBodyTooLarge()
        const type = request.headers.get('content-type')
        // POST, PUT and PATCH take JSON; any other method (DELETE…) may carry none but, when
        // it does, JSON too: Elysia's fallback parsers would read a text or form body whole.
        const bodied = method === 'POST' || method === 'PUT' || method === 'PATCH' || hasBody(request)
        if (bodied && type && !isJsonType(type)) {
          throw new AppError('unsupported_media_type', 'Content-Type must be application/json', { status: 415 })
        }
      })
      .onParse({ as: 'global' }, async ({ request, contentType }) => {
        // JSON bodies are read with a byte limit, so a chunked body without Content-Length
        // cannot grow past it either (uploads have their own streaming parser).
        if (!contentType.startsWith('application/json') || !request.body) return
        // With a Content-Length within the limit the body is exactly that long (HTTP framing):
        // read it whole, natively. Pulling it through a stream reader chunk by chunk cost a
        // small POST a third of its throughput (bench/models.ts, single-record predict).
        const declared = request.headers.get('content-length')
        const text = declared !== null && Number(declared) <= JSON_BODY_LIMIT ? await request.text() : await readLimited(request.body)
        if (text === '') return undefined
        return parseJsonBody(text)
      })
      .mapResponse({ as: 'global' }, ({ request, responseValue, set, route }) => {
        // Each request is recorded here or in the error handler (src/http/plugins/errors.ts),
        // as its response is made: an afterResponse hook costs every request a setImmediate
        // and a closure.
        if (responseValue instanceof Response) {
          frame.finish(request, route || 'unmatched', responseValue.status)
          return secure(responseValue)
        }
        let body: EncodedBody
        const h = set.headers as Record<string, string>
        if (typeof responseValue === 'string' || responseValue instanceof Uint8Array) {
          // JSON a handler serialised itself, as text or bytes (a query's rows), and said so: gzipped like any other.
          body = h['content-type'] === 'application/json' ? encodeBody(request, responseValue, h) : responseValue
        } else if (responseValue instanceof ReadableStream) body = responseValue
        else if (responseValue !== null && typeof responseValue === 'object') {
          h['content-type'] = 'application/json'
          body = encodeBody(request, JSON.stringify(responseValue), h)
        } else {
          // Nothing to encode (no body): Elysia answers it as it is.
          frame.finish(request, route || 'unmatched', typeof set.status === 'number' ? set.status : 200)
          return
        }
        h['content-type'] ??= 'text/plain; charset=utf-8'
        const status = typeof set.status === 'number' ? set.status : 200
        // Build the Response here, from the template, and hand Elysia nothing left to merge:
        // with empty set.headers and status 200 it passes the Response through untouched.
        const res = respond(body, status, h)
        set.headers = {}
        frame.finish(request, route || 'unmatched', status, responseValue)
        return res
      })
}

/** A JSON request body, or the 400 every route answers for one that is not JSON. */
export function parseJsonBody(text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    throw new AppError('malformed_body', 'Malformed request body', { status: 400, details: [{ field: 'body', message: 'Body could not be parsed as JSON' }] })
  }
}

async function readLimited(body: ReadableStream<Uint8Array>, limit = JSON_BODY_LIMIT): Promise<string> {
  const reader = body.getReader()
  const chunks: Uint8Array[] = []
  let size = 0
  for (;;) {
    const { done, value } = await reader.read()
    if (done) break
    size += value.byteLength
    if (size > limit) {
      await reader.cancel()
      throw jsonBodyTooLarge()
    }
    chunks.push(value)
  }
  return Buffer.concat(chunks).toString('utf8')
}

/**
 * `body` (text, or its UTF-8 bytes), gzipped when it is large enough and the client accepts
 * gzip (headers updated to match).
 */
export function encodeBody(request: Request, body: string | Uint8Array, headers: Record<string, string>): EncodedBody {
  if (body.length >= GZIP_MIN && /\bgzip\b/.test(request.headers.get('accept-encoding') ?? '')) {
    headers['content-encoding'] = 'gzip'
    headers.vary = headers.vary ? `${headers.vary}, Accept-Encoding` : 'Accept-Encoding'
    return body.length >= GZIP_OFF_LOOP_MIN ? gzipOffLoop(body) : Bun.gzipSync(body as string | Uint8Array<ArrayBuffer>)
  }
  return body
}

/** A response body as encodeBody makes it: a large gzipped one is a stream, its bytes still being compressed. */
export type EncodedBody = string | Uint8Array | ReadableStream<Uint8Array>

/** `body` gzipped on the thread pool (node:zlib), as a stream of one chunk (sent chunked). */
function gzipOffLoop(body: string | Uint8Array): ReadableStream<Uint8Array> {
  // Text is encoded here, on the event loop (~5 ms for 8 MB): large answers come as bytes.
  const input = typeof body === 'string' ? Buffer.from(body) : body
  return new ReadableStream<Uint8Array>({
    start(controller) {
      gzip(input, (err, out) => {
        if (err) return controller.error(err)
        controller.enqueue(new Uint8Array(out.buffer, out.byteOffset, out.byteLength))
        controller.close()
      })
    },
  })
}

/** A complete Response (for paths that must build one, e.g. error handlers). */
export function encode(request: Request, body: string, status: number | undefined, headers: Record<string, string>): Response {
  return respond(encodeBody(request, body, headers), status ?? 200, headers)
}
