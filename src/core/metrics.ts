import { Counter, Histogram, Registry, collectDefaultMetrics, Gauge } from 'prom-client'

/**
 * One Prometheus registry per server instance (tests build several apps in one process,
 * so nothing is registered globally). Features add their own metrics to `registry`.
 */
export class Metrics {
  readonly registry = new Registry()
  readonly httpDuration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP request duration by route and status',
    labelNames: ['method', 'route', 'status'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [this.registry],
  })
  readonly dbDuration = new Histogram({
    name: 'db_query_duration_seconds',
    help: 'PostgreSQL query duration',
    labelNames: ['query'] as const,
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    registers: [this.registry],
  })
  readonly cacheRequests = new Counter({
    name: 'http_cache_requests_total',
    help: 'Response cache lookups by result (hit, miss, not_modified)',
    labelNames: ['route', 'result'] as const,
    registers: [this.registry],
  })
  readonly rateLimited = new Counter({
    name: 'http_rate_limited_total',
    help: 'Requests refused by a rate limit',
    labelNames: ['limit'] as const,
    registers: [this.registry],
  })

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics !== false) collectDefaultMetrics({ register: this.registry })
  }

  gauge(name: string, help: string, labelNames: string[] = []): Gauge<string> {
    const existing = this.registry.getSingleMetric(name)
    if (existing) return existing as Gauge<string>
    return new Gauge({ name, help, labelNames, registers: [this.registry] })
  }
  counter(name: string, help: string, labelNames: string[] = []): Counter<string> {
    const existing = this.registry.getSingleMetric(name)
    if (existing) return existing as Counter<string>
    return new Counter({ name, help, labelNames, registers: [this.registry] })
  }
  histogram(name: string, help: string, labelNames: string[] = [], buckets?: number[]): Histogram<string> {
    const existing = this.registry.getSingleMetric(name)
    if (existing) return existing as Histogram<string>
    return new Histogram({ name, help, labelNames, registers: [this.registry], ...(buckets ? { buckets } : {}) })
  }
}
