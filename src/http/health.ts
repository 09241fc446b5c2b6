/** GET /health in the guide's shape, and GET /metrics for Prometheus. */
import { timingSafeEqual } from 'node:crypto'
import { Elysia, t } from 'elysia'
import { AppError } from '../core/errors.ts'
import type { HttpDeps } from './context.ts'

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

/** The same shape whether healthy (200) or not (503). */
const healthSchema = t.Object(
  {
    status: t.Union([t.Literal('healthy'), t.Literal('unhealthy')]),
    timestamp: t.String(),
    uptimeSeconds: t.Number(),
    services: t.Record(t.String(), serviceSchema),
  },
  { title: 'Health' },
)

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

export function healthRoutes(deps: HttpDeps, probes: readonly HealthProbe[]) {
  const gate = metricsGate(deps.config.metricsToken)
  return new Elysia()
    .get(
      '/health',
      async ({ set }) => {
        const results = await Promise.all(probes.map(async (p) => [p.name, await probe(p.check)] as const))
        const services = Object.fromEntries(results)
        const healthy = results.every(([, r]) => r.status !== 'unhealthy')
        set.status = healthy ? 200 : 503
        set.headers['cache-control'] = 'no-store'
        return { status: healthy ? 'healthy' : 'unhealthy', timestamp: new Date().toISOString(), uptimeSeconds: Math.round(process.uptime()), services }
      },
      {
        response: { 200: healthSchema, 503: healthSchema },
        detail: { summary: 'Health of the server and the services it depends on', tags: ['System'] },
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
          description: 'Open unless METRICS_TOKEN is set; then `Authorization: Bearer <METRICS_TOKEN>` is required (401 otherwise).',
          tags: ['System'],
        },
      },
    )
}
