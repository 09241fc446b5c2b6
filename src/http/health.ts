/**
 * GET /health (readiness) in the guide's shape, GET /health/live (liveness), and GET /metrics
 * for Prometheus.
 */
import { timingSafeEqual } from 'node:crypto'
import { Elysia, t } from 'elysia'
import { AppError } from '../core/errors.ts'
import type { HttpDeps } from './context.ts'
import { access } from '../auth/route-access.ts'

type Status = 'healthy' | 'unhealthy' | 'disabled'

const PROBE_TIMEOUT_MS = 2_000

async function probe(check: (() => Promise<void>) | undefined): Promise<{ status: Status; latencyMs?: number; error?: string }> {
  if (!check) return { status: 'disabled' }
  const start = performance.now()
  let timer: Timer | undefined
  try {
    await Promise.race([
      check(),
      new Promise((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${PROBE_TIMEOUT_MS} ms`)), PROBE_TIMEOUT_MS)
      }),
    ])
    return { status: 'healthy', latencyMs: Math.round((performance.now() - start) * 100) / 100 }
  } catch (err) {
    return { status: 'unhealthy', error: err instanceof Error ? err.message : String(err) }
  } finally {
    clearTimeout(timer)
  }
}

const serviceSchema = t.Object({ status: t.Union([t.Literal('healthy'), t.Literal('unhealthy'), t.Literal('disabled')]), latencyMs: t.Optional(t.Number()), error: t.Optional(t.String()) })

const healthFields = {
  status: t.Union([t.Literal('healthy'), t.Literal('unhealthy'), t.Literal('draining')], {
    description: '`draining`: the server is stopping (SIGTERM) and finishes what it has; send new requests to another node',
  }),
  timestamp: t.String({ description: 'ISO time of the report' }),
  uptimeSeconds: t.Number({ description: 'Seconds since this server process started' }),
  services: t.Record(t.String(), serviceSchema, { description: 'Per service: database, redis, docker, ai' }),
}
const healthy = {
  status: 'healthy',
  timestamp: '2026-12-04T10:15:00.000Z',
  uptimeSeconds: 86400,
  services: { database: { status: 'healthy', latencyMs: 0.84 }, redis: { status: 'healthy', latencyMs: 0.31 }, docker: { status: 'healthy', latencyMs: 2.47 }, ai: { status: 'disabled' } },
}
/** The same shape whether healthy (200) or not (503). */
const healthSchema = t.Object(healthFields, { title: 'Health', examples: [healthy] })
const unhealthySchema = t.Object(healthFields, {
  title: 'Health',
  description:
    'Not ready: a configured service does not answer (`status: "unhealthy"`), or the server is stopping (`status: "draining"`, answered at once, without probes). ' +
    'The body is the health report, as for 200 (not the error envelope)',
  examples: [{ ...healthy, status: 'unhealthy', services: { ...healthy.services, docker: { status: 'unhealthy', error: 'no answer within 2000 ms' } } }],
})

/** A few lines of what /metrics answers, for the OpenAPI document. */
const METRICS_EXAMPLE = [
  '# HELP http_request_duration_seconds HTTP request duration by route and status',
  '# TYPE http_request_duration_seconds histogram',
  'http_request_duration_seconds_bucket{le="0.005",method="GET",route="/api/auth/me",status="200"} 1523',
  'http_request_duration_seconds_sum{method="GET",route="/api/auth/me",status="200"} 2.91',
  'http_request_duration_seconds_count{method="GET",route="/api/auth/me",status="200"} 1530',
  '# HELP http_rate_limited_total Requests refused by a rate limit',
  '# TYPE http_rate_limited_total counter',
  'http_rate_limited_total{limit="auth_login"} 3',
  '',
].join('\n')

const sha256 = (s: string) => new Bun.CryptoHasher('sha256').update(s).digest()

/**
 * With METRICS_TOKEN set, /metrics wants `Authorization: Bearer <token>` (Prometheus:
 * `authorization: { credentials: … }`). Digests are compared, in constant time, so neither
 * the token's bytes nor its length leak through timing.
 */
function metricsGate(token: string | undefined): (request: Request) => void {
  if (token === undefined) return () => {}
  const expected = sha256(token)
  return (request) => {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(request.headers.get('authorization') ?? '')
    if (!m || !timingSafeEqual(sha256(m[1]!), expected)) {
      throw new AppError('unauthorized', '/metrics needs the METRICS_TOKEN as a Bearer token', { status: 401, headers: { 'www-authenticate': 'Bearer realm="metrics"' } })
    }
  }
}

/** A dependency /health reports: undefined `check` means not configured ("disabled"). */
export interface HealthProbe {
  name: string
  check: (() => Promise<void>) | undefined
}

export function healthRoutes(deps: HttpDeps, probes: readonly HealthProbe[], draining: () => boolean = () => false) {
  const gate = metricsGate(deps.config.metricsToken)
  return new Elysia()
    .get(
      '/health',
      async ({ set }) => {
        set.headers['cache-control'] = 'no-store'
        if (draining()) {
          set.status = 503
          return { status: 'draining' as const, timestamp: new Date().toISOString(), uptimeSeconds: Math.round(process.uptime()), services: {} }
        }
        const results = await Promise.all(probes.map(async (p) => [p.name, await probe(p.check)] as const))
        const services = Object.fromEntries(results)
        const healthy = results.every(([, r]) => r.status !== 'unhealthy')
        set.status = healthy ? 200 : 503
        set.headers['cache-control'] = 'no-store'
        return { status: healthy ? 'healthy' : 'unhealthy', timestamp: new Date().toISOString(), uptimeSeconds: Math.round(process.uptime()), services }
      },
      {
        response: { 200: healthSchema, 503: unhealthySchema },
        detail: {
          summary: 'Readiness: the server and the services it depends on',
          description:
            'For load balancers: whether to send this node requests. ' +
            'Probes each service the server depends on — `database`, `redis`, `docker` and `ai` (the assistant\'s tables; the provider is not called) — each within 2 s, ' +
            'and reports it `healthy` (with its `latencyMs`), `unhealthy` (with the `error`) or `disabled` (not configured). ' +
            '200 when none is unhealthy; 503 when a configured one is, with the same report as the body (`status: "unhealthy"`), not the error envelope. ' +
            'From the moment the server is told to stop (SIGTERM), 503 with `status: "draining"` at once, while it goes on serving for `SHUTDOWN_DRAIN_DELAY_MS` and finishes the requests it has. ' +
            'Never cached (`Cache-Control: no-store`). Liveness (whether to restart the process) is `/health/live`.',
          tags: ['System'],
          ...access.public,
        },
      },
    )
    .get(
      '/health/live',
      ({ set }) => {
        set.headers['cache-control'] = 'no-store'
        return { status: 'alive' as const, uptimeSeconds: Math.round(process.uptime()) }
      },
      {
        response: { 200: t.Object({ status: t.Literal('alive'), uptimeSeconds: t.Number() }, { title: 'Liveness', examples: [{ status: 'alive', uptimeSeconds: 86400 }] }) },
        detail: {
          summary: 'Liveness: the process answers',
          description:
            'For a supervisor deciding whether to restart the process: 200 as long as the server\'s event loop answers, whatever its dependencies do and while it drains. ' +
            'It probes nothing: a database outage makes `/health` (readiness) 503, and a restart would not cure it.',
          tags: ['System'],
          ...access.public,
        },
      },
    )
    .get(
      '/metrics',
      async ({ request, set }) => {
        gate(request)
        deps.cache.flushMetrics()
        set.headers['content-type'] = deps.metrics.registry.contentType
        return new Response(await deps.metrics.registry.metrics(), { headers: set.headers as Record<string, string> })
      },
      {
        detail: {
          summary: 'Prometheus metrics',
          description:
            'The server\'s metrics in the Prometheus text format: request durations by method, route and status, database query durations by table-module function ' +
            '(`db_query_duration_seconds{query="users.findById"}`), response-cache lookups, rate-limit refusals (`http_rate_limited_total{limit}`), the features\' own metrics ' +
            '(actors, dropped container output, the AI assistant) and process metrics. ' +
            'Open unless `METRICS_TOKEN` is set; then only `Authorization: Bearer <METRICS_TOKEN>` opens it (401 otherwise, whatever user token is sent) — without a token, keep it on a private network.',
          tags: ['System'],
          ...access.public,
          responses: {
            200: { description: 'The metrics, in the Prometheus text exposition format (version 0.0.4)', content: { 'text/plain': { schema: { type: 'string' }, example: METRICS_EXAMPLE } } },
            401: { description: '`METRICS_TOKEN` is set and the request does not send it as a Bearer token' },
          },
        },
      },
    )
}
