/** GET /health in the guide's shape, and GET /metrics for Prometheus. */
import { Elysia, t } from 'elysia'
import type { AppDeps } from './context.ts'

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

export function healthRoutes(deps: AppDeps) {
  return new Elysia()
    .get(
      '/health',
      async ({ set }) => {
        const results = await Promise.all(deps.probes.map(async (p) => [p.name, await probe(p.check)] as const))
        const services = Object.fromEntries(results)
        const healthy = results.every(([, r]) => r.status !== 'unhealthy')
        set.status = healthy ? 200 : 503
        set.headers['cache-control'] = 'no-store'
        return { status: healthy ? 'healthy' : 'unhealthy', timestamp: new Date().toISOString(), uptimeSeconds: Math.round(process.uptime()), services }
      },
      {
        response: { 200: t.Object({ status: t.String(), timestamp: t.String(), uptimeSeconds: t.Number(), services: t.Record(t.String(), serviceSchema) }), 503: t.Any() },
        detail: { summary: 'Health of the server and the services it depends on', tags: ['System'] },
      },
    )
    .get(
      '/metrics',
      async ({ set }) => {
        deps.cache.flushMetrics()
        set.headers['content-type'] = deps.metrics.registry.contentType
        return new Response(await deps.metrics.registry.metrics(), { headers: set.headers as Record<string, string> })
      },
      { detail: { summary: 'Prometheus metrics', tags: ['System'] } },
    )
}
