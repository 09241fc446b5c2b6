import { Counter, Histogram, Registry, collectDefaultMetrics, Gauge } from 'prom-client'

interface Series {
  labels: Record<string, string>
  buckets: Float64Array // non-cumulative counts per upper bound
  sum: number
  count: number
}

/**
 * A histogram for the hottest paths (one observation per HTTP request, per actor turn).
 * prom-client hashes the label object on every observe (about a tenth of a request's CPU in
 * our profile); here the caller names the series with a string key it already has, and the
 * work per observation is one Map lookup and a bucket scan. It registers on a prom-client
 * Registry like any metric.
 */
export class FastHistogram {
  private readonly series = new Map<string, Series>()
  private readonly index = new Map<string, Map<string, Map<number, Series>>>()
  readonly type = 'histogram'
  readonly aggregator = 'sum'

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly string[],
    private readonly bounds: readonly number[],
    registry: Registry,
  ) {
    registry.registerMetric(this as never)
  }

  /** `key` must identify `labelValues` (e.g. their join); values are given in labelNames order. */
  observe(key: string, labelValues: readonly string[], value: number): void {
    this.count(this.series.get(key) ?? this.add(key, labelValues), value)
  }

  /**
   * The same for a histogram labelled (method, route, status), without building a key: the
   * series is found through maps keyed by the values themselves, strings a request already
   * has (route templates are literals, methods interned) and the status number, so nothing
   * is allocated once the series exists (a per-request key cost about a microsecond under
   * load, bench/models.ts).
   */
  observeRequest(method: string, route: string, status: number, value: number): void {
    let s = this.index.get(method)?.get(route)?.get(status)
    if (!s) {
      const st = String(status)
      // One series per route whichever way it was spelt: Elysia labels a prefix's root route
      // `/api/users/`, a route served ahead of it `/api/users`.
      const label = route.length > 1 && route.endsWith('/') ? route.slice(0, -1) : route
      const key = `${method} ${label} ${st}`
      s = this.series.get(key) ?? this.add(key, [method, label, st])
      let byMethod = this.index.get(method)
      if (!byMethod) this.index.set(method, (byMethod = new Map()))
      let byRoute = byMethod.get(route)
      if (!byRoute) byMethod.set(route, (byRoute = new Map()))
      byRoute.set(status, s)
    }
    this.count(s, value)
  }

  private add(key: string, labelValues: readonly string[]): Series {
    const labels: Record<string, string> = {}
    this.labelNames.forEach((n, i) => (labels[n] = labelValues[i] ?? ''))
    const s: Series = { labels, buckets: new Float64Array(this.bounds.length), sum: 0, count: 0 }
    this.series.set(key, s)
    return s
  }

  private count(s: Series, value: number): void {
    s.sum += value
    s.count++
    const b = this.bounds
    for (let i = 0; i < b.length; i++) {
      if (value <= b[i]!) {
        s.buckets[i]!++
        break
      }
    }
  }

  /** The shape prom-client's Registry serialises. */
  get() {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = []
    for (const s of this.series.values()) {
      let acc = 0
      this.bounds.forEach((le, i) => {
        acc += s.buckets[i]!
        values.push({ labels: { ...s.labels, le }, value: acc, metricName: `${this.name}_bucket` })
      })
      values.push({ labels: { ...s.labels, le: '+Inf' }, value: s.count, metricName: `${this.name}_bucket` })
      values.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` })
      values.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` })
    }
    return { name: this.name, help: this.help, type: this.type, values, aggregator: this.aggregator }
  }

  reset() {
    this.series.clear()
    this.index.clear()
  }
}

/**
 * One Prometheus registry per server instance (tests build several apps in one process,
 * so nothing is registered globally). Features add their own metrics to `registry`.
 */
export class Metrics {
  readonly registry = new Registry()
  readonly httpDuration = new FastHistogram(
    'http_request_duration_seconds',
    'HTTP request duration by route and status',
    ['method', 'route', 'status'],
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    this.registry,
  )
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

  /**
   * A counter or gauge whose value is read when /metrics is scraped, from a number its owner
   * keeps: the path that counts (a WebSocket frame, a pool acquisition) pays one integer add,
   * not prom-client's label hashing. `read` answers one value, or with `label` one value per
   * label value (a fixed, small set). Registered once per registry: a second owner on the same
   * registry is not read (one hub and one pool per server).
   */
  sampled(type: 'counter' | 'gauge', name: string, help: string, read: () => number): void
  sampled(type: 'counter' | 'gauge', name: string, help: string, read: () => Record<string, number>, label: string): void
  sampled(type: 'counter' | 'gauge', name: string, help: string, read: () => number | Record<string, number>, label?: string): void {
    if (this.registry.getSingleMetric(name)) return
    const fill = (reset: () => void, put: (labels: Record<string, string>, n: number) => void) => {
      reset()
      const v = read()
      if (typeof v === 'number') put({}, v)
      else for (const [k, n] of Object.entries(v)) put({ [label!]: k }, n)
    }
    const labelNames = label ? [label] : []
    if (type === 'gauge') {
      new Gauge({ name, help, labelNames, registers: [this.registry], collect() { fill(() => this.reset(), (l, n) => this.set(l, n)) } })
    } else {
      new Counter({ name, help, labelNames, registers: [this.registry], collect() { fill(() => this.reset(), (l, n) => this.inc(l, n)) } })
    }
  }
}
